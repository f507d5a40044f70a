"""`tuneforge train --nproc N`: relaunch the same command under torchrun, one process per rank.

Inside each process `accelerate.Accelerator` reads torchrun's environment, joins the process group
(gloo on CPU, NCCL on CUDA) and wraps the model in DistributedDataParallel. FSDP and DeepSpeed
ZeRO are accelerate configurations: launch with `accelerate launch --config_file
src/tuneforge/train/configs/fsdp.yaml -m tuneforge train …` (see docs/training.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

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
