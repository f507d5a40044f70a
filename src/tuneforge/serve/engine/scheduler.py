"""The scheduler: sequences in, a plan for one model step out (vLLM's `schedule()` → `SchedulerOutput`).

Continuous batching: sequences join and leave the running set every step. Each step has a token
budget; running sequences are served first (a decode costs one token), then waiting ones are
admitted while a cache slot and budget remain. A prompt longer than the remaining budget is
prefilled in chunks over several steps, interleaved with the other sequences' decodes, so a long
prompt never stalls the streams already running.

Pure: no model, no tensors, no threads. The engine owns the locking.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from tuneforge.core.config import ServeConfig


class Status(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """One generation: its tokens, how many of them the cache holds, and where."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    adapter: str | None = None
    stop_token_ids: frozenset[int] = frozenset()
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # leading tokens whose keys/values are in the cache
    slot: int | None = None
    status: Status = Status.WAITING
    finish_reason: str | None = None  # stop | length | abort | error
    arrival: float = field(default_factory=time.monotonic)
    first_scheduled: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def token(self, position: int) -> int:
        n = len(self.prompt_ids)
        return self.prompt_ids[position] if position < n else self.output_ids[position - n]


@dataclass(frozen=True)
class Chunk:
    """Tokens [start, start + len(tokens)) of one sequence, computed this step."""

    seq: Sequence
    start: int
    tokens: list[int]
    samples: bool  # the chunk reaches the sequence's last token: the step samples its next one

    @classmethod
    def of(cls, seq: Sequence, start: int, n: int) -> Chunk:
        return cls(seq, start, [seq.token(p) for p in range(start, start + n)], start + n == seq.num_tokens)


@dataclass
class SchedulerOutput:
    """The plan for one step: decodes (one token each) and prefill chunks."""

    decodes: list[Chunk] = field(default_factory=list)
    prefills: list[Chunk] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)

    @property
    def chunks(self) -> list[Chunk]:
        return self.decodes + self.prefills

    @property
    def num_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.chunks)

    def __bool__(self) -> bool:
        return bool(self.decodes or self.prefills)


class Scheduler:
    """Admission, slot assignment and per-step token budgets.

    `num_slots` cache slots of `max_model_len` tokens each: a sequence admitted into a slot can
    always run to `max_tokens` (callers check prompt + max_tokens ≤ max_model_len), so nothing is
    ever preempted. `max_num_batched_tokens` bounds a step's work (and so inter-token latency).
    """

    def __init__(self, num_slots: int, max_model_len: int,
                 max_num_batched_tokens: int = ServeConfig.model_fields["max_num_batched_tokens"].default) -> None:
        if num_slots < 1 or max_model_len < 2 or max_num_batched_tokens < 1:
            raise ValueError("num_slots ≥ 1, max_model_len ≥ 2 and max_num_batched_tokens ≥ 1")
        self.num_slots = num_slots
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots = list(range(num_slots))

    # ---- requests in and out -------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        if not seq.prompt_ids or seq.max_tokens < 1:
            raise ValueError(f"{seq.request_id}: needs a prompt and max_tokens ≥ 1")
        if seq.num_tokens + seq.max_tokens > self.max_model_len:
            raise ValueError(f"{seq.request_id}: {len(seq.prompt_ids)} prompt tokens + max_tokens "
                             f"{seq.max_tokens} exceed max_model_len {self.max_model_len}")
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a sequence (stop, length, abort, error) and free its slot at once."""
        if seq.status is Status.FINISHED:
            return
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        if seq.slot is not None:
            self._free_slots.append(seq.slot)
            self._free_slots.sort()  # lowest slots first keeps the occupied range short
            seq.slot = None
        seq.status = Status.FINISHED
        seq.finish_reason = reason

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    # ---- one step ------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        for seq in self.running:  # decodes and unfinished prefills, oldest first
            if budget == 0:
                break
            n = min(seq.num_tokens - seq.num_computed, budget)
            if n <= 0:
                continue
            chunk = Chunk.of(seq, seq.num_computed, n)
            (out.decodes if n == 1 and seq.num_computed >= len(seq.prompt_ids) else out.prefills).append(chunk)
            budget -= n
        while self.waiting and self._free_slots and budget > 0:
            seq = self.waiting.popleft()
            seq.slot = self._free_slots.pop(0)
            seq.status = Status.RUNNING
            seq.first_scheduled = time.monotonic()
            self.running.append(seq)
            out.admitted.append(seq)
            n = min(seq.num_tokens, budget)
            out.prefills.append(Chunk.of(seq, 0, n))
            budget -= n
        return out

    def update(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[Sequence]:
        """Record a step: computed positions advance; sampled tokens are appended.

        `sampled` maps request ids to the token sampled for each chunk that `samples`. Returns the
        sequences that got a token; those that hit a stop token or max_tokens are finished here.
        """
        got = []
        for chunk in out.chunks:
            seq = chunk.seq
            if seq.status is not Status.RUNNING:  # aborted while the step ran
                continue
            seq.num_computed = chunk.start + len(chunk.tokens)
            if not chunk.samples:
                continue
            token = sampled[seq.request_id]
            seq.output_ids.append(token)
            got.append(seq)
            if token in seq.stop_token_ids:
                self.finish(seq, "stop")
            elif len(seq.output_ids) >= seq.max_tokens:
                self.finish(seq, "length")
        return got
