"""Crash-safe training checkpoints: atomic, verified, the newest K kept, exact resume.

A checkpoint is a `checkpoint` artifact (`core/artifacts.py`): written to a temporary folder,
fsynced, sealed with per-file sha256 and renamed into place, so a `kill -9` during a save leaves
only a `.tmp-` folder that is swept away later, and a file damaged afterwards fails verification
and is skipped for the previous checkpoint. It holds the trainable tensors, the optimizer and
scheduler states, every RNG state, the data position (epoch, micro-batch) and the history so far.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import create_artifact, load_artifact
from tuneforge.core.config import flatten
from tuneforge.core.errors import ArtifactError, TrainError
from tuneforge.core.progress import console

PREFIX = "step-"
# Fields that may change between a run and its resume without changing the maths.
RESUMABLE_CHANGES = ("checkpoint_every", "keep_checkpoints", "tracking", "search", "memory_limit_gb", "eval_every",
                     "early_stopping_patience", "early_stopping_min_delta")


@dataclass
class TrainState:
    """Where training is: everything besides tensors that resume needs."""

    step: int = 0
    epoch: int = 0
    micro: int = 0  # next micro-batch index within `epoch`
    tokens_seen: int = 0
    target_tokens_seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False


def checkpoint_dir(output: str | Path) -> Path:
    """Checkpoints of the run writing `output` live next to it: `<output>.checkpoints/`."""
    output = Path(output).absolute()
    return output.parent / f"{output.name}.checkpoints"


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(root: Path, state: TrainState, tensors: dict[str, Any], optimizer, scheduler,
                    fingerprint: dict[str, Any], best: dict[str, Any] | None, keep: int) -> Path:
    """Write checkpoint `step-N` atomically, then delete all but the newest `keep`.

    A failed write (disk full, …) leaves the previous checkpoints untouched and raises TrainError.
    """
    from safetensors.torch import save

    dest = root / f"{PREFIX}{state.step:08d}"
    try:
        with create_artifact(dest, "checkpoint", config=fingerprint) as writer:
            (writer.path / "trainable.safetensors").write_bytes(save(tensors))
            if best is not None:
                (writer.path / "best.safetensors").write_bytes(save(best))
            (writer.path / "optimizer.pt").write_bytes(_torch_bytes(optimizer.state_dict()))
            (writer.path / "scheduler.pt").write_bytes(_torch_bytes(scheduler.state_dict()))
            (writer.path / "rng.pt").write_bytes(_torch_bytes(_rng_state()))
            (writer.path / "state.json").write_text(json.dumps(asdict(state)) + "\n")
            writer.extra["step"] = state.step
    except OSError as exc:
        previous = latest_step(root)
        kept = f"checkpoint {previous} is intact" if previous is not None else "no earlier checkpoint exists"
        reason = "the disk is full" if exc.errno == errno.ENOSPC else f"{type(exc).__name__}: {exc}"
        raise TrainError(f"could not save checkpoint step {state.step} to {dest}: {reason}; {kept}. "
                         "Free space and rerun with --resume.") from exc
    for old in _step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_step(root: Path) -> int | None:
    dirs = _step_dirs(root)
    return int(dirs[-1].name[len(PREFIX):]) if dirs else None


def sweep_partial(root: Path) -> None:
    """Remove temporary folders of saves that were interrupted."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


@dataclass
class Restored:
    path: Path
    state: TrainState
    tensors: dict[str, Any]
    best: dict[str, Any] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    fingerprint: dict[str, Any]


def load_latest(root: Path) -> Restored | None:
    """The newest checkpoint that verifies; damaged ones are reported and skipped."""
    import torch
    from safetensors.torch import load_file

    sweep_partial(root)
    for path in reversed(_step_dirs(root)):
        try:
            artifact = load_artifact(path, kind="checkpoint")
        except ArtifactError as exc:
            console.print(f"[yellow]skipping damaged checkpoint[/]: {exc}")
            continue
        best_file = path / "best.safetensors"
        return Restored(
            path=path,
            state=TrainState(**json.loads((path / "state.json").read_text())),
            tensors=load_file(str(path / "trainable.safetensors")),
            best=load_file(str(best_file)) if best_file.is_file() else None,
            optimizer=torch.load(path / "optimizer.pt", weights_only=False),
            scheduler=torch.load(path / "scheduler.pt", weights_only=False),
            rng=torch.load(path / "rng.pt", weights_only=False),
            fingerprint=artifact.config,
        )
    return None


def restore_rng(restored: Restored) -> None:
    _set_rng_state(restored.rng)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fields that differ between the checkpoint's run and this one, ignoring harmless ones."""
    before, after = flatten(saved), flatten(current)
    ignored = tuple(f"train.{name}" for name in RESUMABLE_CHANGES)
    changes = []
    for key in sorted(set(before) | set(after)):
        if key.startswith(ignored):
            continue
        if before.get(key) != after.get(key):
            changes.append(f"{key}: {before.get(key)!r} → {after.get(key)!r}")
    return changes
