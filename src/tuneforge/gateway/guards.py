"""A route's safety guards (`serve.safety`) applied by the gateway: on the request before it goes upstream,
and on the answer — streamed ones event by event, so that no guard is skipped on a stream.

Input: `check_input` runs in a worker thread (the classifier takes milliseconds); a blocked request is a
400 `content_blocked` naming the guards, and never reaches an engine. The redacted messages go upstream.
Output: one `OutputGuard` per choice rewrites the text of each event (PII redacted or re-identified, code
held until scanned); a guard that blocks cuts the stream with a final error event (a JSON answer is
refused with the same error). Cached answers pass through the same guards on their way out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from tuneforge.core.safety_config import SafetyConfig
from tuneforge.gateway.errors import GatewayError


def _in_scope(tenant: str, fn: Any, *args: Any) -> Any:
    """`fn(*args)` with the injection classifier remembering verdicts for `tenant` only (in the worker thread)."""
    from tuneforge.serve.safety.classifier import memo_scope

    memo_scope.set(tenant)
    return fn(*args)


class Guards:
    """The guards of one request: its input check and one output guard per choice."""

    def __init__(self, cfg: SafetyConfig, chat: bool, tenant: str = "") -> None:
        self.cfg, self.chat, self.tenant = cfg, chat, tenant
        self.placeholders: dict[str, str] = {}
        self.outputs: dict[int, Any] = {}
        self.input_verdict: Any = None
        self.rule_answer: str | None = None  # a grounded rule's reply, given instead of the model's

    async def check_request(self, body: dict[str, Any]) -> None:
        """Guard the request in place (redacted messages / prompt), or raise 400 when a guard blocks it."""
        from tuneforge.serve.safety import check_input

        if self.chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return  # the upstream's 400 to give
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return
            messages = [{"role": "user", "content": prompt}]
        check = await asyncio.to_thread(_in_scope, self.tenant, check_input, messages, self.cfg)
        self.input_verdict, self.placeholders, self.rule_answer = check.verdict, check.placeholders, check.answer
        if check.verdict.blocked:
            raise GatewayError(400, "the request was blocked by this route's safety guards: "
                               + "; ".join(check.verdict.reasons), "content_blocked", param="messages")
        if self.chat:
            body["messages"] = check.messages
        else:
            body["prompt"] = check.messages[0]["content"]

    def _guard(self, index: int) -> Any:
        from tuneforge.serve.safety import OutputGuard

        if index not in self.outputs:
            self.outputs[index] = OutputGuard(self.cfg, self.placeholders)
        return self.outputs[index]

    @property
    def blocked(self) -> bool:
        return any(g.verdict.blocked for g in self.outputs.values())

    def reasons(self) -> list[str]:
        return [r for g in self.outputs.values() for r in g.verdict.reasons]

    def verdict(self) -> Any:
        """The request's and every answer's findings together (what the review rule judges)."""
        from tuneforge.serve.safety import Verdict

        merged = self.input_verdict or Verdict()
        for guard in self.outputs.values():
            merged = merged.merged(guard.verdict)
        return merged

    def rewrite_choice(self, choice: dict[str, Any], final: bool) -> None:
        """Pass a choice's text (a stream delta or a whole message) through its guard, in place."""
        guard = self._guard(int(choice.get("index") or 0))
        if self.chat:
            holder = choice.get("delta") if "delta" in choice else choice.get("message")
            if not isinstance(holder, dict):
                return
            text = holder.get("content") or ""
            out = guard.feed(text) if text else ""
            if final:
                out += guard.finish()
            if text or out:
                holder["content"] = out
        else:
            text = choice.get("text") or ""
            out = guard.feed(text) if text else ""
            choice["text"] = out + (guard.finish() if final else "")

    def event(self, data: dict[str, Any]) -> bytes:
        """A streamed chunk with its text guarded; the last chunk of a choice releases what its guard held."""
        for choice in data.get("choices") or []:
            self.rewrite_choice(choice, final=choice.get("finish_reason") is not None)
        return b"data: " + json.dumps(data, ensure_ascii=False).encode()

    def answer(self, content: bytes) -> bytes:
        """A whole JSON answer with its text guarded, or 400 when a guard blocks it."""
        try:
            data = json.loads(content)
        except ValueError:
            return content
        for choice in data.get("choices") or []:
            self.rewrite_choice(choice, final=True)
        if self.blocked:
            raise GatewayError(400, "the answer was blocked by this route's safety guards: "
                               + "; ".join(self.reasons()), "content_blocked", param="messages")
        return json.dumps(data, ensure_ascii=False).encode()


def rule_reply(text: str, body: dict[str, Any], n: int, chat: bool, model: str, headers: dict[str, str]) -> Any:
    """A grounded rule's reply in the shape the caller asked for (`n` choices; a completion, or its stream),
    with no tokens used: the model was not asked."""
    from fastapi.responses import JSONResponse

    from tuneforge.gateway.hotpath import EventStream

    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid4().hex}"
    created, usage = int(time.time()), {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not body.get("stream"):
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                   if chat else {"index": i, "text": text, "finish_reason": "stop"} for i in range(n)]
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": model, "choices": choices, "usage": usage},
                            headers=headers)
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data = {"id": rid, "object": kind, "created": created, "model": model, "choices": choices, **extra}
        return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            part = {"role": "assistant", "content": text} if chat else None
            yield event([{"index": i, "delta": part, "finish_reason": None} if chat
                         else {"index": i, "text": text, "finish_reason": None}])
            yield event([{"index": i, "delta": {}, "finish_reason": "stop"} if chat
                         else {"index": i, "text": "", "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    return EventStream(events(), headers)
