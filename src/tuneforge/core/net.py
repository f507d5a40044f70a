"""Processes on this machine's loopback: a free port, and waiting until a started server answers."""

from __future__ import annotations

import socket
import subprocess
import time

from tuneforge.core.errors import TuneforgeError


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen, deadline_s: float = 300.0) -> None:
    """Poll `url` until it answers 200, the process dies, or the deadline passes."""
    import httpx

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise TuneforgeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TuneforgeError(f"the server did not answer {url} within {deadline_s:.0f} s")
