"""/v1/chat/completions: request → engine jobs → an answer or an SSE stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from tuneforge.serve.api.chat.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    completion_id,
)
from tuneforge.serve.api.context import ServingContext, public_reason, sse
from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.logprobs import chat_logprobs
from tuneforge.serve.api.protocol import Usage, sse_json

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def create_chat_completion(ctx: ServingContext, req: ChatCompletionRequest,
                                 request: Request) -> ChatCompletion | StreamingResponse:
    adapter = ctx.resolve(req.model)
    messages = req.engine_messages()
    ctx.check_bytes(sum(len(m["content"].encode()) for m in messages), "messages")
    wanted = req.requested_max_tokens()
    ctx.check_max_tokens(wanted)
    ids = await ctx.chat_ids(messages)
    room = ctx.engine.max_context - len(ids)
    if room < 1:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server's context is "
                       f"{ctx.engine.max_context} tokens", param="messages", code="context_length_exceeded")
    if wanted is not None:
        ctx.check_length(len(ids), wanted, "max_tokens")
    budget = min(wanted or ctx.cfg.max_tokens, room)
    n = req.n or 1
    jobs = [(list(ids), req.sampling_params(budget, choice)) for choice in range(n)]
    cid = completion_id()
    places = ctx.admit(n)
    if not req.stream:
        results = await ctx.collect(request, jobs, adapter, places)
        choices = [ChatChoice(index=i, message=AssistantMessage(content=r.text),
                              finish_reason=public_reason(r.final.finish_reason) or "stop",
                              logprobs=chat_logprobs(ctx.engine.tokenizer, r.picks) if req.logprobs else None)
                   for i, r in enumerate(results)]
        return ChatCompletion(id=cid, model=req.model, choices=choices,
                              usage=Usage.of(len(ids), sum(r.final.completion_tokens for r in results)))
    include_usage = req.include_usage()

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return sse_json(ChatCompletionChunk(id=cid, model=req.model, choices=choices, usage=usage))

    async def events() -> AsyncIterator[str]:
        for i in range(n):
            yield chunk([ChunkChoice(index=i, delta={"role": "assistant", "content": ""})])
        completion_tokens = 0
        async for index, delta in ctx.run(jobs, adapter, places):
            lp = chat_logprobs(ctx.engine.tokenizer, delta.logprobs) if req.logprobs and delta.logprobs else None
            if delta.text or lp:
                yield chunk([ChunkChoice(index=index, delta={"content": delta.text}, logprobs=lp)])
            if delta.finish_reason:
                error = ctx.stream_error(delta)
                if error:
                    yield error
                    continue
                completion_tokens += delta.completion_tokens
                yield chunk([ChunkChoice(index=index, delta={}, finish_reason=public_reason(delta.finish_reason))])
        if include_usage:
            yield chunk([], Usage.of(len(ids), completion_tokens))
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
