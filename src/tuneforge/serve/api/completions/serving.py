"""/v1/completions: raw prompts → engine jobs → an answer or an SSE stream; `echo` + `logprobs` score the
prompt itself (lm-eval's loglikelihood)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

from fastapi import Request
from fastapi.responses import StreamingResponse

from tuneforge.serve.api.completions.protocol import Completion, CompletionChoice, CompletionRequest, completion_id
from tuneforge.serve.api.constraints import check_logit_bias, prepare
from tuneforge.serve.api.context import Finished, Job, ServingContext, public_reason, sse
from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.logprobs import completion_logprobs, of_picks
from tuneforge.serve.api.protocol import Usage, sse_json


async def create_completion(ctx: ServingContext, req: CompletionRequest,
                            request: Request) -> Completion | StreamingResponse:
    adapter = ctx.resolve(req.model)
    wanted = req.max_tokens if req.max_tokens is not None else 16
    ctx.check_max_tokens(wanted)
    if req.stream and req.echo:
        raise APIError(400, "echo is not supported with stream=true", param="echo")
    if wanted == 0 and not req.echo:
        raise APIError(400, "max_tokens=0 only makes sense with echo=true", param="max_tokens")
    check_logit_bias(ctx, req)
    for p in req.prompts():
        if isinstance(p, str):
            ctx.check_bytes(len(p.encode()), "prompt")
        else:
            ctx.check_token_ids(p, "prompt")
    prompts = await ctx.text_ids(req.prompts())
    for ids in prompts:
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        ctx.check_length(len(ids), wanted, "prompt")
    n = req.n or 1
    jobs: list[Job] = [(list(ids), req.sampling_params(wanted, choice)) for ids in prompts for choice in range(n)]
    prompt_tokens = sum(len(p) for p in prompts) * n
    asked = req.guided()
    await prepare(ctx, jobs[0][1], asked[0] if asked else None)
    logged = ctx.sampled() and isinstance(req.prompts()[0], str)  # token-id prompts are not logged
    if req.stream:
        return _stream(ctx, req, jobs, adapter, prompt_tokens, logged)
    results = await ctx.collect(request, jobs, adapter, ctx.admit(len(jobs))) if wanted > 0 else []
    if logged and results:
        ctx.log_traffic(str(req.prompts()[0]), results[0].text, req.model)
    choices = [await _choice(ctx, req, index, ids, results[index] if results else None, adapter)
               for index, (ids, _) in enumerate(jobs)]
    completion_tokens = sum(len(r.final.token_ids or []) for r in results)
    return Completion(id=completion_id(), model=req.model, choices=choices,
                      usage=Usage.of(prompt_tokens, completion_tokens))


async def _choice(ctx: ServingContext, req: CompletionRequest, index: int, ids: list[int], result: Finished | None,
                  adapter: str | None) -> CompletionChoice:
    """One choice; with `echo` the prompt's text leads, and with `logprobs` too its tokens are scored."""
    text, finish, generated = "", "length", []
    if result is not None:
        text, finish, generated = result.text, public_reason(result.final.finish_reason) or "stop", \
            result.final.token_ids or []
    tokenizer = ctx.engine.tokenizer
    block = None
    if req.logprobs is not None:
        if req.echo:
            if not ctx.engine.capabilities.prompt_logprobs:
                raise APIError(400, "echo + logprobs (prompt scoring) needs serve.backend native", param="echo")
            scored = ids + generated
            chosen, tops = await asyncio.wrap_future(ctx.engine.call(partial(
                ctx.engine.prompt_logprobs, scored, req.logprobs or 0, adapter)))
            block = completion_logprobs(tokenizer, scored, chosen, tops)
        else:
            block = of_picks(tokenizer, result.picks if result else [])
    prompt_text = tokenizer.decode(ids) if req.echo else ""
    return CompletionChoice(index=index, text=prompt_text + text, logprobs=block, finish_reason=finish)


def _stream(ctx: ServingContext, req: CompletionRequest, jobs: list[Job], adapter: str | None,
            prompt_tokens: int, logged: bool) -> StreamingResponse:
    places = ctx.admit(len(jobs))
    cid = completion_id()
    include_usage = req.include_usage()

    async def events() -> AsyncIterator[str]:
        completion_tokens = 0
        offsets = [0] * len(jobs)
        answer: list[str] = []
        async for index, delta in ctx.run(jobs, adapter, places):
            if logged and index == 0:
                answer.append(delta.text)
            lp = of_picks(ctx.engine.tokenizer, delta.logprobs, offsets[index]) \
                if req.logprobs is not None and delta.logprobs else None
            offsets[index] += len(delta.text)
            if delta.finish_reason:
                error = ctx.stream_error(delta)
                if error:
                    yield error
                    continue
                completion_tokens += delta.completion_tokens
            if delta.text or delta.finish_reason:
                choice = CompletionChoice(index=index, text=delta.text, logprobs=lp,
                                          finish_reason=public_reason(delta.finish_reason))
                yield sse_json(Completion(id=cid, model=req.model, choices=[choice]))
        if include_usage:
            yield sse_json(Completion(id=cid, model=req.model, choices=[],
                                      usage=Usage.of(prompt_tokens, completion_tokens)))
        yield sse("[DONE]")
        if logged:
            ctx.log_traffic(str(req.prompts()[0]), "".join(answer), req.model)

    return StreamingResponse(events(), media_type="text/event-stream")
