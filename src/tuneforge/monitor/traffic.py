"""The traffic log drift monitoring reads: one JSON object per line, one answered request per object.

    {"ts": 1764690000.0, "prompt": "Where is my parcel?", "answer": "…", "guard_flags": []}

`prompt` is a string, or `messages` is an OpenAI chat list (its user turns are the prompt; system turns are
the deployment's, not the user's, and are left out). `answer` (the model's text) and `guard_flags` (names of
the guards that fired; [] = logged, none fired) are optional: without them the output signals are skipped.

`TrafficLog` writes such a file — `tuneforge serve` and `tuneforge gateway` do when their `traffic_log.path`
is set: opt-in, sampled (`sample_rate`), every text PII-scrubbed with `core.pii` before it touches the disk,
one `write` per line on an O_APPEND descriptor so that several workers (or processes) can share one file
without interleaving lines.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.core.config import default
from tuneforge.core.errors import DataError
from tuneforge.core.monitor_config import TrafficLogConfig
from tuneforge.core.pii import RowScrubber

log = logging.getLogger("tuneforge.monitor")


@dataclass
class Exchange:
    """One request as drift sees it: the user's text, the answer if logged, the guard flags if logged."""

    prompt: str
    answer: str | None = None
    guard_flags: list[str] | None = None


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content list."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The user turns of a chat, one per line."""
    return "\n".join(content_text(m.get("content")) for m in messages if m.get("role") == "user")


def answer_text(messages: list[dict[str, Any]]) -> str | None:
    """The assistant turns of a chat, one per line; None when it has none."""
    turns = [content_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    return "\n".join(turns) if turns else None


def exchange(record: Any, where: str) -> Exchange:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if isinstance(record.get("prompt"), str):
        prompt = record["prompt"]
    elif isinstance(record.get("messages"), list) and all(isinstance(m, dict) for m in record["messages"]):
        prompt = prompt_text(record["messages"])
    else:
        raise DataError(f"{where}: needs `prompt` (a string) or `messages` (a list of {{role, content}})")
    if not prompt.strip():
        raise DataError(f"{where}: the prompt is empty")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"{where}: `answer` must be a string, got {type(answer).__name__}")
    flags = record.get("guard_flags")
    if flags is not None and not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
        raise DataError(f"{where}: `guard_flags` must be a list of guard names")
    return Exchange(prompt, answer, flags)


def records(path: str | Path) -> list[tuple[str, Any]]:
    """(`file:line`, parsed JSON) of each non-blank line; a missing, empty or non-JSON file is an error naming
    the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such traffic file")
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not out:
        raise DataError(f"{path}: the file is empty (no requests logged)")
    return out


def read_traffic(path: str | Path) -> list[Exchange]:
    """Every request in a traffic JSONL; a missing, empty or malformed file is an error naming the file and line."""
    return [exchange(record, where) for where, record in records(path)]


class TrafficLog:
    """Appends a sampled, PII-scrubbed record of answered requests to a JSONL file (thread- and process-safe).

    `record` scrubs and writes in the caller's thread; `submit` hands the request to the log's own writer
    thread (what a server's event loop calls: scrubbing takes a regex pass per text), through a bounded
    queue — when the disk falls behind, records are dropped and counted (`dropped`), never waited for.
    A server decides `sampled()` when a request arrives, so unsampled requests collect nothing.
    """

    def __init__(self, path: str | Path, sample_rate: float | None = None, seed: int | None = None,
                 queue_size: int = 1024) -> None:
        sample_rate = default(TrafficLogConfig, "sample_rate") if sample_rate is None else sample_rate
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.dropped = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._queue: queue.Queue[tuple[tuple, dict] | None] = queue.Queue(queue_size)
        self._writer: threading.Thread | None = None

    @classmethod
    def of(cls, cfg: TrafficLogConfig) -> TrafficLog | None:
        """The log a server's `traffic_log` section asks for; None when it is off (no path)."""
        return None if cfg.path is None else cls(cfg.path, cfg.sample_rate)

    def sampled(self) -> bool:
        with self._lock:
            return self._random.random() < self.sample_rate

    def write(self, prompt: str | list[dict[str, Any]], answer: str | None = None,
              guard_flags: list[str] | None = None, **extra: Any) -> None:
        """Scrub and append one request now (no sampling). `extra` (model, route, …) is kept as is."""
        scrub = RowScrubber()  # one per request: placeholders are consistent between its prompt and answer
        text = prompt if isinstance(prompt, str) else prompt_text(prompt)
        row: dict[str, Any] = {"ts": round(time.time(), 3), **extra, "prompt": scrub(text)}
        if answer is not None:
            row["answer"] = scrub(answer)
        if guard_flags is not None:
            row["guard_flags"] = list(guard_flags)
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, data)

    def record(self, prompt: str | list[dict[str, Any]], answer: str | None = None,
               guard_flags: list[str] | None = None, **extra: Any) -> bool:
        """Log one request if sampled; True when it was written."""
        if not self.sampled():
            return False
        self.write(prompt, answer, guard_flags, **extra)
        return True

    def submit(self, prompt: str | list[dict[str, Any]], answer: str | None = None,
               guard_flags: list[str] | None = None, **extra: Any) -> bool:
        """`write` on the writer thread (no sampling: the caller sampled); False when the queue was full."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._drain, name="tuneforge-traffic-log", daemon=True)
                self._writer.start()
        try:
            self._queue.put_nowait(((prompt, answer, guard_flags), extra))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            args, extra = item
            try:
                self.write(*args, **extra)
            except Exception as exc:  # the log serves monitoring: a bad record must not stop the writer
                log.warning("traffic log: a record was not written: %s", exc)

    def close(self) -> None:
        """Write what was submitted, then close the file."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
