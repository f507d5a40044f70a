"""What every endpoint shares: the engine, the served names, admission, early limits, tokenizing off the
event loop, and running admitted jobs on the engine while watching the client.

Admission happens before any response header: a request either gets a place (running or waiting,
bounded by `max_num_seqs + max_waiting`) or a 429 (503 while draining) with `Retry-After`. A client
that disconnects, streamed or not, has its request aborted and its cache slot freed.

A context is one engine (one model version). When the served version changes (`serve/follow.py`) a new
context is built beside the old one and put in `LiveContext`; `PinContext` gives each request the context
current when it arrives, for its whole life (tokenizer, limits, engine and version header all from one),
and counts the requests pinned to each, so the old engine is released only once its last one has ended.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request

from tuneforge.core.config import ServeConfig
from tuneforge.models.generate import SamplingParams, render_prompt
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.monitor.traffic import TrafficLog
from tuneforge.serve.api.errors import APIError, engine_error
from tuneforge.serve.api.limits import PromptBound
from tuneforge.serve.engine.engine import StreamDelta
from tuneforge.serve.engine.protocol import ServingEngine
from tuneforge.serve.engine.sampler import Sampled

Job = tuple[list[int], SamplingParams]


@dataclass
class ServerState:
    """What the handlers share, whichever version serves them: admitted requests, draining, readiness, and
    the alias follower's report (shown by /ready)."""

    in_flight: int = 0
    draining: bool = False
    ready_at: float = 0.0  # monotonic time of the last successful self-test
    follow: dict[str, Any] | None = None


@dataclass
class EngineLoad:
    """Sequences admitted to one engine (its capacity is its own while an old version drains beside it)."""

    in_flight: int = 0


class Places:
    """Admitted places (one per sequence), each given back once: when its sequence finishes or is aborted,
    or all at once when the holder is dropped unused (a client that vanished before its stream started)."""

    def __init__(self, state: ServerState, count: int, load: EngineLoad | None = None) -> None:
        self.state, self.load, self.held = state, load or EngineLoad(), count
        state.in_flight += count
        self.load.in_flight += count

    def release(self, count: int = 1) -> None:
        count = min(count, self.held)
        self.held -= count
        self.state.in_flight -= count
        self.load.in_flight -= count

    def __del__(self) -> None:
        self.release(self.held)


