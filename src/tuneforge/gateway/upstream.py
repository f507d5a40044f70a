"""Talking to a replica: one JSON answer, or an SSE stream forwarded event by event without buffering.

While a stream passes through, each event is looked at (not changed): its id, the text it carries and,
at the end, the usage the gateway asked for (`stream_options.include_usage` is always set upstream so
that budgets count the real tokens; the usage event is dropped again when the client did not ask for it).
A stream that goes past its token reservation is cut with a final error event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tuneforge.serve.api.wire import error_body

RETRYABLE = (429, 500, 502, 503, 504)  # answers that another replica may not give
DONE = b"data: [DONE]"


class UpstreamFailed(Exception):
    """The replica did not give an answer (no byte of it reached the client): retry elsewhere."""

    def __init__(self, why: str, status: int | None = None, body: bytes = b"", eject: bool = True) -> None:
        super().__init__(why)
        self.why, self.status, self.body, self.eject = why, status, body, eject


@dataclass
class Usage:
    prompt: int = 0
    completion: int = 0
    counted: int = 0  # content-bearing events seen: the completion tokens when the upstream sends no usage

    @property
    def total(self) -> int:
        return self.prompt + (self.completion or self.counted)


@dataclass
class Outcome:
    """What the gateway learned from an answer, for limits, cache, metrics and the request log."""

    status: int = 200
    usage: Usage = field(default_factory=Usage)
    response_id: str | None = None
    ttft: float | None = None
    complete: bool = False
    cut: bool = False


def headers_for(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def call_json(client: httpx.AsyncClient, url: str, body: dict, api_key: str | None,
                    outcome: Outcome) -> httpx.Response:
    """POST a non-streamed request; 5xx / 429 / a broken connection raise UpstreamFailed (retryable)."""
    started = time.perf_counter()
    try:
        reply = await client.post(url, json=body, headers=headers_for(api_key))
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"{type(exc).__name__}: {exc}") from None
    outcome.ttft = time.perf_counter() - started
    outcome.status = reply.status_code
    if reply.status_code in RETRYABLE:
        raise UpstreamFailed(f"answered {reply.status_code}", reply.status_code, reply.content,
                             eject=reply.status_code != 429)
    if reply.status_code == 200:
        try:
            data = reply.json()
            usage = data.get("usage") or {}
            outcome.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            outcome.response_id = data.get("id")
            outcome.complete = True
        except (ValueError, AttributeError, TypeError):
            pass
    return reply


async def open_stream(client: httpx.AsyncClient, url: str, body: dict, api_key: str | None,
                      outcome: Outcome) -> httpx.Response:
    """Open a streamed request; a failure before the answer starts raises UpstreamFailed (retryable)."""
    started = time.perf_counter()
    request = client.build_request("POST", url, json=body, headers=headers_for(api_key))
    try:
        reply = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"{type(exc).__name__}: {exc}") from None
    outcome.ttft = time.perf_counter() - started
    outcome.status = reply.status_code
    if reply.status_code != 200:
        content = await reply.aread()
        await reply.aclose()
        if reply.status_code in RETRYABLE:
            raise UpstreamFailed(f"answered {reply.status_code}", reply.status_code, content,
                                 eject=reply.status_code != 429)
        outcome.complete = True
    return reply


def error_event(message: str, code: str, type_: str = "server_error") -> bytes:
    return f"data: {json.dumps(error_body(message, type_, code=code))}\n\n".encode()


class StreamWatch:
    """Looks at each SSE event going by: id, content tokens, usage; decides what the client gets (the
    route's guards rewrite the text when it has any)."""

    def __init__(self, outcome: Outcome, client_wants_usage: bool, cap: int, guards: Any = None) -> None:
        self.outcome, self.wants_usage, self.cap, self.guards = outcome, client_wants_usage, cap, guards

    def event(self, raw: bytes) -> bytes | None:
        """The event as the client gets it (None: dropped)."""
        if not raw.startswith(b"data: ") or raw.startswith(DONE):
            if raw.startswith(DONE):
                self.outcome.complete = True
            return raw
        try:
            data = json.loads(raw[6:])
        except ValueError:
            return raw
        if not isinstance(data, dict):
            return raw
        if self.outcome.response_id is None:
            self.outcome.response_id = data.get("id")
        choices = data.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content") or choice.get("text"):
                self.outcome.usage.counted += 1
        usage = data.get("usage")
        if usage:
            self.outcome.usage.prompt = int(usage.get("prompt_tokens") or 0)
            self.outcome.usage.completion = int(usage.get("completion_tokens") or 0)
            if not choices and not self.wants_usage:
                return None
        if self.guards is not None and choices:
            return self.guards.event(data)
        return raw

    def stop(self) -> bytes | None:
        """The final error event when the stream must end here, else None."""
        if self.outcome.usage.counted > self.cap:
            self.outcome.cut, self.outcome.status = True, 429
            return error_event("the answer went past this request's token reservation (its budget)",
                               "budget_exceeded", "insufficient_quota")
        if self.guards is not None and self.guards.blocked:
            self.outcome.cut, self.outcome.status = True, 400
            return error_event("the answer was blocked by this route's safety guards: "
                               + "; ".join(self.guards.reasons()), "content_blocked", "invalid_request_error")
        return None


async def relay(chunks: AsyncIterator[bytes], watch: StreamWatch, keep: list[bytes] | None,
                close: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bytes]:
    """Upstream events, as they arrive, to the client; `keep` collects them as they came (for the cache:
    a replay goes through the same watch). Closing this generator (the client went away) closes the
    upstream request, which cancels it there."""
    buffer = b""
    try:
        async for chunk in chunks:
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                if keep is not None:
                    keep.append(raw + b"\n\n")
                out = watch.event(raw)
                if out is None:
                    continue
                if (last := watch.stop()) is not None:
                    yield last
                    return
                yield out + b"\n\n"
        if not watch.outcome.complete:
            yield error_event("the model server ended the stream before it was done", "upstream_error")
    except httpx.HTTPError as exc:
        watch.outcome.status = 502
        yield error_event(f"the model server failed mid-answer: {type(exc).__name__}", "upstream_error")
    finally:
        if close is not None:
            await close()
