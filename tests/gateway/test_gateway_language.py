"""The translation example's route (examples/translation/gateway.yaml) in a real gateway process, called with
the openai SDK: an answer not in French is refused, streamed or not; a French one passes whole."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from tests.gateway.conftest import create_key

from tuneforge.gateway.config import load_gateway

EXAMPLE = Path(__file__).parents[2] / "examples" / "translation"
ENGLISH = "Your order has been shipped and will arrive within three business days."
FRENCH = "Votre commande a été expédiée et arrivera sous trois jours ouvrés."
REQUEST = [{"role": "user", "content": f"<2fr> {ENGLISH}"}]


def _route_safety() -> dict:
    """The example's own guards, as shipped."""
    route = load_gateway(EXAMPLE / "gateway.yaml").routes["lumeo-fr"]
    assert route.safety is not None and route.safety.language.output == ["fr"]
    return route.safety.model_dump()


def _gateway(tmp_path, upstreams, gateways, text: str) -> tuple[openai.OpenAI, str]:
    up = upstreams("--text", text)
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "routes": {"lumeo-fr": {"backends": [up], "safety": _route_safety()}}})
    return openai.OpenAI(base_url=gw, api_key=create_key(db, tenant="t"), max_retries=0), up


def _stream(client: openai.OpenAI, messages=REQUEST) -> tuple[str, openai.APIError | None]:
    """The text a streaming client received, and the error that ended the stream (None: it ended normally)."""
    received = ""
    try:
        for chunk in client.chat.completions.create(model="lumeo-fr", messages=messages, max_tokens=100,
                                                    stream=True):
            for choice in chunk.choices:
                received += choice.delta.content or ""
    except openai.APIError as exc:
        return received, exc
    return received, None


def test_an_answer_in_the_wrong_language_is_refused_streamed_or_not(tmp_path, upstreams, gateways):
    client, _ = _gateway(tmp_path, upstreams, gateways, ENGLISH)  # an upstream that "translates" into English
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="lumeo-fr", messages=REQUEST, max_tokens=100)
    assert refused.value.code == "content_blocked"
    assert "answer language 'en' is not one of fr" in refused.value.message
    assert ENGLISH not in str(refused.value.body)

    received, error = _stream(client)
    assert received == ""  # held until judged, then cut: not one English word reached the client
    assert isinstance(error, openai.APIError) and error.code == "content_blocked"  # the stream's error event
    assert "answer language 'en' is not one of fr" in error.message


def test_a_french_answer_passes_whole_streamed_or_not(tmp_path, upstreams, gateways):
    client, up = _gateway(tmp_path, upstreams, gateways, FRENCH)
    reply = client.chat.completions.create(model="lumeo-fr", messages=REQUEST, max_tokens=100)
    assert reply.choices[0].message.content == FRENCH
    assert _stream(client) == (FRENCH, None)  # the held start is released once judged French
    assert httpx.get(up.removesuffix("/v1") + "/health").json()["requests"] == 2


def test_a_request_not_in_english_never_reaches_the_upstream(tmp_path, upstreams, gateways):
    client, up = _gateway(tmp_path, upstreams, gateways, FRENCH)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="lumeo-fr", max_tokens=100, messages=[
            {"role": "user", "content": "<2fr> Bonjour, pouvez-vous me dire où en est ma commande, s'il vous plaît ?"}])
    assert refused.value.code == "content_blocked" and "request language 'fr'" in refused.value.message
    assert httpx.get(up.removesuffix("/v1") + "/health").json()["requests"] == 0


def test_an_answer_shorter_than_min_chars_is_not_judged(tmp_path, upstreams, gateways):
    """`min_chars: 12` letters: below it langdetect guesses, so the guard lets a short answer through unjudged —
    even a wrong one. This is the limit of the guard, stated in the example's README."""
    client, _ = _gateway(tmp_path, upstreams, gateways, "Thank you!")  # 8 letters
    reply = client.chat.completions.create(model="lumeo-fr", messages=REQUEST, max_tokens=100)
    assert reply.choices[0].message.content == "Thank you!"
    assert _stream(client) == ("Thank you!", None)
