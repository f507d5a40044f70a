"""The native engine: a loop thread that schedules, runs and samples one step at a time.

Requests come in from any thread (`submit`, `abort`, `call`); the loop applies them between steps,
so the scheduler and the cache are only ever touched by the loop. Each request's output goes to
its `sink` (a callable) as `StreamDelta`s: text as it is produced, then a last delta with the
finish reason and token counts. A watchdog thread restarts a loop that died or is stuck in a step,
failing that loop's requests with an error delta.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuneforge.core.config import ServeConfig
from tuneforge.core.progress import console
from tuneforge.models.chat_template import stop_strings
from tuneforge.models.generate import SamplingParams
from tuneforge.serve.engine.detokenizer import Detokenizer
from tuneforge.serve.engine.grammar import GrammarCache
from tuneforge.serve.engine.protocol import Capabilities, Runner
from tuneforge.serve.engine.runner import ModelRunner
from tuneforge.serve.engine.sampler import RowFailure, Sampled, SampleState, sample
from tuneforge.serve.engine.scheduler import Chunk, Scheduler, SchedulerOutput, Sequence, Status


@dataclass
class StreamDelta:
    """A piece of output; the last one carries finish_reason (or error) and token counts."""

    text: str
    finish_reason: str | None = None  # stop | length | abort | timeout | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] | None = None  # last delta: all generated ids
    logprobs: list[Sampled] = field(default_factory=list)  # one per token this delta covers
    error: str | None = None
    status: int | None = None  # with finish_reason error: 400 the request's own fault, 500 (or None) the engine's


def _serve_default(name: str) -> Any:
    return ServeConfig.model_fields[name].default


@dataclass
class EngineLimits:
    """The engine's sizes and timeouts: the `serve:` fields of the same names, defaults included."""

    max_num_seqs: int = _serve_default("max_num_seqs")
    max_model_len: int = _serve_default("max_model_len")
    max_num_batched_tokens: int = _serve_default("max_num_batched_tokens")
    stuck_timeout: float = _serve_default("stuck_timeout")  # a step longer than this is a stuck engine

    @classmethod
    def of(cls, cfg: ServeConfig) -> EngineLimits:
        return cls(cfg.max_num_seqs, cfg.max_model_len, cfg.max_num_batched_tokens, cfg.stuck_timeout)


@dataclass
class _Request:
    seq: Sequence
    state: SampleState
    sink: Callable[[StreamDelta], None]
    detok: Detokenizer
    deadline: float | None
    internal: bool = False
    arrival: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None
    pending: list[Sampled] = field(default_factory=list)


