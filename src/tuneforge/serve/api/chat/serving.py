"""/v1/chat/completions: request → engine jobs → an answer or an SSE stream.

With `tools`, the prompt describes them (`serve/engine/tools.py`), and unless `tool_choice` is `none` the
answer's `<tool_call>` blocks become OpenAI `tool_calls` (finish reason `tool_calls`); `required` or a
named function is enforced by constrained decoding, so the call is valid whatever the model.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from tuneforge.models.generate import GuidedDecoding
from tuneforge.serve.api.chat.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    FunctionCall,
    ToolCall,
    completion_id,
)
from tuneforge.serve.api.constraints import check_logit_bias, prepare
from tuneforge.serve.api.context import ServingContext, public_reason, sse
from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.logprobs import chat_logprobs
from tuneforge.serve.api.protocol import Usage, sse_json
from tuneforge.serve.engine.tools import ToolCallStream, forced_call_grammar, parse_tool_calls, render_with_tools

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _finish(reason: str | None, called: bool) -> str | None:
    reason = public_reason(reason)
    return "tool_calls" if called and reason == "stop" else reason


async def _prompt_ids(ctx: ServingContext, req: ChatCompletionRequest, messages: list[dict[str, Any]]) -> list[int]:
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return await ctx.chat_ids(messages)
    tokenizer = ctx.engine.tokenizer
    return await ctx.off_loop(lambda: tokenizer(render_with_tools(tokenizer, messages, tools),
                                                add_special_tokens=False)["input_ids"])


async def create_chat_completion(ctx: ServingContext, req: ChatCompletionRequest,
                                 request: Request) -> ChatCompletion | StreamingResponse:
    adapter = ctx.resolve(req.model)
    messages = req.engine_messages()
    tool_bytes = sum(len(t.model_dump_json()) for t in req.tools or [])
    ctx.check_bytes(sum(len(m["content"].encode()) for m in messages) + tool_bytes, "messages")
    check_logit_bias(ctx, req)
    wanted = req.requested_max_tokens()
    ctx.check_max_tokens(wanted)
    ids = await _prompt_ids(ctx, req, messages)
    room = ctx.engine.max_context - len(ids)
    if room < 1:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server's context is "
                       f"{ctx.engine.max_context} tokens", param="messages", code="context_length_exceeded")
    if wanted is not None:
        ctx.check_length(len(ids), wanted, "max_tokens")
    budget = min(wanted or ctx.cfg.max_tokens, room)
    n = req.n or 1
    jobs = [(list(ids), req.sampling_params(budget, choice)) for choice in range(n)]
    forced = [t.model_dump(exclude_none=True) for t in req.forced_tools()]
    if forced:
        grammar = GuidedDecoding(grammar=forced_call_grammar(forced, req.parallel_tool_calls is not False))
        jobs = [(job_ids, replace(params, guided=grammar)) for job_ids, params in jobs]
        await prepare(ctx, jobs[0][1], "tools", "function parameters schema")
    else:
        asked = req.guided()
        await prepare(ctx, jobs[0][1], asked[0] if asked else None)
    parse_calls = req.tool_mode() != "none"
    max_calls = 1 if req.parallel_tool_calls is False else None  # None: all of them
    cid = completion_id()
    places = ctx.admit(n)
    logged = ctx.sampled()
    if not req.stream:
        results = await ctx.collect(request, jobs, adapter, places)
        if logged:
            ctx.log_traffic(messages, results[0].text, req.model)
        choices = []
        for i, r in enumerate(results):
            content, calls = parse_tool_calls(r.text) if parse_calls else (r.text, [])
            calls = calls[:max_calls]
            message = AssistantMessage(content=content, tool_calls=[
                ToolCall(id=tool_call_id(), function=FunctionCall(name=c.name, arguments=c.arguments))
                for c in calls])
            choices.append(ChatChoice(index=i, message=message, finish_reason=_finish(r.final.finish_reason,
                                                                                       bool(calls)) or "stop",
                                      logprobs=chat_logprobs(ctx.engine.tokenizer, r.picks) if req.logprobs else None))
        return ChatCompletion(id=cid, model=req.model, choices=choices,
                              usage=Usage.of(len(ids), sum(r.final.completion_tokens for r in results)))
    include_usage = req.include_usage()
    streams = [ToolCallStream(tool_call_id, max_calls) for _ in range(n)] if parse_calls else None

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return sse_json(ChatCompletionChunk(id=cid, model=req.model, choices=choices, usage=usage))

    async def events() -> AsyncIterator[str]:
        for i in range(n):
            yield chunk([ChunkChoice(index=i, delta={"role": "assistant", "content": ""})])
        completion_tokens = 0
        answer: list[str] = []
        async for index, delta in ctx.run(jobs, adapter, places):
            if logged and index == 0:
                answer.append(delta.text)
            lp = chat_logprobs(ctx.engine.tokenizer, delta.logprobs) if req.logprobs and delta.logprobs else None
            if streams is None:
                pieces = [{"content": delta.text}] if delta.text else []
            else:
                pieces = streams[index].feed(delta.text) + (streams[index].flush() if delta.finish_reason else [])
            if lp and not pieces:
                pieces = [{}]
            for piece in pieces:
                yield chunk([ChunkChoice(index=index, delta=piece, logprobs=lp)])
                lp = None
            if delta.finish_reason:
                error = ctx.stream_error(delta)
                if error:
                    yield error
                    continue
                completion_tokens += delta.completion_tokens
                called = streams is not None and streams[index].calls > 0
                yield chunk([ChunkChoice(index=index, delta={}, finish_reason=_finish(delta.finish_reason, called))])
        if include_usage:
            yield chunk([], Usage.of(len(ids), completion_tokens))
        yield sse("[DONE]")
        if logged:
            ctx.log_traffic(messages, "".join(answer), req.model)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