class _Choices:
    """Deltas of one request's sequences (n choices × prompts), handed from the engine thread to asyncio."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, StreamDelta]] = asyncio.Queue()
        self.request_ids: dict[int, str] = {}

    def sink(self, index: int):
        return lambda delta: self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, delta))


def sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def public_reason(reason: str | None) -> str | None:
    """The finish reason a client sees (an abort by unload ends as `stop`)."""
    return "stop" if reason == "abort" else reason


@dataclass
class Finished:
    """One job run to its end: its text, final delta and sampled tokens (with logprobs when asked)."""

    text: str
    final: StreamDelta
    picks: list[Sampled]


class ServingContext:
    """The engine behind the app and the rules every endpoint applies before and around it."""

    def __init__(self, engine: ServingEngine, served_model_name: str, cfg: ServeConfig,
                 metrics: ServingMetrics, state: ServerState | None = None,
                 tokenizing: ThreadPoolExecutor | None = None) -> None:
        self.engine, self.served_model_name, self.cfg, self.metrics = engine, served_model_name, cfg, metrics
        self.state = state or ServerState()
        self.load = EngineLoad()
        self.pins = 0  # requests pinned to this context (PinContext), from arrival to their last byte
        self.started = 0  # unix time the app was built (the models' `created`)
        self.version: str | None = None  # the served artifact's content hash, when it is one
        self.label: str | None = None  # the registry version ('support-bot/3'), when it is one
        self.capacity = engine.max_num_seqs + cfg.max_waiting
        self.bound = PromptBound.of(engine.tokenizer, engine.max_context)
        self.vocab_size = len(engine.tokenizer)
        self.keys = cfg.keys()  # (api key, admin key), read once
        self.traffic: TrafficLog | None = None  # serve.traffic_log, when on (create_app opens it)
        # tokenizing and chat-template rendering run here, never on the event loop (a long prompt takes seconds)
        self._tokenizing = tokenizing or ThreadPoolExecutor(max_workers=2, thread_name_prefix="tuneforge-tokenize")
        # counted while the engine (its weights, its cache) is in memory: down only once it was collected
        loaded = metrics.versions_loaded.labels(model_name=served_model_name)
        loaded.inc()
        weakref.finalize(engine, loaded.dec)

    def beside(self, engine: ServingEngine, version: str | None, label: str | None) -> ServingContext:
        """A context on another engine (a new version loaded beside this one), sharing what is server-wide:
        state, metrics, names, keys, tokenizing threads."""
        engine.metrics = self.metrics
        ctx = ServingContext(engine, self.served_model_name, self.cfg, self.metrics, self.state, self._tokenizing)
        ctx.started, ctx.version, ctx.label, ctx.keys = self.started, version, label, self.keys
        ctx.traffic = self.traffic
        return ctx

    @staticmethod
    def of(request: Request) -> ServingContext:
        """FastAPI dependency: the context `request` was pinned to when it arrived (else the app's current)."""
        pinned = request.scope.get(PIN_KEY)
        return pinned if pinned is not None else request.app.state.context

    # ---- names and limits ------------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        """The adapter a `model` field names (None for the base model), or 404."""
        if model == self.served_model_name:
            return None
        if model in self.engine.adapter_names():
            return model
        served = ", ".join([self.served_model_name, *self.engine.adapter_names()])
        raise APIError(404, f"The model `{model}` does not exist; this server serves {served}",
                       param="model", code="model_not_found", type_="not_found_error")

    def check_max_tokens(self, wanted: int | None) -> None:
        if wanted is not None and wanted > self.cfg.max_tokens:
            raise APIError(400, f"max_tokens={wanted} exceeds this server's limit of {self.cfg.max_tokens}",
                           param="max_tokens")

    def check_length(self, prompt_tokens: int, wanted: int, param: str) -> None:
        if prompt_tokens + wanted > self.engine.max_context:
            raise APIError(400, f"the prompt has {prompt_tokens} tokens and max_tokens is {wanted}; this "
                           f"server's context is {self.engine.max_context} tokens", param=param,
                           code="context_length_exceeded")

    def check_bytes(self, text_bytes: int, param: str) -> None:
        """Refuse, before tokenizing, a prompt that cannot fit the context whatever its tokens."""
        if self.bound.too_long(text_bytes):
            raise APIError(400, f"the prompt has {text_bytes} bytes: at least "
                           f"{text_bytes // self.bound.bytes_per_token} tokens, more than this server's context "
                           f"of {self.engine.max_context} tokens", param=param, code="context_length_exceeded")

    def check_token_ids(self, ids: list[int], param: str) -> None:
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise APIError(400, f"prompt token ids must be in [0, {self.vocab_size}) (this model's vocabulary)",
                           param=param)

    # ---- tokenizing, off the event loop ------------------------------------------------------------
    async def off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, partial(fn, *args))

    async def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tokenizer = self.engine.tokenizer
        return await self.off_loop(
            lambda: tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])

    async def text_ids(self, prompts: list[str | list[int]]) -> list[list[int]]:
        tokenizer = self.engine.tokenizer
        return await self.off_loop(lambda: [p if isinstance(p, list) else tokenizer(p)["input_ids"] for p in prompts])

    # ---- admission ---------------------------------------------------------------------------------
    def admit(self, sequences: int) -> Places:
        """Take places for `sequences`, or refuse before any header: 503 draining, 429 full."""
        name = self.served_model_name
        if self.state.draining:
            self.metrics.rejected.labels(model_name=name, status="503").inc()
            raise APIError(503, "the server is shutting down; retry on another replica",
                           code="server_draining", type_="service_unavailable_error")
        if sequences > self.capacity:  # could never be admitted: not a matter of retrying
            raise APIError(400, f"this request needs {sequences} sequences (prompts × n); this server holds at "
                           f"most {self.capacity} at once", param="n")
        if self.load.in_flight + sequences > self.capacity:
            self.metrics.rejected.labels(model_name=name, status="429").inc()
            raise APIError(429, f"the server is at capacity ({self.engine.max_num_seqs} running, "
                           f"{self.cfg.max_waiting} waiting); retry shortly", code="rate_limit_exceeded",
                           type_="rate_limit_error")
        return Places(self.state, sequences, self.load)

    # ---- the traffic log -------------------------------------------------------------------------
    def sampled(self) -> bool:
        """Whether this request goes into the traffic log (decided when it arrives: others collect nothing)."""
        return self.traffic is not None and self.traffic.sampled()

    def log_traffic(self, prompt: str | list[dict[str, Any]], answer: str, model: str) -> None:
        """A sampled request's prompt and (first choice's) answer, written off the event loop."""
        assert self.traffic is not None
        self.traffic.submit(prompt, answer, model=model, version=self.label or self.version)

    # ---- running jobs ------------------------------------------------------------------------------
    async def run(self, jobs: list[Job], adapter: str | None, places: Places,
                  internal: bool = False) -> AsyncIterator[tuple[int, StreamDelta]]:
        """Submit every job (admitted: `places`) and yield (job index, delta) until all have finished."""
        choices = _Choices()
        finished: set[int] = set()
        try:
            for index, (ids, params) in enumerate(jobs):
                choices.request_ids[index] = self.engine.submit(ids, params, choices.sink(index), adapter,
                                                                self.cfg.request_timeout, internal)
            while len(finished) < len(jobs):
                index, delta = await choices.queue.get()
                if delta.finish_reason:
                    finished.add(index)
                    places.release()
                yield index, delta
        finally:
            for index, rid in choices.request_ids.items():  # a vanished client: free its slots now
                if index not in finished:
                    self.engine.abort(rid)
            places.release(places.held)

    async def self_test(self, timeout: float) -> StreamDelta:
        """An internal one-token generation (readiness): not admitted, never refused."""
        ids = self.engine.tokenizer("ping", add_special_tokens=False)["input_ids"] or [0]
        async with asyncio.timeout(timeout):
            async for _, delta in self.run([(ids, SamplingParams(max_new_tokens=1))], None,
                                           Places(self.state, 1, self.load), internal=True):
                if delta.finish_reason:
                    return delta
        raise RuntimeError("no final delta")

    async def ready_error(self, timeout: float) -> str | None:
        """Why the self-test failed ('TimeoutError: …'), or None when the engine answered it: what /ready
        checks, and what a newly loaded version must pass before traffic moves to it."""
        try:
            final = await self.self_test(timeout)
            if final.finish_reason in ("error", "timeout"):
                raise RuntimeError(final.error or final.finish_reason)
        except Exception as exc:  # any engine failure means not ready; say which
            return f"{type(exc).__name__}: {exc}"
        return None

    async def collect(self, request: Request, jobs: list[Job], adapter: str | None, places: Places) -> list[Finished]:
        """Run jobs to the end, watching the client: a disconnect aborts them; a failed job raises its error."""
        texts = [""] * len(jobs)
        picks: list[list[Sampled]] = [[] for _ in jobs]
        finals: list[StreamDelta | None] = [None] * len(jobs)

        async def consume() -> None:
            async for index, delta in self.run(jobs, adapter, places):
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
        results = []
        for text, final, chosen in zip(texts, finals, picks, strict=True):
            assert final is not None
            error = engine_error(final, self.cfg.request_timeout)
            if error is not None:
                raise error
            results.append(Finished(text, final, chosen))
        return results

    def stream_error(self, final: StreamDelta) -> str | None:
        """The SSE error event of a streamed job that failed after its headers were sent, if it did."""
        error = engine_error(final, self.cfg.request_timeout)
        return None if error is None else sse(error.body())


