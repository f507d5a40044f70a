"""The OpenAI-compatible HTTP app over the engine: chat and text completions (SSE or not), models,
health, readiness, metrics, and the admin calls for LoRA adapters.

Admission happens before any response header: a request either gets a place (running or waiting,
bounded by `max_num_seqs + max_waiting`) or a 429 (503 while draining) with `Retry-After`. A client
that disconnects, streamed or not, has its request aborted and its cache slot freed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge import __version__
from tuneforge.core.config import ServeConfig
from tuneforge.models.generate import SamplingParams, render_prompt
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.serve.api.limits import BodyLimit, PromptBound
from tuneforge.serve.api.protocol import (
    STRICT,
    ChatCompletionRequest,
    CompletionRequest,
    chat_choice,
    chat_chunk,
    chat_completion,
    completion_id,
    completion_response,
    error_body,
    error_responses,
    usage,
)
from tuneforge.serve.engine.engine import Engine, StreamDelta, prompt_logprobs
from tuneforge.serve.engine.sampler import Sampled


class APIError(Exception):
    """An error answered with OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


@dataclass
class ServerState:
    """What the handlers share: admitted requests, draining, readiness."""

    in_flight: int = 0
    draining: bool = False
    ready_at: float = 0.0  # monotonic time of the last successful self-test
    events: list[str] = field(default_factory=list)


def engine_error(final: StreamDelta) -> APIError:
    """The error a failed request answers with: 400 when the engine found fault with the request itself
    (its parameters or prompt), 500 for a fault of the engine or the model."""
    if final.status == 400:
        return APIError(400, final.error or "invalid request", code="invalid_request")
    return APIError(500, final.error or "engine error", code="engine_error", type_="server_error")


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class _Places:
    """Admitted places (one per sequence), each given back once: when its sequence finishes or is aborted,
    or all at once when the holder is dropped unused (a client that vanished before its stream started)."""

    def __init__(self, state: ServerState, count: int) -> None:
        self.state, self.held = state, count
        state.in_flight += count

    def release(self, count: int = 1) -> None:
        count = min(count, self.held)
        self.held -= count
        self.state.in_flight -= count

    def __del__(self) -> None:
        self.release(self.held)


class _Choices:
    """Deltas of one request's sequences (n choices × prompts), handed from the engine thread to asyncio."""

    def __init__(self, count: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, StreamDelta]] = asyncio.Queue()
        self.open = count
        self.request_ids: dict[int, str] = {}

    def sink(self, index: int):
        return lambda delta: self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, delta))


class LoadAdapterRequest(BaseModel):
    model_config = STRICT

    lora_name: str
    lora_path: str


class UnloadAdapterRequest(BaseModel):
    model_config = STRICT

    lora_name: str


