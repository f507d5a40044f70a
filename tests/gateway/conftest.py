"""Real processes for the gateway's tests: redis-server, PostgreSQL, fake upstreams, gateways — each on a
free loopback port, stopped at the end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from tests.servers import Redis, postgres

from tuneforge.bench import fake_upstream
from tuneforge.gateway.process import start_gateway
from tuneforge.pipeline import stop_server

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def redis_server(tmp_path):
    server = Redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def upstreams():
    """fn(*args) → base URL of a new fake upstream; all stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        process, url = fake_upstream.start(*args)
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
