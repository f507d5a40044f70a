"""Real processes for the gateway's tests: redis-server, PostgreSQL, fake upstreams, gateways — each on a
free loopback port, stopped at the end."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tuneforge.gateway.process import start_gateway
from tuneforge.pipeline import free_port, stop_server, wait_ready

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait_port(port: int, process: subprocess.Popen, seconds: float = 30.0) -> None:
    import socket

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port} within {seconds} s")


class Redis:
    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: `make setup` installs it (apt-get install redis-server)")
        self.port = free_port()
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                        stdout=subprocess.DEVNULL)
        _wait_port(self.port, self.process)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_server(self.process)


@pytest.fixture
def redis_server(tmp_path):
    server = Redis(tmp_path)
    yield server
    server.stop()


def fake_upstream(*args: str) -> tuple[subprocess.Popen, str]:
    """A fake OpenAI upstream (tuneforge.bench.fake_upstream) as a process; (process, base URL /v1)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.bench.fake_upstream", "--port", str(port), *args])
    wait_ready(f"http://127.0.0.1:{port}/health", process, 60)
    return process, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def upstreams():
    """fn(*args) → base URL of a new fake upstream; all stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        process, url = fake_upstream(*args)
        started.append(process)
        return url

    start.processes = started  # type: ignore[attr-defined]
    yield start
    for process in started:
        stop_server(process)


@pytest.fixture
def gateways(tmp_path):
    """fn(config) → base URL of a new gateway process; all stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(config: dict) -> str:
        process, url = start_gateway(config, tmp_path)
        started.append(process)
        return url

    yield start
    for process in started:
        stop_server(process)


def create_key(database_url: str, **policy) -> str:
    from tuneforge.gateway.keys import KeyPolicy, KeyStore

    return KeyStore(database_url).create(KeyPolicy(**policy))[0]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(url: str, key: str, model: str = "bot", **body) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **body}
    return httpx.post(f"{url}/chat/completions", json=payload, headers=auth(key), timeout=60)


class Postgres:
    """A throw-away PostgreSQL server (initdb + postgres) on a free port, run as the `postgres` user (it
    refuses to run as root)."""

    def __init__(self, workdir: Path) -> None:
        import os
        import pwd

        initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
        if initdb is None:
            pytest.fail("PostgreSQL is not installed: `make setup` installs it (apt-get install postgresql)")
        import tempfile

        # its own folder under /tmp: pytest's tmp_path lies under a root-only (0700) folder
        self.data = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if user is not None:
            os.chown(self.data, user.pw_uid, user.pw_gid)

        def as_postgres() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        subprocess.run([str(initdb), "-D", str(self.data), "-U", "tuneforge", "--auth=trust", "-E", "UTF8"],
                       check=True, stdout=subprocess.DEVNULL, preexec_fn=as_postgres)
        self.port = free_port()
        self.process = subprocess.Popen([str(initdb.parent / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                         "-k", str(self.data), "-c", "listen_addresses=127.0.0.1"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=as_postgres)
        _wait_port(self.port, self.process)
        self.url = f"postgresql+psycopg://tuneforge@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        stop_server(self.process)
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def postgres_server(tmp_path):
    server = Postgres(tmp_path)
    yield server
    server.stop()