def create_app(engine: Engine, served_model_name: str, cfg: ServeConfig | None = None,
               metrics: ServingMetrics | None = None) -> FastAPI:
    """Build the app around a started engine; `served_model_name` is what clients pass as `model`."""
    cfg = cfg or ServeConfig()
    app = FastAPI(title="tuneforge", version=__version__,
                  description="OpenAI-compatible endpoint for a tuneforge model, with continuous batching.")
    metrics = metrics or engine.metrics or ServingMetrics()
    engine.metrics = metrics
    started = int(time.time())
    state = ServerState()
    app.state.serve = state
    app.state.engine = engine
    capacity = engine.limits.max_num_seqs + cfg.max_waiting
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    bound = PromptBound.of(engine.tokenizer, engine.max_context)
    vocab_size = len(engine.tokenizer)
    # tokenizing and chat-template rendering run here, never on the event loop (a long prompt takes seconds)
    tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tuneforge-tokenize")

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(tokenizing, partial(fn, *args))

    def check_bytes(text_bytes: int, param: str) -> None:
        """Refuse, before tokenizing, a prompt that cannot fit the context whatever its tokens."""
        if bound.too_long(text_bytes):
            raise APIError(400, f"the prompt has {text_bytes} bytes: at least "
                           f"{text_bytes // bound.bytes_per_token} tokens, more than this server's context of "
                           f"{engine.max_context} tokens", param=param, code="context_length_exceeded")

    # ---- errors ------------------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        """A fault of ours: still OpenAI's error shape, and named."""
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error",
                                       code="internal_error"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    # ---- health, readiness, metrics, models --------------------------------------------------
    status_only = {503: {"description": "Not live / not ready", "content": {"application/json": {}}}}
    generation_errors = error_responses(400, 404, 413, 429, 499, 500, 503, 504)
    stream_or_json = {200: {"description": "The completion; with `stream: true` an SSE stream of chunks",
                            "content": {"application/json": {}, "text/event-stream": {}}}}

    @app.get("/health", responses=status_only)
    async def health() -> JSONResponse:
        """Liveness: the process is up and the engine loop is running (not dead, not stuck)."""
        if not engine.alive():
            return JSONResponse({"status": "engine down", "restarts": engine.restarts}, status_code=503)
        return JSONResponse({"status": "ok", "model": served_model_name, "in_flight": state.in_flight,
                             "running": engine.num_running, "waiting": engine.num_waiting,
                             "engine_restarts": engine.restarts})

    @app.get("/ready", responses=status_only)
    async def readiness() -> JSONResponse:
        """Ready: not draining, and the engine answered a one-token self-test within the last 30 s."""
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if time.monotonic() - state.ready_at > 30:
            try:
                ids = engine.tokenizer("ping", add_special_tokens=False)["input_ids"] or [0]
                final = await _collect_one(ids, SamplingParams(max_new_tokens=1), None, 10.0)
                if final.finish_reason in ("error", "timeout"):
                    raise RuntimeError(final.error or final.finish_reason)
                state.ready_at = time.monotonic()
            except Exception as exc:  # any engine failure means not ready; say which
                return JSONResponse({"status": "not ready", "error": f"{type(exc).__name__}: {exc}"},
                                    status_code=503)
        return JSONResponse({"status": "ready", "model": served_model_name})

    @app.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}})
    async def prometheus_metrics() -> Response:
        """Prometheus text format, vLLM-style names under `tuneforge:`."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def model_card(name: str, parent: str | None = None) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": "tuneforge", "root": name,
                "parent": parent, "max_model_len": engine.max_context}

    @app.get("/v1/models")
    async def models() -> dict:
        cards = [model_card(served_model_name)]
        cards += [model_card(name, served_model_name) for name in engine.adapter_names()]
        return {"object": "list", "data": cards}

    # ---- multi-LoRA admin ----------------------------------------------------------------------
    @app.post("/v1/load_lora_adapter", responses=error_responses(400, 413))
    async def load_lora_adapter(req: LoadAdapterRequest) -> dict:
        """Load a LoRA adapter artifact at run time; requests then pick it by `model: <lora_name>`."""
        if req.lora_name == served_model_name or req.lora_name in engine.adapter_names():
            raise APIError(400, f"an adapter or model named {req.lora_name!r} is already served",
                           param="lora_name")
        try:
            await asyncio.wrap_future(engine.call(lambda: engine.load_adapter(req.lora_name, req.lora_path)))
        except (ValueError, OSError) as exc:
            raise APIError(400, str(exc), param="lora_path") from None
        return {"status": "loaded", "lora_name": req.lora_name}

    @app.post("/v1/unload_lora_adapter", responses=error_responses(400, 404, 413))
    async def unload_lora_adapter(req: UnloadAdapterRequest) -> dict:
        if req.lora_name not in engine.adapter_names():
            raise APIError(404, f"no adapter named {req.lora_name!r} is loaded", param="lora_name",
                           type_="not_found_error")
        await asyncio.wrap_future(engine.call(lambda: engine.unload_adapter(req.lora_name)))
        return {"status": "unloaded", "lora_name": req.lora_name}

    if cfg.debug_faults:
        @app.post("/admin/fault")
        async def inject_fault(kind: str = "raise") -> dict:
            """Testing only (serve.debug_faults): make the next engine step raise or hang."""
            engine.inject_fault(kind)
            return {"status": "armed", "kind": kind}

    # ---- admission and generation ---------------------------------------------------------------
    def resolve(model: str) -> str | None:
        """The adapter a `model` field names (None for the base model), or 404."""
        if model == served_model_name:
            return None
        if model in engine.adapter_names():
            return model
        served = ", ".join([served_model_name, *engine.adapter_names()])
        raise APIError(404, f"The model `{model}` does not exist; this server serves {served}",
                       param="model", code="model_not_found", type_="not_found_error")

    def admit(sequences: int) -> _Places:
        """Take places for `sequences`, or refuse before any header: 503 draining, 429 full."""
        if state.draining:
            metrics.rejected.labels(model_name=served_model_name, status="503").inc()
            raise APIError(503, "the server is shutting down; retry on another replica",
                           code="server_draining", type_="service_unavailable_error")
        if sequences > capacity:  # could never be admitted: not a matter of retrying
            raise APIError(400, f"this request needs {sequences} sequences (prompts × n); this server holds at "
                           f"most {capacity} at once", param="n")
        if state.in_flight + sequences > capacity:
            metrics.rejected.labels(model_name=served_model_name, status="429").inc()
            raise APIError(429, f"the server is at capacity ({engine.limits.max_num_seqs} running, "
                           f"{cfg.max_waiting} waiting); retry shortly", code="rate_limit_exceeded",
                           type_="rate_limit_error")
        return _Places(state, sequences)

    def check_length(prompt_tokens: int, wanted: int, param: str) -> None:
        if prompt_tokens + wanted > engine.max_context:
            raise APIError(400, f"the prompt has {prompt_tokens} tokens and max_tokens is {wanted}; this "
                           f"server's context is {engine.max_context} tokens", param=param,
                           code="context_length_exceeded")

    async def run(jobs: list[tuple[list[int], SamplingParams]], adapter: str | None, places: _Places,
                  internal: bool = False) -> AsyncIterator[tuple[int, StreamDelta]]:
        """Submit every job (admitted: `places`) and yield (job index, delta) until all have finished."""
        choices = _Choices(len(jobs))
        finished: set[int] = set()
        try:
            for index, (ids, params) in enumerate(jobs):
                choices.request_ids[index] = engine.submit(ids, params, choices.sink(index), adapter,
                                                           cfg.request_timeout, internal)
            while len(finished) < len(jobs):
                index, delta = await choices.queue.get()
                if delta.finish_reason:
                    finished.add(index)
                    places.release()
                yield index, delta
        finally:
            for index, rid in choices.request_ids.items():  # a vanished client: free its slots now
                if index not in finished:
                    engine.abort(rid)
            places.release(places.held)

    async def _collect_one(ids: list[int], params: SamplingParams, adapter: str | None,
                           timeout: float) -> StreamDelta:
        """Internal generations (self-test): not admitted, never refused."""
        async with asyncio.timeout(timeout):
            async for _, delta in run([(ids, params)], adapter, _Places(state, 1), internal=True):
                if delta.finish_reason:
                    return delta
        raise RuntimeError("no final delta")

    async def collect(request: Request, jobs: list[tuple[list[int], SamplingParams]], adapter: str | None,
                      places: _Places) -> list[tuple[str, StreamDelta, list[Sampled]]]:
        """Run jobs to the end, watching the client: a disconnect aborts them. Per job: text, final delta, logprobs."""
        texts = [""] * len(jobs)
        picks: list[list[Sampled]] = [[] for _ in jobs]
        finals: list[StreamDelta | None] = [None] * len(jobs)

        async def consume() -> None:
            async for index, delta in run(jobs, adapter, places):
                texts[index] += delta.text
                picks[index] += delta.logprobs
                if delta.finish_reason:
                    finals[index] = delta

        task = asyncio.create_task(consume())
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                break
        try:
            await task
        except asyncio.CancelledError:
            raise APIError(499, "client disconnected", code="client_closed_request") from None
        for final in finals:
            assert final is not None
            if final.finish_reason == "error":
                raise engine_error(final)
            if final.finish_reason == "timeout":
                raise APIError(504, f"the request ran past serve.request_timeout ({cfg.request_timeout:g} s)",
                               code="deadline_exceeded", type_="timeout_error")
        return [(texts[i], finals[i], picks[i]) for i in range(len(jobs))]  # type: ignore[misc]

    def stream_error(final: StreamDelta) -> str | None:
        if final.finish_reason == "error":
            exc = engine_error(final)
            return _sse(error_body(exc.message, exc.type, exc.param, exc.code))
        if final.finish_reason == "timeout":
            return _sse(error_body(f"the request ran past serve.request_timeout ({cfg.request_timeout:g} s)",
                                   "timeout_error", code="deadline_exceeded"))
        return None

    def public_reason(reason: str | None) -> str | None:
        return "stop" if reason == "abort" else reason

    def chat_ids(messages: list[dict[str, str]]) -> list[int]:
        return engine.tokenizer(render_prompt(engine.tokenizer, messages), add_special_tokens=False)["input_ids"]

    # ---- logprobs blocks ---------------------------------------------------------------------------
    def token_text(token: int) -> str:
        return engine.tokenizer.decode([token])

    def chat_logprobs(picks: list[Sampled]) -> dict[str, Any]:
        def entry(token: int, logprob: float) -> dict[str, Any]:
            text = token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return {"content": [{**entry(p.token, p.logprob or 0.0),
                             "top_logprobs": [entry(t, v) for t, v in p.top.items()]} for p in picks]}

    def completion_logprobs(tokens: list[int], logprobs: list[float | None], tops: list[dict[int, float] | None],
                            start_offset: int = 0) -> dict[str, Any]:
        texts = [token_text(t) for t in tokens]
        offsets, position = [], start_offset
        for text in texts:
            offsets.append(position)
            position += len(text)
        return {"tokens": texts, "token_logprobs": logprobs,
                "top_logprobs": [None if top is None else {token_text(t): v for t, v in top.items()}
                                 for top in tops],
                "text_offset": offsets}

    # ---- /v1/chat/completions ------------------------------------------------------------------------
    @app.post("/v1/chat/completions", responses={**stream_or_json, **generation_errors})
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        adapter = resolve(req.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        check_bytes(sum(len(m["content"].encode()) for m in messages), "messages")
        ids = await off_loop(chat_ids, messages)
        wanted = req.requested_max_tokens()
        if wanted is not None and wanted > cfg.max_tokens:
            raise APIError(400, f"max_tokens={wanted} exceeds this server's limit of {cfg.max_tokens}",
                           param="max_tokens")
        room = engine.max_context - len(ids)
        if room < 1:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server's context is "
                           f"{engine.max_context} tokens", param="messages", code="context_length_exceeded")
        if wanted is not None:
            check_length(len(ids), wanted, "max_tokens")
        budget = min(wanted or cfg.max_tokens, room)
        n = req.n or 1
        jobs = [(list(ids), req.sampling_params(budget, choice)) for choice in range(n)]
        cid = completion_id()
        places = admit(n)
        if not req.stream:
            results = await collect(request, jobs, adapter, places)
            choices = [chat_choice(i, text, public_reason(final.finish_reason) or "stop",
                                   chat_logprobs(picks) if req.logprobs else None)
                       for i, (text, final, picks) in enumerate(results)]
            return chat_completion(cid, req.model, choices, len(ids),
                                   sum(final.completion_tokens for _, final, _ in results))
        include_usage = req.include_usage()

        async def events() -> AsyncIterator[str]:
            for i in range(n):
                yield _sse(chat_chunk(cid, req.model, {"role": "assistant", "content": ""}, index=i))
            completion_tokens = 0
            async for index, delta in run(jobs, adapter, places):
                lp = chat_logprobs(delta.logprobs) if req.logprobs and delta.logprobs else None
                if delta.text or lp:
                    yield _sse(chat_chunk(cid, req.model, {"content": delta.text}, index=index, logprobs=lp))
                if delta.finish_reason:
                    error = stream_error(delta)
                    if error:
                        yield error
                        continue
                    completion_tokens += delta.completion_tokens
                    yield _sse(chat_chunk(cid, req.model, {}, public_reason(delta.finish_reason), index=index))
            if include_usage:
                yield _sse(chat_chunk(cid, req.model, {}, None, usage(len(ids), completion_tokens),
                                      with_choice=False))
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- /v1/completions ---------------------------------------------------------------------------
    @app.post("/v1/completions", responses={**stream_or_json, **generation_errors})
    async def completions(req: CompletionRequest, request: Request):
        """Raw-prompt completions; `echo` + `logprobs` score the prompt itself (lm_eval's loglikelihood)."""
        adapter = resolve(req.model)
        wanted = req.max_tokens if req.max_tokens is not None else 16
        if wanted > cfg.max_tokens:
            raise APIError(400, f"max_tokens={wanted} exceeds this server's limit of {cfg.max_tokens}",
                           param="max_tokens")
        if req.stream and req.echo:
            raise APIError(400, "echo is not supported with stream=true", param="echo")
        if wanted == 0 and not req.echo:
            raise APIError(400, "max_tokens=0 only makes sense with echo=true", param="max_tokens")
        for p in req.prompts():
            if isinstance(p, str):
                check_bytes(len(p.encode()), "prompt")
            elif any(not 0 <= t < vocab_size for t in p):
                raise APIError(400, f"prompt token ids must be in [0, {vocab_size}) (this model's vocabulary)",
                               param="prompt")
        prompts = await off_loop(lambda: [p if isinstance(p, list) else engine.tokenizer(p)["input_ids"]
                                          for p in req.prompts()])
        for ids in prompts:
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            check_length(len(ids), wanted, "prompt")
        n = req.n or 1
        jobs = [(list(ids), req.sampling_params(wanted, choice)) for ids in prompts for choice in range(n)]
        cid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if req.stream:
            places = admit(len(jobs))
            include_usage = req.include_usage()

            async def events() -> AsyncIterator[str]:
                completion_tokens = 0
                offsets = [0] * len(jobs)
                async for index, delta in run(jobs, adapter, places):
                    lp = None
                    if req.logprobs is not None and delta.logprobs:
                        lp = completion_logprobs([p.token for p in delta.logprobs],
                                                 [p.logprob for p in delta.logprobs],
                                                 [p.top for p in delta.logprobs], offsets[index])
                    offsets[index] += len(delta.text)
                    if delta.finish_reason:
                        error = stream_error(delta)
                        if error:
                            yield error
                            continue
                        completion_tokens += delta.completion_tokens
                    if delta.text or delta.finish_reason:
                        choice = {"index": index, "text": delta.text, "logprobs": lp,
                                  "finish_reason": public_reason(delta.finish_reason)}
                        yield _sse({"id": cid, "object": "text_completion", "created": created,
                                    "model": req.model, "choices": [choice]})
                if include_usage:
                    yield _sse({"id": cid, "object": "text_completion", "created": created, "model": req.model,
                                "choices": [], "usage": usage(sum(len(p) for p in prompts) * n, completion_tokens)})
                yield _sse("[DONE]")

            return StreamingResponse(events(), media_type="text/event-stream")

        results = await collect(request, jobs, adapter, admit(len(jobs))) if wanted > 0 else []
        choices = []
        for index, (ids, _) in enumerate(jobs):
            text, finish, generated = "", "length", []
            if results:
                text, final, _ = results[index]
                finish, generated = public_reason(final.finish_reason) or "stop", final.token_ids or []
            block = None
            if req.logprobs is not None:
                scored = ids + generated if req.echo else generated
                if req.echo:
                    if engine.loaded.model is None:
                        raise APIError(400, "echo + logprobs (prompt scoring) needs serve.backend native",
                                       param="echo")
                    chosen, tops = await asyncio.wrap_future(engine.call(partial(
                        prompt_logprobs, engine, scored, req.logprobs or 0, adapter)))
                    block = completion_logprobs(scored, chosen, tops)
                else:
                    picks = results[index][2]
                    block = completion_logprobs(scored, [p.logprob for p in picks], [p.top for p in picks])
            prompt_text = engine.tokenizer.decode(ids) if req.echo else ""
            choices.append({"index": index, "text": prompt_text + text, "logprobs": block, "finish_reason": finish})
        completion_total = sum(len(r[1].token_ids or []) for r in results)
        response = completion_response(cid, req.model, choices, sum(len(p) for p in prompts) * n, completion_total)
        response["created"] = created
        return response

    return app
