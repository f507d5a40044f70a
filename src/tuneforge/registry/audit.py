"""The audit log: an append-only JSON-lines file, each entry hash-chained to the one before it.

An entry records who, when, what (action), on which model/version/alias, from and to, the gate results,
the reason and whether it was forced. Its `hash` is the sha256 of its other fields, `prev_hash` among
them, so editing a line breaks that line's hash and deleting one breaks the next line's `seq` and
`prev_hash`. Rewriting the whole tail consistently is caught by the head each model keeps in the
registry backend (`tuneforge.audit_head` = "seq:hash"), which lives apart from the file (in MLflow, on
another machine). Appends hold an exclusive `flock`, so concurrent writers keep one chain.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of an entry's fields except `hash`, canonically serialized."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass
class Verdict:
    """What `verify` found: the entries read, and the first bad one (None when the chain holds)."""

    entries: int
    bad_seq: int | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


class AuditLog:
    """The hash-chained log at `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, user: str, action: str, model: str, **details: Any) -> dict[str, Any]:
        """Append one entry (seq, at, user, action, model, details…, prev_hash, hash) and return it."""
        if not user or not user.strip():
            raise ValueError("audit entries need a non-blank user")
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                lines = [line for line in handle.read().splitlines() if line.strip()]
                last = json.loads(lines[-1]) if lines else None
                entry = {"seq": (last["seq"] + 1) if last else 1,
                         "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
                         "user": user, "action": action, "model": model, **details,
                         "prev_hash": last["hash"] if last else GENESIS}
                entry["hash"] = entry_hash(entry)
                handle.write(json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entry

    def entries(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every entry (of `model`), oldest first; a line that is not JSON is skipped (verify names it)."""
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (model is None or entry.get("model") == model):
                found.append(entry)
        return found

    def verify(self, heads: dict[str, str] | None = None) -> Verdict:
        """Check the chain line by line, then each model's head (`heads`: model → "seq:hash" from the backend)."""
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        prev, by_seq = GENESIS, {}
        for number, line in enumerate(lines, start=1):
            problem = _check_line(number, line, prev)
            if problem:
                return Verdict(entries=number - 1, bad_seq=number, problem=problem)
            entry = json.loads(line)
            prev, by_seq[number] = entry["hash"], entry
        verdict = Verdict(entries=len(lines))
        for model, head in sorted((heads or {}).items()):
            seq_text, _, digest = head.partition(":")
            seq = int(seq_text) if seq_text.isdigit() else -1
            entry = by_seq.get(seq)
            if entry is None:
                return Verdict(len(lines), seq, f"entry {seq} (the last one the registry recorded for model "
                                                f"{model!r}) is missing: the log was truncated")
            if entry["hash"] != digest or entry.get("model") != model:
                return Verdict(len(lines), seq, f"entry {seq} is not the one the registry recorded for model "
                                                f"{model!r} (hash {digest[:12]}…): the log was rewritten from "
                                                "there on")
            later = [e["seq"] for e in by_seq.values() if e["seq"] > seq and e.get("model") == model]
            if later:
                verdict.warnings.append(f"model {model!r}: entries {later} come after the head the registry "
                                        f"recorded (seq {seq}); written by a process that could not update it")
        return verdict


def _check_line(number: int, line: str, prev: str) -> str | None:
    """Why line `number` breaks the chain, or None."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return f"entry {number} (line {number}) is not valid JSON: it was edited"
    if not isinstance(entry, dict) or not {"seq", "hash", "prev_hash"} <= set(entry):
        return f"entry {number} (line {number}) lacks seq/hash/prev_hash: it was edited"
    if entry["seq"] != number:
        return (f"entry {number} is missing: line {number} holds entry {entry['seq']} "
                "(an entry was deleted or the lines reordered)")
    if entry_hash(entry) != entry["hash"]:
        who = f"{entry.get('action')} by {entry.get('user')} at {entry.get('at')}"
        return f"entry {number} ({who}) was edited: its content no longer matches its hash"
    if entry["prev_hash"] != prev:
        return f"entry {number} does not chain to entry {number - 1} (prev_hash differs): the log was rewritten"
    return None
