"""A route's temperature cap and default (`routes.<name>.sampling`): a request above the cap is refused with
OpenAI's 400 naming the field and the limit, before any upstream call; a request without temperature gets the
route's default — chat and completions, streamed and not, through a real gateway and the `openai` SDK; and
the FastAPI app behind the hot path refuses the same way."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from tests.gateway.conftest import auth, create_key

from tuneforge.core.errors import ConfigError
from tuneforge.gateway.config import GatewayConfig, load_gateway

SAMPLING = {"max_temperature": 0.3, "default_temperature": 0.1}


def _seen(upstream: str) -> dict:
    return httpx.get(upstream.removesuffix("/v1") + "/health").json()


@pytest.fixture
def capped(tmp_path, upstreams, gateways):
    up = upstreams("--text", "Take a seat, the nurse will call you.")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "routes": {"clinic": {"backends": [up], "sampling": SAMPLING}}})
    key = create_key(db, tenant="t")
    return up, gw, openai.OpenAI(base_url=gw, api_key=key, max_retries=0)


def test_a_temperature_above_the_cap_is_refused_naming_the_field_and_the_limit(capped):
    up, _, client = capped
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}],
                                           temperature=0.9, max_tokens=8, stream=stream)
        error = refused.value.body
        assert refused.value.status_code == 400 and error["param"] == "temperature"
        assert error["code"] == "invalid_value" and "0.9" in error["message"] and "0.3" in error["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="clinic", prompt="hi", temperature=1.5, max_tokens=8)
    assert refused.value.body["param"] == "temperature" and "0.3" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:  # not a number: no way to check it against the cap
        client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=8, extra_body={"temperature": "low"})
    assert refused.value.body["code"] == "invalid_type"
    assert _seen(up)["requests"] == 0  # every refusal before any upstream call


def test_nan_temperature_and_a_malformed_stream_options_are_400s_not_500s(capped):
    up, gw, client = capped
    headers = {"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"}
    for raw, param in ((b'{"model": "clinic", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                        "temperature"),
                       (b'{"model": "clinic", "messages": [{"role": "user", "content": "hi"}], "stream": true, '
                        b'"stream_options": "include_usage"}', "stream_options")):
        answer = httpx.post(f"{gw}/chat/completions", content=raw, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert _seen(up)["requests"] == 0


def test_a_request_without_temperature_gets_the_route_default_and_one_under_the_cap_is_kept(capped):
    up, _, client = capped
    answer = client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=100)
    assert answer.choices[0].message.content == "Take a seat, the nurse will call you."
    assert _seen(up)["last_request"]["temperature"] == 0.1

    stream = client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=100, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Take a seat, the nurse will call you."
    last = _seen(up)["last_request"]
    assert last["stream"] is True and last["temperature"] == 0.1

    client.completions.create(model="clinic", prompt="hi", max_tokens=4)
    assert _seen(up)["last_request"]["temperature"] == 0.1
    client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                   temperature=0.25)
    assert _seen(up)["last_request"]["temperature"] == 0.25  # under the cap: sent as asked
    client.chat.completions.create(model="clinic", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                   temperature=0.3)
    assert _seen(up)["last_request"]["temperature"] == 0.3  # the cap itself is allowed
    assert _seen(up)["requests"] == 5


def test_the_fastapi_app_behind_the_hot_path_refuses_the_same_way(tmp_path):
    from tuneforge.gateway.app import create_app

    db = f"sqlite:///{tmp_path / 'gw.db'}"
    cfg = GatewayConfig.model_validate({"database_url": db, "routes": {
        "clinic": {"backends": ["http://127.0.0.1:9/v1"], "sampling": SAMPLING}}})
    key = create_key(db, tenant="t")
    app = create_app(cfg).app  # the FastAPI app, without the plain-ASGI hot path in front

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.post("/v1/chat/completions", headers=auth(key), json={
                "model": "clinic", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7})

    reply = asyncio.run(call())
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "temperature" and "at most 0.3" in reply.json()["error"]["message"]


def test_sampling_config_validation(tmp_path):
    route = {"backends": ["http://127.0.0.1:9/v1"]}
    cfg = GatewayConfig.model_validate({"routes": {"r": {**route, "sampling": {"max_temperature": 0.2}}}})
    assert cfg.routes["r"].sampling.default_temperature == 0.2  # no default: the cap, not the upstream's 1.0
    plain = GatewayConfig.model_validate({"routes": {"r": route}})
    assert plain.routes["r"].sampling.max_temperature is None
    assert plain.routes["r"].sampling.default_temperature is None
    bad = tmp_path / "gw.yaml"
    bad.write_text("routes:\n  r:\n    backends: [http://127.0.0.1:9/v1]\n"
                   "    sampling: {max_temperature: 0.3, default_temperature: 0.5}\n")
    with pytest.raises(ConfigError, match="routes.r.sampling.*default_temperature 0.5 is above max_temperature 0.3"):
        load_gateway(bad)
