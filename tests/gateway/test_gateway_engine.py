"""The gateway in front of a real `tuneforge serve` (tiny model), driven by the official openai SDK."""

from __future__ import annotations

import httpx
import pytest
from tests.gateway.conftest import create_key
from tests.serve.test_server_process import _until
from tests.servers import metric

from tuneforge.core.config import ServeConfig
from tuneforge.pipeline import start_server, stop_server


@pytest.fixture
def engine(tmp_path):
    cfg = ServeConfig(served_model_name="tiny", api_key="engine-key", max_num_seqs=4, dtype="float32", max_tokens=2000)
    process, url = start_server("tiny-random-llama", cfg, tmp_path)
    yield url
    stop_server(process)


def test_openai_sdk_through_the_gateway_equals_the_engine_direct(tmp_path, engine, gateways):
    from openai import OpenAI

    db = f"sqlite:///{tmp_path / 'gw.db'}"
    route = {"variants": {"v1": {"backends": [engine], "model": "tiny", "api_key": "engine-key"}}}
    gw = gateways({"database_url": db, "routes": {"support-bot": route}})
    key = create_key(db, tenant="acme", max_parallel=1, budget_tokens=100_000)
    direct = OpenAI(base_url=engine, api_key="engine-key")
    through = OpenAI(base_url=gw, api_key=key)
    messages = [{"role": "user", "content": "What color is the Quokka lamp?"}]

    assert [m.id for m in through.models.list().data] == ["support-bot"]
    want = direct.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    got = through.chat.completions.create(model="support-bot", messages=messages, max_tokens=12, temperature=0)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage.total_tokens == want.usage.total_tokens
    stream = through.chat.completions.create(model="support-bot", messages=messages, max_tokens=12, temperature=0,
                                             stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want.choices[0].message.content
    text = through.completions.create(model="support-bot", prompt="The lamp is", max_tokens=5, temperature=0)
    assert text.choices[0].text == direct.completions.create(model="tiny", prompt="The lamp is", max_tokens=5,
                                                             temperature=0).choices[0].text
    with pytest.raises(Exception) as refused:  # the engine's own 400 comes through as the client's error
        through.chat.completions.create(model="support-bot", messages=messages, max_tokens=12, temperature=5)
    assert getattr(refused.value, "status_code", None) == 400


def test_client_disconnect_cancels_the_upstream_request_and_frees_the_key(tmp_path, engine, gateways):
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    route = {"variants": {"v1": {"backends": [engine], "model": "tiny", "api_key": "engine-key"}}}
    gw = gateways({"database_url": db, "routes": {"bot": route}})
    key = create_key(db, tenant="acme", max_parallel=1)
    health = engine.removesuffix("/v1") + "/health"
    body = {"model": "bot", "prompt": "go", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{gw}/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60) as reply:
        assert reply.status_code == 200
        chunks = 0
        for line in reply.iter_lines():
            chunks += line.startswith("data: ")
            if chunks == 3:
                break
    assert _until(lambda: httpx.get(health).json()["in_flight"] == 0), "the engine kept generating"
    # the engine saw the request aborted, not run to its 2000 tokens
    assert metric(engine, 'tuneforge:request_success_total{adapter="",finished_reason="abort"') == 1
    assert metric(engine, 'tuneforge:request_success_total{adapter="",finished_reason="length"') == 0
    after = httpx.post(f"{gw}/completions", json={"model": "bot", "prompt": "x", "max_tokens": 2},
                       headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert after.status_code == 200  # its parallel slot was handed back
