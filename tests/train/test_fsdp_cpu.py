"""The shipped accelerate FSDP config, run for real on CPU: two processes over gloo, parameters sharded by
FSDP2 (accelerate alone would have silently run DDP here), the same losses and weights as one process,
and an artifact that is whole. DeepSpeed, which accelerate runs on CUDA only, is refused instead of being
quietly replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tuneforge.core.errors import ConfigError
from tuneforge.train.distributed import sharding_setup, shares

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "src/tuneforge/train/configs"
ASSETS = ROOT / "tests/assets"


def _train(dataset, out: Path, method: str, launcher: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-c", str(ASSETS / "pipeline.yaml"), "--set", f"train.method={method}", "--set", "train.max_steps=4",
              "--set", "train.batch_size=2", "--set", "train.grad_accum=2", "--set", "train.lora.dropout=0"]
    return subprocess.run([*launcher, "-m", "tuneforge", "train", str(dataset.path), "-o", str(out), *common],
                          env=env, capture_output=True, text=True, timeout=600)


def _history(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "history.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict:
    return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_shipped_fsdp_config_shards_on_cpu_and_trains_as_one_process(tiny_dataset, tmp_path, method):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml"),
                  "--num_processes", "2"]
    sharded = _train(tiny_dataset, tmp_path / "fsdp", method, accelerate)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "× 2 processes (FSDP)" in " ".join((sharded.stdout + sharded.stderr).split())  # the banner says so
    one = _train(tiny_dataset, tmp_path / "one", method, [sys.executable])
    assert one.returncode == 0, one.stderr[-3000:]

    metrics = json.loads((tmp_path / "fsdp" / "manifest.json").read_text())["metrics"]
    assert metrics["processes"] == 2 and metrics["distributed"] == "FSDP"
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "fsdp")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)  # gathered whole, not one shard
    if method == "lora":  # a few thousand parameters: the sharded sums agree to the last bits
        assert _history(tmp_path / "fsdp") == pytest.approx(_history(tmp_path / "one"), rel=1e-6)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    else:  # reduce-scatter sums in another order; Adam turns near-zero gradient differences into lr-sized steps
        assert _history(tmp_path / "fsdp") == pytest.approx(_history(tmp_path / "one"), rel=1e-3)
        assert sum(float((a[k] - b[k]).abs().mean()) for k in a) / len(a) < 1e-3


def test_deepspeed_without_cuda_is_refused_not_replaced(monkeypatch):
    """Where deepspeed is installed but CUDA is not, accelerate comes back with MULTI_CPU (plain DDP); with
    deepspeed absent, as here, accelerate itself refuses first. The state is the one accelerate gives then."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    cpu = SimpleNamespace(state=SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
    with pytest.raises(ConfigError, match="DeepSpeed.*CUDA only.*--nproc"):
        sharding_setup(cpu)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    assert sharding_setup(cpu) == "MULTI_CPU"  # a plain --nproc run is left as it is


def test_every_rank_runs_as_many_micro_batches_under_fsdp():
    group = ["a", "b", "c"]
    assert shares(group, 0, 2, even=False) == [("a", True), ("c", True)]
    assert shares(group, 1, 2, even=False) == [("b", True)]  # DDP syncs on the last backward: uneven is fine
    assert shares(group, 1, 2, even=True) == [("b", True), ("a", False)]  # FSDP gathers in every forward
    assert shares(["a"], 1, 2, even=False) == [("a", False)]  # no batch of its own: one at weight 0
