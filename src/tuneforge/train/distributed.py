"""`tuneforge train --nproc N`: relaunch the same command under torchrun, one process per rank.

Inside each process `accelerate.Accelerator` reads torchrun's environment, joins the process group
(gloo on CPU, NCCL on CUDA) and wraps the model in DistributedDataParallel. FSDP and DeepSpeed
ZeRO are accelerate configurations: launch with `accelerate launch --config_file
src/tuneforge/train/configs/fsdp.yaml -m tuneforge train …` (see docs/training.md). FSDP2 runs on CPU
too (gloo); `sharding_setup` says how.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from tuneforge.core.errors import ConfigError
from tuneforge.core.progress import console


def launch(nproc: int, args: list[str]) -> int:
    """Run `tuneforge <args>` in `nproc` processes; returns the launcher's exit code."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "tuneforge", *args]
    console.print(f"launching {nproc} processes: {' '.join(command[2:])}")
    return subprocess.call(command, env=env)


def sharding_setup(accelerator: Any) -> str:
    """Check (and on CPU, complete) what accelerate made of `accelerate launch --config_file …`; returns the
    distributed type's name ('NO', 'MULTI_CPU', 'MULTI_GPU', 'FSDP', 'DEEPSPEED').

    accelerate (1.16) turns an FSDP config on for GPU-like devices only: on CPU it silently runs plain DDP.
    PyTorch's FSDP2 shards over gloo just as well, so on CPU an FSDP config is switched on here — the same
    `fully_shard` path accelerate takes on a GPU (tests/train/test_fsdp_cpu.py runs it). DeepSpeed needs
    CUDA under accelerate; asked for without it, the run stops instead of quietly running something else.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    def asked(name: str) -> bool:
        return os.environ.get(name, "false").lower() == "true"

    state = accelerator.state
    if asked("ACCELERATE_USE_FSDP") and state.distributed_type == DistributedType.MULTI_CPU:
        # the plugin reads the launcher's FSDP_* variables (the config file's fsdp_config)
        plugin = getattr(state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 2:
            raise ConfigError("FSDP on CPU needs `fsdp_version: 2` in the accelerate config (FSDP1 is GPU-only)")
        state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin
    if asked("ACCELERATE_USE_DEEPSPEED") and state.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError("the accelerate config asks for DeepSpeed, which accelerate runs on CUDA only; this "
                          "machine has none, so it would have trained with plain DDP. Use `tuneforge train "
                          "--nproc N` (DDP) or the FSDP config (src/tuneforge/train/configs/fsdp.yaml) here.")
    return str(state.distributed_type).split(".")[-1]


def is_sharded(model: Any) -> bool:
    """Whether FSDP2 holds `model`'s parameters in shards (what decides it: accelerate's distributed type is
    reset by `prepare` on CPU)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def gathered_state(accelerator: Any, model: Any, only: set[str] | None = None) -> dict[str, Any]:
    """The model's tensors whole (FSDP2 keeps a shard of each per rank), by name, optionally `only` those:
    collective — every rank must call it; the main rank gets them all."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(accelerator.unwrap_model(model),
                                options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v for k, v in full.items() if only is None or k in only}


def shares(group: list[Any], rank: int, world: int, even: bool) -> list[tuple[Any, bool]]:
    """This rank's micro-batches of a step, as (batch, counts): `counts` False for a stand-in run at weight 0.
    A rank with none runs one (DDP's gradient sync needs every rank's backward); with `even` (FSDP, whose every
    forward gathers weights from all ranks) each rank runs as many as the busiest one."""
    mine = [(batch, True) for batch in group[rank::world]]
    want = -(-len(group) // world) if even else 1
    return mine + [(group[0], False)] * max(0, want - len(mine))
