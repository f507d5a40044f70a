"""What every endpoint shares: the engine, the served names, admission, early limits, tokenizing off the
event loop, and running admitted jobs on the engine while watching the client.

Admission happens before any response header: a request either gets a place (running or waiting,
bounded by `max_num_seqs + max_waiting`) or a 429 (503 while draining) with `Retry-After`. A client
that disconnects, streamed or not, has its request aborted and its cache slot freed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request

from tuneforge.core.config import ServeConfig
from tuneforge.models.generate import SamplingParams, render_prompt
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.serve.api.errors import APIError, engine_error
from tuneforge.serve.api.limits import PromptBound
from tuneforge.serve.engine.engine import StreamDelta
from tuneforge.serve.engine.protocol import ServingEngine
from tuneforge.serve.engine.sampler import Sampled

Job = tuple[list[int], SamplingParams]


@dataclass
class ServerState:
    """What the handlers share: admitted requests, draining, readiness."""

    in_flight: int = 0
    draining: bool = False
    ready_at: float = 0.0  # monotonic time of the last successful self-test


class Places:
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
                 metrics: ServingMetrics) -> None:
        self.engine, self.served_model_name, self.cfg, self.metrics = engine, served_model_name, cfg, metrics
        self.state = ServerState()
        self.started = 0  # unix time the app was built (the models' `created`)
        self.version: str | None = None  # the served artifact's content hash, when it is one
        self.capacity = engine.max_num_seqs + cfg.max_waiting
        self.bound = PromptBound.of(engine.tokenizer, engine.max_context)
        self.vocab_size = len(engine.tokenizer)
        self.keys = cfg.keys()  # (api key, admin key), read once
        # tokenizing and chat-template rendering run here, never on the event loop (a long prompt takes seconds)
        self._tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tuneforge-tokenize")

    @staticmethod
    def of(request: Request) -> ServingContext:
        """FastAPI dependency: the context of the app serving `request`."""
        return request.app.state.context

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
        if self.state.in_flight + sequences > self.capacity:
            self.metrics.rejected.labels(model_name=name, status="429").inc()
            raise APIError(429, f"the server is at capacity ({self.engine.max_num_seqs} running, "
                           f"{self.cfg.max_waiting} waiting); retry shortly", code="rate_limit_exceeded",
                           type_="rate_limit_error")
        return Places(self.state, sequences)

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
            async for _, delta in self.run([(ids, SamplingParams(max_new_tokens=1))], None, Places(self.state, 1),
                                           internal=True):
                if delta.finish_reason:
                    return delta
        raise RuntimeError("no final delta")

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


Context = Annotated[ServingContext, Depends(ServingContext.of)]  # a route's parameter: the app's context