Context = Annotated[ServingContext, Depends(ServingContext.of)]  # a route's parameter: the request's context

PIN_KEY = "tuneforge.context"  # the ASGI scope key PinContext stores a request's context under


class LiveContext:
    """The context new requests get, swapped whole when the served version changes, and every context still
    loaded (the current one, and an old one while its last requests finish).

    Pinning (read the current context, count the request on it) and swapping happen under one lock, so once
    `swap` has returned no request can be pinned to the old context any more: its count only falls."""

    def __init__(self, ctx: ServingContext) -> None:
        self._current = ctx
        self.loaded = [ctx]
        self._changed = threading.Condition()

    @property
    def current(self) -> ServingContext:
        return self._current

    def pin(self) -> ServingContext:
        with self._changed:
            ctx = self._current
            ctx.pins += 1
            return ctx

    def unpin(self, ctx: ServingContext) -> None:
        with self._changed:
            ctx.pins -= 1
            self._changed.notify_all()

    def swap(self, new: ServingContext) -> ServingContext:
        """Make `new` the context of every request from now on; returns the one it replaces."""
        with self._changed:
            old, self._current = self._current, new
            self.loaded.append(new)
            return old

    def wait_unpinned(self, ctx: ServingContext, timeout: float) -> bool:
        """Wait until no request is pinned to `ctx` (True), or `timeout` seconds (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: ctx.pins <= 0, timeout)

    def forget(self, ctx: ServingContext) -> None:
        with self._changed:
            self.loaded = [c for c in self.loaded if c is not ctx]


class PinContext:
    """ASGI middleware: pins each HTTP request to the current context for its whole life (streams included)
    and adds that context's `x-tuneforge-model-version` to its response (a gateway's cache keys on it)."""

    def __init__(self, app, live: LiveContext) -> None:
        self.app, self.live = app, live

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = self.live.pin()
        scope[PIN_KEY] = ctx
        header = (b"x-tuneforge-model-version", ctx.version.encode()) if ctx.version else None

        async def with_header(message: dict) -> None:
            if header is not None and message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, with_header)
        finally:
            self.live.unpin(ctx)
