"""`tuneforge gateway serve` as a child process on a free loopback port (the demo, tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tuneforge.core.net import free_port, wait_ready


def start_gateway(config: dict, workdir: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start a gateway with `config` (a gateway YAML's content, written into `workdir`); (process, base URL
    ending in /v1) once its /health answers."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="tuneforge-gateway-"))
    port = free_port()
    path = folder / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "tuneforge", "gateway", "serve", "-c", str(path),
                                "--port", str(port)])
    wait_ready(f"http://127.0.0.1:{port}/health", process, 120)
    return process, f"http://127.0.0.1:{port}/v1"
