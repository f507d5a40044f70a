"""Real servers for tests, each on a free loopback port: PostgreSQL and Redis. One implementation for every
suite that needs them (gateway key store, registry on MLflow's SQL store, review queue); and the helpers the
suites that drive real servers share (`until`, `metric`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tuneforge.core.net import free_port


def until(check, seconds: float = 60.0, what: str | None = None, every: float = 0.2):
    """Poll `check()` until it returns something truthy (returned), or fail the test after `seconds`
    naming `what` (or the check's docstring)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"{what or check.__doc__ or 'condition'}: not within {seconds:.0f} s")


def metric(url: str, name: str) -> float:
    """A Prometheus metric on the `/metrics` of the server at `url` (its base URL, `/v1` or not), summed over
    its samples (0 when it has none). `name` is the metric's name, or its name and the start of its labels
    (`tuneforge:request_success_total{adapter="",finished_reason="abort"`) to sum only the samples they match."""
    text = httpx.get(url.removesuffix("/").removesuffix("/v1") + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if line.startswith("#") or not sample:
            continue
        if sample.startswith(name) if "{" in name else (sample == name or sample.startswith(name + "{")):
            total += float(value)
    return total


def _wait_port(port: int, process: subprocess.Popen, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode} before it listened")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{process.args[0]} did not listen on {port} within {seconds:.0f} s")


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server (initdb + postgres, as the `postgres` user when run as root: it refuses
    root); yields its SQLAlchemy URL, ready for connections."""
    import pwd

    import psycopg

    initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        pytest.fail("PostgreSQL is not installed: `make setup` installs it (apt-get install postgresql)")
    data = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))  # pytest's tmp dirs are root-only (0700)
    account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if account is not None:
        os.chown(data, account.pw_uid, account.pw_gid)

    def demote() -> None:
        if account is not None:
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    subprocess.run([str(initdb), "-D", str(data), "-U", "tuneforge", "--auth=trust", "-E", "UTF8"], check=True,
                   stdout=subprocess.DEVNULL, preexec_fn=demote)
    port = free_port()
    process = subprocess.Popen([str(initdb.parent / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                                "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=demote)
    try:
        deadline = time.monotonic() + 60
        while True:  # listening is not yet accepting: wait for a real connection
            try:
                psycopg.connect(f"postgresql://tuneforge@127.0.0.1:{port}/postgres").close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"postgres did not start (exit {process.poll()})")
                time.sleep(0.2)
        yield f"postgresql+psycopg://tuneforge@127.0.0.1:{port}/postgres"
    finally:
        process.send_signal(signal.SIGINT)  # fast shutdown: pooled client connections must not hold it up
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data, ignore_errors=True)


class Redis:
    """A redis-server without persistence; `.url`, `.stop()` (tests kill it mid-way)."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: `make setup` installs it (apt-get install redis-server)")
        self.port = port or free_port()
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(workdir), *extra],
                                        stdout=subprocess.DEVNULL)
        _wait_port(self.port, self.process)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000, Redis Cluster's rule) is free and exists too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    pytest.fail("no free port pair (port, port + 10000) for a Redis Cluster node")


class RedisCluster:
    """A Redis Cluster of `nodes` masters (no replicas), made by `redis-cli --cluster create`; `.url` is the
    gateway's `redis+cluster://` form, `.nodes` the servers, `.stop()`."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.nodes = []
        for i in range(nodes):
            folder = workdir / f"cluster-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Redis(folder, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", "2000", port=_cluster_port()))
        made = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                               "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                              timeout=60)
        if made.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed: {made.stdout}{made.stderr}")

        def ready() -> bool:
            """every node of the cluster reports cluster_state:ok"""
            return all("cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(n.port), "cluster", "info"],
                                                            capture_output=True, text=True).stdout
                       for n in self.nodes)

        until(ready, 60)
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
