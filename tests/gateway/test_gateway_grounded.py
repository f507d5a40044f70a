"""A grounded rule in a real gateway: a dosing question outside the route's data gets the rule's safe answer,
streamed or not, and never reaches the engine; one the data covers goes upstream; with action flag on a
review route, the out-of-data question is answered by the model but held for a person."""

from __future__ import annotations

import httpx
import openai
from tests.gateway.conftest import auth, create_key

KNOWN = ["How much Linden Cough Syrup should an adult take?", "What is the adult dose of Linden Cough Syrup?"]
ANSWER = "I can't advise on that dose. Please ask your pharmacist or doctor."


def _requests_seen(upstream: str) -> int:
    return httpx.get(upstream.removesuffix("/v1") + "/health").json()["requests"]


def _route(up: str, **rule) -> dict:
    grounded = {"name": "dosing", "phrases": ["dose", "ml", "can i take"], "known": KNOWN, "threshold": 0.7,
                "answer": ANSWER, **rule}
    return {"backends": [up], "safety": {"injection": {"classifier": False}, "topics": {"grounded": [grounded]}}}


def test_out_of_data_dosing_gets_the_safe_answer_and_never_reaches_the_engine(tmp_path, upstreams, gateways):
    up = upstreams("--text", "Adults take 10 ml three times a day.")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "routes": {"clinic": _route(up)}})
    client = openai.OpenAI(base_url=gw, api_key=create_key(db, tenant="t"), max_retries=0)
    outside = [{"role": "user", "content": "What dose of warfarin do I need?"}]

    reply = client.chat.completions.with_raw_response.create(model="clinic", messages=outside, max_tokens=50)
    assert reply.headers["x-tuneforge-guard"] == "grounded"
    answer = reply.parse()
    assert answer.choices[0].message.content == ANSWER and answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == 0 and answer.model == "clinic"
    stream = client.chat.completions.create(model="clinic", messages=outside, max_tokens=50, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0
    text = client.completions.create(model="clinic", prompt="How many ml of ibuprofen can I take?", max_tokens=50)
    assert text.choices[0].text == ANSWER
    assert _requests_seen(up) == 0  # the model was never asked

    covered = client.chat.completions.create(model="clinic", max_tokens=50, messages=[
        {"role": "user", "content": "What's the adult dosage of Linden Cough Syrup?"}])
    assert covered.choices[0].message.content == "Adults take 10 ml three times a day."
    assert _requests_seen(up) == 1


def test_action_flag_sends_it_to_the_model_and_holds_the_answer_for_review(tmp_path, upstreams, gateways):
    up = upstreams("--text", "Take 5 mg.")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    route = _route(up, action="flag")
    route["safety"]["review"] = "on_flag"
    gw = gateways({"database_url": db, "routes": {"clinic": route}})
    key = create_key(db, tenant="t")
    body = {"model": "clinic", "max_tokens": 20, "messages": [{"role": "user", "content": "What dose of warfarin?"}]}
    held = httpx.post(f"{gw}/chat/completions", json=body, headers=auth(key), timeout=60)
    assert held.status_code == 202 and held.json()["status"] == "pending"
    assert any(r.startswith("grounded: dosing question outside") for r in held.json()["reasons"])
    assert "5 mg" not in held.text and _requests_seen(up) == 1
    body["messages"][0]["content"] = "What is the adult dose of Linden Cough Syrup?"
    plain = httpx.post(f"{gw}/chat/completions", json=body, headers=auth(key), timeout=60)
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == "Take 5 mg."
