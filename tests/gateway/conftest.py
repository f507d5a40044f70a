"""Real processes for the gateway's tests: redis-server, PostgreSQL, fake upstreams, gateways — each on a
free loopback port, stopped at the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.servers import Redis, postgres

from tuneforge.gateway.process import start_gateway
from tuneforge.pipeline import free_port, stop_server, wait_ready

PG_BIN = Path("/usr/lib/postgresql/15/bin")


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



@pytest.fixture
def postgres_server():
    with postgres() as url:
        yield url
