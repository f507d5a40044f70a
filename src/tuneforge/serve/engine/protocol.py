"""The contracts of the serving side: what the engine needs from a model runner, and what the HTTP layer
needs from a whole engine.

A *runner* computes logits for a step's plan against its own cache (the native `ModelRunner`, llama.cpp's
`LlamaCppRunner`); the native `Engine` schedules, samples and streams around any runner. A *whole engine*
(the native `Engine`, and the vLLM backend, which keeps its own scheduler and cache) is what the API
talks to. Backends declare what they can do in `Capabilities`; nothing is detected by looking inside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuneforge.models.generate import SamplingParams
from tuneforge.serve.engine.scheduler import SchedulerOutput


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do."""

    prompt_logprobs: bool = True  # score a prompt's own tokens (`echo` + `logprobs`)
    multi_lora: bool = True  # serve LoRA adapters per request
    max_num_seqs: int | None = None  # sequences it can run at once; None: as configured


class CacheInfo(Protocol):
    @property
    def nbytes(self) -> int: ...


class AdapterSet(Protocol):
    """The LoRA adapters a runner serves per request."""

    @property
    def names(self) -> list[str]: ...

    def load(self, name: str, folder: Path, dtype: Any, device: Any) -> None: ...

    def unload(self, name: str) -> None: ...


class Runner(Protocol):
    """One forward pass per step, over the plan's decodes and prefill chunks."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def device(self) -> Any: ...

    @property
    def dtype(self) -> Any: ...

    @property
    def context(self) -> int:
        """Tokens per sequence its cache holds."""
        ...

    @property
    def cache(self) -> CacheInfo: ...

    @property
    def lora(self) -> AdapterSet: ...

    def forward(self, plan: SchedulerOutput) -> Any:
        """Float32 logits, one row per chunk that samples, in plan order (decodes, then prefills)."""
        ...

    def score(self, ids: list[int], top: int, adapter: str | None = None
              ) -> tuple[list[float | None], list[dict[int, float] | None]]:
        """Each token's logprob given the ones before it (None for the first) and the top-`top` (with
        `capabilities.prompt_logprobs`)."""
        ...

    def close(self) -> None: ...


Sink = Callable[[Any], None]  # receives the engine's StreamDelta objects


class ServingEngine(Protocol):
    """A whole engine as the API uses it: requests in, deltas out through sinks, adapters, health."""

    metrics: Any  # the ServingMetrics it reports to (set by the app)

    @property
    def tokenizer(self) -> Any: ...

    @property
    def max_context(self) -> int: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def restarts(self) -> int: ...

    def prepare(self, params: SamplingParams) -> None:
        """Before `submit`, off the event loop: compile what `params` needs (a structured output's grammar,
        `params.guided`); raises ValueError saying what is wrong with it. A backend with its own
        structured outputs (vLLM) validates `params.guided` here and hands it on at submit."""
        ...

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Sink, adapter: str | None = None,
               timeout: float | None = None, internal: bool = False) -> str: ...

    def abort(self, request_id: str) -> None: ...

    def abort_all(self) -> None: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
               ) -> Iterator[Any]: ...

    def call(self, fn: Callable[[], Any]) -> Future: ...

    def prompt_logprobs(self, ids: list[int], top: int, adapter: str | None = None
                        ) -> tuple[list[float | None], list[dict[int, float] | None]]: ...

    def adapter_names(self) -> list[str]: ...

    def load_adapter(self, name: str, path: str) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def alive(self) -> bool: ...

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def max_num_seqs(self) -> int: ...

    def inject_fault(self, kind: str) -> None:
        """Testing (serve.debug_faults): make the next step raise or hang."""
        ...

    def shutdown(self) -> None: ...
