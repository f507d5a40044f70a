"""The OpenAI-compatible HTTP app: chat and text completions (SSE or not), models, health, readiness, metrics."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge import __version__
from tuneforge.models.generate import SamplingParams, render_prompt
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.serve.api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_completion,
    completion_id,
    completion_response,
    error_body,
    usage,
)
from tuneforge.serve.engine.simple import SimpleEngine, StreamDelta


class APIError(Exception):
    """An error answered with OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


class _Admission:
    """Counts requests admitted but not yet running, against a bound, with tickets that free their slot once.

    A slot is taken when the request is admitted (before any response header), and given back when the
    engine takes the request, when its generator ends, or when the ticket is dropped unused (a client
    that vanished before its body started): CPython frees the ticket with the generator that held it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.lock = threading.Lock()

    def try_admit(self) -> _Ticket | None:
        with self.lock:
            if self.waiting >= self.limit:
                return None
            self.waiting += 1
        return _Ticket(self)

    def release(self) -> None:
        with self.lock:
            self.waiting -= 1


class _Ticket:
    def __init__(self, admission: _Admission) -> None:
        self.admission = admission
        self.done = False

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.admission.release()

    def __del__(self) -> None:
        self.release()


@dataclass
class _Readiness:
    at: float = 0.0  # time.monotonic() of the last successful self-test


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def create_app(engine: SimpleEngine, served_model_name: str, max_tokens: int = 512,
               max_waiting: int = 32) -> FastAPI:
    """Build the app around an engine; `served_model_name` is what clients pass as `model`.

    At most `max_waiting` requests wait for the engine; one more is refused with 429 and
    `Retry-After` before any response header of a stream is sent.
    """
    app = FastAPI(title="tuneforge", version=__version__,
                  description="OpenAI-compatible endpoint for a tuneforge model.")
    started = int(time.time())
    metrics = ServingMetrics()
    label = {"model_name": served_model_name}
    ready = _Readiness()
    admission = _Admission(max_waiting)

    def instrumented(messages: list[dict[str, str]], params: SamplingParams,
                     cancelled: threading.Event, ticket: _Ticket) -> Iterator[StreamDelta]:
        """A chat turn through `instrumented_ids`."""
        prompt = render_prompt(engine.loaded.tokenizer, messages)
        ids = engine.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return instrumented_ids(list(ids), params, cancelled, ticket)

    def instrumented_ids(ids: list[int], params: SamplingParams,
                         cancelled: threading.Event, ticket: _Ticket) -> Iterator[StreamDelta]:
        """The engine's stream, observed: queue time, TTFT, inter-chunk latency, tokens, finish reasons."""
        arrived = time.perf_counter()
        state = {"started": False, "last": 0.0}
        metrics.waiting.labels(**label).inc()

        def on_start() -> None:
            state["started"] = True
            ticket.release()
            metrics.waiting.labels(**label).dec()
            metrics.running.labels(**label).inc()
            metrics.queue_time.labels(**label).observe(time.perf_counter() - arrived)

        try:
            for delta in engine.stream_ids(ids, params, cancelled, on_start):
                now = time.perf_counter()
                if delta.text:
                    if not state["last"]:
                        metrics.time_to_first_token.labels(**label).observe(now - arrived)
                    else:
                        metrics.inter_token_latency.labels(**label).observe(now - state["last"])
                    state["last"] = now
                if delta.finish_reason:
                    metrics.prompt_tokens.labels(**label).inc(delta.prompt_tokens)
                    metrics.generation_tokens.labels(**label).inc(delta.completion_tokens)
                    metrics.request_success.labels(**label, finished_reason=delta.finish_reason).inc()
                    metrics.e2e_latency.labels(**label).observe(now - arrived)
                yield delta
        finally:
            if state["started"]:
                metrics.running.labels(**label).dec()
            else:
                ticket.release()
                metrics.waiting.labels(**label).dec()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text format, vLLM-style names under `tuneforge:`."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ready")
    async def readiness() -> JSONResponse:
        """Ready when the engine answered a one-token self-test within the last 30 s."""
        if time.monotonic() - ready.at > 30:
            try:
                probe = SamplingParams(max_new_tokens=1)
                await run_in_threadpool(engine.complete, [{"role": "user", "content": "ping"}], probe)
                ready.at = time.monotonic()
            except Exception as exc:  # any engine failure means not ready; say which
                return JSONResponse({"status": "not ready", "error": f"{type(exc).__name__}: {exc}"},
                                    status_code=503)
        return JSONResponse({"status": "ready", "model": served_model_name})

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                            headers=headers)

    def admit() -> _Ticket:
        """A waiting slot, or 429 when the waiting queue is full."""
        ticket = admission.try_admit()
        if ticket is None:
            raise APIError(429, f"the server is at capacity ({max_waiting} requests waiting); retry shortly",
                           code="rate_limit_exceeded", type_="rate_limit_error")
        return ticket

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the process is up and the model is loaded."""
        return {"status": "ok", "model": served_model_name}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": served_model_name, "object": "model", "created": started, "owned_by": "tuneforge"}
        ]}

    def sampling(req: ChatCompletionRequest, prompt_tokens: int) -> SamplingParams:
        if req.model != served_model_name:
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                           f"`{served_model_name}`", param="model", code="model_not_found",
                           type_="not_found_error")
        wanted = req.requested_max_tokens()
        if wanted is not None and wanted > max_tokens:
            raise APIError(400, f"max_tokens={wanted} exceeds this server's limit of {max_tokens}",
                           param="max_tokens")
        room = engine.max_context - prompt_tokens
        if room < 1:
            raise APIError(400, f"the prompt has {prompt_tokens} tokens; this model's context is "
                           f"{engine.max_context} tokens", param="messages", code="context_length_exceeded")
        return req.sampling_params(min(wanted or max_tokens, room))

    def logprobs_block(ids: list[int], first_generated: int, top: int, echo: bool) -> dict[str, Any]:
        """OpenAI's completion logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
        chosen, tops = engine.token_logprobs(ids, top)
        start = 0 if echo else first_generated
        tokenizer = engine.loaded.tokenizer
        tokens = [tokenizer.decode([t]) for t in ids[start:]]
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return {"tokens": tokens, "token_logprobs": chosen[start:], "top_logprobs": tops[start:],
                "text_offset": offsets}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        """Raw-prompt completions; `echo` + `logprobs` score the prompt itself (what lm_eval's loglikelihood uses)."""
        if req.model != served_model_name:
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                           f"`{served_model_name}`", param="model", code="model_not_found", type_="not_found_error")
        wanted = req.max_tokens if req.max_tokens is not None else 16
        if wanted > max_tokens:
            raise APIError(400, f"max_tokens={wanted} exceeds this server's limit of {max_tokens}",
                           param="max_tokens")
        if req.stream and (req.logprobs is not None or req.echo):
            raise APIError(400, "logprobs and echo are not supported with stream=true", param="stream")
        prompts = [engine.tokenize(p) for p in req.prompts()]
        for ids in prompts:
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            if len(ids) + wanted > engine.max_context:
                raise APIError(400, f"the prompt has {len(ids)} tokens and max_tokens is {wanted}; this model's "
                               f"context is {engine.max_context} tokens", param="prompt",
                               code="context_length_exceeded")
        params = req.sampling_params(wanted)
        cid = f"cmpl-{uuid.uuid4().hex}"
        cancelled = threading.Event()
        if req.stream and len(prompts) != 1:
            raise APIError(400, "stream=true takes a single prompt", param="prompt")
        ticket = admit()
        if req.stream:
            include_usage = req.include_usage()

            def events() -> Iterator[str]:
                try:
                    for delta in instrumented_ids(prompts[0], params, cancelled, ticket):
                        choice = {"index": 0, "text": delta.text, "logprobs": None,
                                  "finish_reason": delta.finish_reason}
                        chunk = {"id": cid, "object": "text_completion", "created": int(time.time()),
                                 "model": served_model_name, "choices": [choice]}
                        if delta.finish_reason and include_usage:
                            chunk["usage"] = usage(delta.prompt_tokens, delta.completion_tokens)
                        if delta.text or delta.finish_reason:
                            yield _sse(chunk)
                    yield _sse("[DONE]")
                finally:
                    cancelled.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        def run_all() -> dict[str, Any]:
            choices, prompt_total, completion_total = [], 0, 0
            for index, ids in enumerate(prompts):
                text, finish, generated = "", "length", []
                if wanted > 0:
                    deltas = list(instrumented_ids(ids, params, cancelled, ticket))
                    text = "".join(d.text for d in deltas)
                    finish = deltas[-1].finish_reason or "stop"
                    generated = deltas[-1].token_ids or []
                prompt_text = engine.loaded.tokenizer.decode(ids)
                block = (logprobs_block(ids + generated, len(ids), req.logprobs or 0, bool(req.echo))
                         if req.logprobs is not None else None)
                choices.append({"index": index, "text": (prompt_text if req.echo else "") + text,
                                "logprobs": block, "finish_reason": finish})
                prompt_total += len(ids)
                completion_total += len(generated)
            return completion_response(cid, served_model_name, choices, prompt_total, completion_total)

        return await run_in_threadpool(run_all)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest):
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        prompt_tokens = engine.count_prompt_tokens(messages)
        params = sampling(req, prompt_tokens)
        cid = completion_id()
        ticket = admit()
        cancelled = threading.Event()
        if not req.stream:
            deltas = await run_in_threadpool(lambda: list(instrumented(messages, params, cancelled, ticket)))
            final = deltas[-1]
            return chat_completion(cid, served_model_name, "".join(d.text for d in deltas),
                                   final.finish_reason or "stop", final.prompt_tokens, final.completion_tokens)
        include_usage = req.include_usage()

        def events() -> Iterator[str]:
            try:
                yield _sse(chat_chunk(cid, served_model_name, {"role": "assistant", "content": ""}))
                for delta in instrumented(messages, params, cancelled, ticket):
                    if delta.text:
                        yield _sse(chat_chunk(cid, served_model_name, {"content": delta.text}))
                    if delta.finish_reason:
                        yield _sse(chat_chunk(cid, served_model_name, {}, delta.finish_reason))
                        if include_usage:
                            yield _sse(chat_chunk(cid, served_model_name, {}, None,
                                                  usage(delta.prompt_tokens, delta.completion_tokens),
                                                  with_choice=False))
                yield _sse("[DONE]")
            finally:
                cancelled.set()  # a disconnected client stops generation at the next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
