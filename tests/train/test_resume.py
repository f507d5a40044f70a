"""Crash safety for real: kill -9 a training process at random points (also mid-save), resume, compare.

The interrupted-and-resumed run must produce the same loss curve and weights as a run never
interrupted, and no damaged checkpoint may ever be loaded.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.core.errors import TrainError
from tuneforge.train import checkpoint as ckpt

KILLS = int(os.environ.get("TUNEFORGE_KILL_TRIALS", "6"))
ARGS = ["--set", "train.epochs=24", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=3",
        "--set", "train.keep_checkpoints=2", "--set", "train.lora.dropout=0.1", "--set", "train.eval_every=10"]


def _command(dataset: Path, config: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge", "train", str(dataset), "-c", str(config), "-o", str(output),
            *ARGS, *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]


def _wait_then_kill(proc: subprocess.Popen, root: Path, rng: random.Random, mid_save: bool) -> str | None:
    """Kill once the run has made progress: at a random moment, or the instant a save is in flight.

    A mid-save attempt that sees two checkpoints complete without catching one in flight kills at
    that moment instead, so every attempt kills before the run can finish. Returns the kind of kill.
    """
    start = ckpt.latest_step(root) or 0
    target = start + rng.randint(1, 4) * 3
    while proc.poll() is None:
        if mid_save and root.is_dir() and any(".tmp-" in p.name for p in root.iterdir()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "mid-save"
        latest = ckpt.latest_step(root) or 0
        if latest >= (start + 6 if mid_save else target):
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "random"
        time.sleep(0.0005 if mid_save else 0.01)
    return None


@pytest.mark.timeout(600)
def test_kill9_resume_matches_uninterrupted_run(tiny_dataset, tmp_path):
    config = Path(__file__).parents[1] / "assets" / "pipeline.yaml"
    reference = tmp_path / "reference"
    subprocess.run(_command(tiny_dataset.path, config, reference), check=True, env=_env(),
                   capture_output=True)

    output = tmp_path / "resumed"
    root = ckpt.checkpoint_dir(output)
    rng = random.Random(1234)
    kills = mid_save_kills = 0
    for attempt in range(KILLS * 3):
        proc = subprocess.Popen(_command(tiny_dataset.path, config, output, "--resume"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kind = _wait_then_kill(proc, root, rng, mid_save=attempt % 2 == 1) if kills < KILLS else None
        if kind is not None:
            kills += 1
            mid_save_kills += kind == "mid-save"
            # Every checkpoint left behind is either complete and verified, or skipped on load.
            restored = ckpt.load_latest(root)
            assert restored is None or restored.state.step == ckpt.latest_step(root)
            continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        break
    assert kills == KILLS and mid_save_kills >= 1

    ours, theirs = _history(output), _history(reference)
    assert [h["step"] for h in ours] == [h["step"] for h in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    got = load_file(str(output / "adapter_model.safetensors"))
    want = load_file(str(reference / "adapter_model.safetensors"))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_damaged_checkpoint_is_skipped_and_changed_config_refused(tiny_config, tiny_dataset, tmp_path):
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3})
    output = tmp_path / "run"
    train(tiny_dataset, tiny_config.model, cfg, output)
    root = ckpt.checkpoint_dir(output)
    assert [p.name for p in sorted(root.iterdir())] == ["step-00000002", "step-00000004"]
    newest = root / "step-00000004" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8] + b"\0" * 8)
    restored = ckpt.load_latest(root)
    assert restored is not None and restored.state.step == 2

    changed = cfg.model_copy(update={"lr": 0.5})
    with pytest.raises(TrainError, match=r"train\.lr: 0\.01 → 0\.5"):
        train(tiny_dataset, tiny_config.model, changed, output, resume=True)


def test_disk_full_during_save_keeps_previous_checkpoint(tiny_config, tiny_dataset, tmp_path, monkeypatch):
    import errno

    from tuneforge.train.loop import train

    real = ckpt._torch_bytes
    calls = {"n": 0}

    def flaky(obj):
        calls["n"] += 1
        if calls["n"] > 3:  # the second checkpoint (3 torch files each) runs out of space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj)

    monkeypatch.setattr(ckpt, "_torch_bytes", flaky)
    cfg = tiny_config.train.model_copy(update={"max_steps": 6, "checkpoint_every": 2})
    output = tmp_path / "run"
    with pytest.raises(TrainError, match="disk is full.*checkpoint 2 is intact"):
        train(tiny_dataset, tiny_config.model, cfg, output)
    root = ckpt.checkpoint_dir(output)
    assert [p.name for p in root.iterdir()] == ["step-00000002"]
    assert ckpt.load_latest(root).state.step == 2
    assert not output.exists()