class Engine:
    """Continuous batching over one model: many concurrent requests share every forward pass."""

    def __init__(self, loaded, limits: EngineLimits | None = None, metrics=None, model_name: str = "model",
                 runner: Runner | None = None) -> None:
        """`runner` defaults to the native ModelRunner over `loaded.model`; another backend passes its own
        (see `protocol.Runner`). A runner that runs fewer sequences at once than `limits` asks gets fewer."""
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        limits = limits or EngineLimits()
        if runner is not None and runner.capabilities.max_num_seqs is not None:
            limits = replace(limits, max_num_seqs=min(limits.max_num_seqs, runner.capabilities.max_num_seqs))
        self.limits = limits
        self.runner: Runner = runner or ModelRunner.for_model(loaded.model, limits.max_num_seqs, limits.max_model_len)
        self.max_context = min(self.limits.max_model_len, int(self.runner.context))
        self.metrics = metrics
        self.model_name = model_name
        # set by the server: adapters must name one of these (the served weights, or the float weights a
        # quantized base stands for)
        self.base_fingerprints: list[str] = []
        self.eos_ids, self.stops = self._ends()
        # structured outputs (issue 21): compiled grammars by constraint, shared by every request
        self.grammars = GrammarCache(self.tokenizer, getattr(getattr(loaded.model, "config", None), "vocab_size", None))
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._ids = itertools.count()
        self._requests: dict[str, _Request] = {}
        self._generation = 0
        self._fault: str | None = None
        self.step_started: float | None = None  # monotonic time the current step began; None between steps
        self.heartbeat = time.monotonic()
        self.restarts = 0
        self._stop = threading.Event()
        self._scheduler = self._new_scheduler()
        self._thread: threading.Thread | None = None
        self._handover: tuple[threading.Thread, threading.Event] | None = None  # adopt_loop's request
        self._watchdog: threading.Thread | None = None
        self._generator: Any = None

    # ---- set-up --------------------------------------------------------------------------------
    def _ends(self) -> tuple[frozenset[int], list[str]]:
        """Token ids that end a turn (EOS, chat-template stops that are one special token) and the stop
        strings left to match in text (special tokens never appear in decoded text)."""
        ids, strings = {self.tokenizer.eos_token_id}, []
        for text in stop_strings(self.tokenizer):
            token = self.tokenizer.convert_tokens_to_ids(text)
            if isinstance(token, int) and token != self.tokenizer.unk_token_id:
                ids.add(token)
            else:
                strings.append(text)
        return frozenset(i for i in ids if i is not None), strings

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(self.limits.max_num_seqs, self.max_context, self.limits.max_num_batched_tokens)

    @property
    def cache_bytes(self) -> int:
        return self.runner.cache.nbytes

    def start(self, loop_in_thread: bool = True) -> Engine:
        """Start the watchdog and, by default, the loop on its own thread.

        With `loop_in_thread=False` the caller runs the loop with `run_loop()` on the main thread:
        measured 1.3-1.5× faster steps on CPU than on a secondary thread (each thread gets its own
        OpenMP team; the main one's is the one PyTorch tuned). `tuneforge serve` does this and runs
        the HTTP server on a thread instead.
        """
        import torch

        self._generator = torch.Generator(device=self.runner.device)
        self._generator.seed()
        if loop_in_thread:
            self._start_loop()
        else:
            self._generation += 1
            self._thread = threading.main_thread()
        self._watchdog = threading.Thread(target=self._watch, name="tuneforge-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def run_loop(self) -> None:
        """Run the engine loop on the calling thread until `shutdown()` (see `start(loop_in_thread=False)`).

        If the watchdog replaced this loop (it was stuck), the replacement runs on its own thread and
        this call just waits for shutdown."""
        self._loop(self._generation)
        self._stop.wait()

    def adopt_loop(self) -> None:
        """Move the loop from its own thread onto the calling thread, between two steps, and run it here
        until `shutdown()`. `tuneforge serve` calls it on the main thread for a version swapped in live (it
        had to start on a thread, beside the version it replaced), to get the main thread's faster steps."""
        if self._thread is threading.current_thread():
            self.run_loop()
            return
        ready = threading.Event()
        self._handover = (threading.current_thread(), ready)
        self._wake.set()
        while not ready.wait(0.5):  # the loop hands over at its next iteration, never inside a step
            if self._stop.is_set():
                return
        self.run_loop()

    @property
    def stopped(self) -> bool:
        """`shutdown()` was called."""
        return self._stop.is_set()

    def _hand_over(self) -> None:
        """On the loop thread, between steps: the next loop is the adopting thread's (see `adopt_loop`)."""
        assert self._handover is not None
        target, ready = self._handover
        self._handover = None
        self._generation += 1  # this loop ends; the watchdog now watches `target`
        self.heartbeat = time.monotonic()
        self._thread = target
        ready.set()

    def _start_loop(self) -> None:
        self._generation += 1
        self.heartbeat = time.monotonic()
        self.step_started = None
        self._thread = threading.Thread(target=self._loop, args=(self._generation,), name="tuneforge-engine",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread not in (threading.current_thread(), threading.main_thread()):
            thread.join(timeout=5)
        close = getattr(self.runner, "close", None)
        if close is not None and (thread is None or not thread.is_alive() or thread is threading.current_thread()):
            close()

    # ---- requests in ---------------------------------------------------------------------------
    def prepare(self, params: SamplingParams) -> None:
        """Compile (and cache) what `params` needs before it is submitted: its structured output's grammar.
        Blocking: call it off the event loop and off the engine loop. Raises `GrammarError` (a ValueError)
        naming what is wrong with the constraint."""
        if params.guided is not None:
            self.grammars.compile(params.guided)

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[StreamDelta], None],
               adapter: str | None = None, timeout: float | None = None, internal: bool = False) -> str:
        """Queue a generation; returns its request id. `timeout` (seconds) bounds its whole life.

        `internal` requests (health self-tests) are left out of the metrics."""
        rid = f"req-{next(self._ids)}"
        stops = [*self.stops, *params.stop]
        ends = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_ids)
        seq = Sequence(rid, list(prompt_ids), params.max_new_tokens, adapter, stop_token_ids=ends)
        deadline = time.monotonic() + timeout if timeout else None
        matcher = self.grammars.matcher(params.guided) if params.guided is not None else None  # issue 21
        request = _Request(seq, SampleState.create(params, self.runner.device, matcher), sink,
                           Detokenizer(self.tokenizer, stops), deadline, internal=internal)
        self._inbox.put(("add", request))
        self._wake.set()
        return rid

    def abort(self, request_id: str) -> None:
        """Cancel a request; its slot is freed before the next step."""
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def stream(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
               ) -> Iterator[StreamDelta]:
        """Blocking helper for scripts and the terminal chat: the deltas of one generation."""
        deltas: queue.SimpleQueue[StreamDelta] = queue.SimpleQueue()
        rid = self.submit(prompt_ids, params, deltas.put, adapter)
        try:
            while True:
                delta = deltas.get()
                yield delta
                if delta.finish_reason:
                    return
        finally:
            self.abort(rid)

    def abort_all(self) -> None:
        """Cancel every request in flight (drain timeout)."""
        self._inbox.put(("abort_all", None))
        self._wake.set()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the loop thread between steps (model access that must not race a step)."""
        future: Future = Future()
        self._inbox.put(("call", (fn, future)))
        self._wake.set()
        return future

    def inject_fault(self, kind: str) -> None:
        """Testing: the next step raises (`raise`) or hangs past the watchdog's timeout (`hang`)."""
        if kind not in ("raise", "hang"):
            raise ValueError("fault kind is raise or hang")
        self._fault = kind
        self._wake.set()

    # ---- adapters (call on the loop thread: `engine.call(lambda: engine.load_adapter(...))`) --------
    def adapter_names(self) -> list[str]:
        return list(self.runner.lora.names)

    def load_adapter(self, name: str, path: str) -> None:
        """Serve LoRA adapter artifact `path` as model `name`; its base must be the served model."""
        from tuneforge.core.artifacts import is_artifact, load_artifact

        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"{path}: no such adapter folder")
        if is_artifact(folder):
            manifest = load_artifact(folder).manifest
            expected = manifest.get("base_fingerprint")
            if expected and self.base_fingerprints and expected not in self.base_fingerprints:
                raise ValueError(f"{path}: trained on base {manifest.get('base_model')} (fingerprint {expected}), "
                                 f"not the served model (fingerprint {', '.join(self.base_fingerprints)})")
        self.runner.lora.load(name, folder, self.runner.dtype, self.runner.device)

    def unload_adapter(self, name: str) -> None:
        for request in list(self._requests.values()):
            if request.seq.adapter == name:
                self._finish(request, "abort")
        self.runner.lora.unload(name)

    def prompt_logprobs(self, ids: list[int], top: int, adapter: str | None = None
                        ) -> tuple[list[float | None], list[dict[int, float] | None]]:
        """Score a prompt's own tokens (call on the loop thread: `engine.call(...)`); see `Runner.score`."""
        return self.runner.score(ids, top, adapter)

    # ---- state for the API ---------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return self.runner.capabilities

    @property
    def max_num_seqs(self) -> int:
        return self.limits.max_num_seqs

    @property
    def num_running(self) -> int:
        return len(self._scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self._scheduler.waiting) + self._inbox.qsize()

    def cache_usage(self) -> float:
        return 1.0 - self._scheduler.free_slots / self.limits.max_num_seqs

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stuck()

    def _stuck(self) -> bool:
        started = self.step_started
        return started is not None and time.monotonic() - started > self.limits.stuck_timeout

    # ---- the loop ------------------------------------------------------------------------------
    def _loop(self, generation: int) -> None:
        while not self._stop.is_set() and generation == self._generation:
            if self._handover is not None:
                self._hand_over()
                return
            self.heartbeat = time.monotonic()
            self._drain_inbox()
            if not self._scheduler.has_work():
                self._update_gauges()
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._step(generation)
            except Exception as exc:  # a failed step fails its requests, not the server
                if generation != self._generation:
                    return
                console.print(f"[red]engine step failed:[/red] {type(exc).__name__}: {exc}")
                self._fail_all(f"engine error: {type(exc).__name__}: {exc}")
            finally:
                self.step_started = None

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    self._scheduler.add(item.seq)
                except ValueError as exc:
                    item.sink(StreamDelta("", "error", error=str(exc), status=400))
                    continue
                self._requests[item.seq.request_id] = item
            elif kind == "abort":
                request = self._requests.get(item)
                if request is not None:
                    self._finish(request, "abort")
            elif kind == "abort_all":
                for request in list(self._requests.values()):
                    self._finish(request, "abort")
            elif kind == "call":
                fn, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # handed to the caller
                        future.set_exception(exc)

    def _step(self, generation: int) -> None:
        self.step_started = time.monotonic()
        if self._fault:
            fault, self._fault = self._fault, None
            if fault == "hang":
                time.sleep(self.limits.stuck_timeout * 3 + 1)
                return
            raise RuntimeError("injected engine fault")
        now = time.monotonic()
        for request in list(self._requests.values()):
            if request.deadline is not None and now > request.deadline:
                self._finish(request, "timeout")
        plan = self._scheduler.schedule()
        if not plan:
            return
        for seq in plan.admitted:
            if self.metrics is not None and seq.first_scheduled is not None and not self._requests[
                    seq.request_id].internal:
                waited = seq.first_scheduled - self._requests[seq.request_id].arrival
                self.metrics.observe_queue(self._labels(seq), waited)
        plan, logits = self._forward_isolating(plan)
        if generation != self._generation:  # the watchdog gave up on this loop meanwhile
            return
        chunks = [c for c in plan.chunks if c.samples]
        requests = [self._requests[c.seq.request_id] for c in chunks]
        picks = sample(logits, [r.state for r in requests],
                       [(r.seq.prompt_ids, r.seq.output_ids) for r in requests], self._generator,
                       self.grammars) if chunks else []
        sampled = {}
        for request, pick in zip(requests, picks, strict=True):
            if isinstance(pick, RowFailure):
                self._fail(request, pick.message, pick.status)
            else:
                sampled[request.seq.request_id] = pick.token
                request.pending.append(pick)
        self._scheduler.update(plan, sampled)
        self._advance_grammars(requests, sampled)
        now = time.monotonic()
        for request in requests:
            if request.seq.request_id in sampled:
                self._emit(request, now)
        self._update_gauges()

    def _advance_grammars(self, requests: list[_Request], sampled: dict[str, int]) -> None:
        """Feed each constrained sequence's new token to its grammar; one the grammar cannot extend any
        further is complete and ends with `stop` (even on its last allowed token: the output is whole)."""
        for request in requests:
            matcher, seq = request.state.matcher, request.seq
            if matcher is None or seq.request_id not in sampled:
                continue
            if not matcher.consume_token(sampled[seq.request_id]):
                del sampled[seq.request_id]  # ended here: nothing more to emit
                self._fail(request, f"structured output: {matcher.get_error()}", 500)
            elif matcher.is_stopped():
                if seq.status is Status.FINISHED:
                    seq.finish_reason = "stop"
                else:
                    self._scheduler.finish(seq, "stop")

    def _forward_isolating(self, plan: SchedulerOutput) -> tuple[SchedulerOutput, Any]:
        """The step's logits; if the forward pass raises, the chunks that make it raise are found by
        bisection (each half run again on its own), their requests fail alone, and the step goes on with
        the others. Returns the plan that ran and its logits (rows of its sampling chunks, in order).

        Re-running a chunk rewrites the same cache positions with the same values, so a retry is exact."""
        try:
            return plan, self.runner.forward(plan)
        except Exception as exc:  # bisect below; a genuine engine fault ends up failing every chunk alone
            if len(plan.chunks) == 1:
                self._fail(self._requests[plan.chunks[0].seq.request_id],
                           f"engine error: {type(exc).__name__}: {exc}", 500)
                return SchedulerOutput(), None
            console.print(f"[yellow]engine step failed ({type(exc).__name__}: {exc}); "
                          f"isolating the request(s) that cause it[/yellow]")
        chunks = plan.chunks
        half = len(chunks) // 2
        kept: list[Chunk] = []
        rows = []
        for part in (chunks[:half], chunks[half:]):
            ran, logits = self._forward_isolating(_subplan(plan, part))
            kept += ran.chunks
            if logits is not None and len(logits):
                rows.append(logits)
        survivors = _subplan(plan, kept)
        if not rows:
            return survivors, None
        import torch

        return survivors, torch.cat(rows)

    def _fail(self, request: _Request, message: str, status: int) -> None:
        """End one request with an error (status 400: its parameters; 500: an engine or model fault)."""
        console.print(f"[red]{request.seq.request_id} failed:[/red] {message}")
        self._finish(request, "error", message, status)

    def _emit(self, request: _Request, now: float) -> None:
        seq = request.seq
        output = seq.output_ids
        if seq.status is Status.FINISHED and output and output[-1] in seq.stop_token_ids:
            request.detok.add(output[:-1])
        else:
            request.detok.add(output)
        if request.detok.stopped and seq.status is not Status.FINISHED:
            self._scheduler.finish(seq, "stop")
        final = seq.status is Status.FINISHED
        text = request.detok.delta(final)
        if self.metrics is not None and (text or final) and seq.output_ids and not request.internal:
            labels = self._labels(seq)
            if request.first_token_at is None:
                self.metrics.observe_first_token(labels, now - request.arrival)
                request.first_token_at = now
            elif request.last_token_at is not None:
                self.metrics.observe_inter_token(labels, now - request.last_token_at)
            request.last_token_at = now
        if final:
            self._close(request, seq.finish_reason or "stop", text)
        elif text:
            request.sink(StreamDelta(text, logprobs=request.pending))
            request.pending = []

    def _finish(self, request: _Request, reason: str, error: str | None = None, status: int | None = None) -> None:
        self._scheduler.finish(request.seq, reason)
        self._close(request, reason, request.detok.delta(final=True), error, status)

    def _close(self, request: _Request, reason: str, text: str, error: str | None = None,
               status: int | None = None) -> None:
        seq = request.seq
        self._requests.pop(seq.request_id, None)
        if self.metrics is not None and not request.internal:
            self.metrics.observe_finished(self._labels(seq), reason, len(seq.prompt_ids), len(seq.output_ids),
                                          time.monotonic() - request.arrival)
        request.sink(StreamDelta(text, reason, len(seq.prompt_ids), len(seq.output_ids), list(seq.output_ids),
                                 request.pending, error, status))
        request.pending = []

    def _fail_all(self, message: str) -> None:
        """Reset: every request in flight ends with `error`, and a fresh scheduler (all slots free) takes over.

        State is swapped, not finished request by request, so the watchdog can call this while a stuck
        loop still holds the old scheduler."""
        old = self._requests
        self._requests = {}
        self._scheduler = self._new_scheduler()
        for request in old.values():
            request.seq.status = Status.FINISHED
            self._close(request, "error", "", message)
        self._update_gauges()

    def _labels(self, seq: Sequence) -> dict[str, str]:
        return {"model_name": self.model_name, "adapter": seq.adapter or ""}

    def _update_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.set_load(self.model_name, self.num_running, len(self._scheduler.waiting), self.cache_usage())

    # ---- the watchdog --------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            thread = self._thread
            dead = thread is not None and not thread.is_alive()
            if not dead and not self._stuck():
                continue
            why = "died" if dead else f"stuck in a step for over {self.limits.stuck_timeout:.0f} s"
            console.print(f"[red]watchdog: the engine loop {why}; restarting it[/red]")
            self._fail_all(f"engine restarted: the loop {why}")
            self.restarts += 1
            self._start_loop()


def _subplan(plan: SchedulerOutput, chunks: list[Chunk]) -> SchedulerOutput:
    """The part of `plan` made of `chunks` (decodes stay decodes, prefills prefills, plan order kept)."""
    keep = {id(c) for c in chunks}
    return SchedulerOutput([c for c in plan.decodes if id(c) in keep], [c for c in plan.prefills if id(c) in keep])
