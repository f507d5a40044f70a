"""Every parameter of the installed `openai` SDK's `chat.completions.create` and `completions.create` is
either honoured (each with a check of its effect) or refused with a 400 that names it: none is accepted
silently. A parameter a new SDK adds fails `test_every_sdk_parameter_is_classified` until it is handled."""

from __future__ import annotations

import inspect
import json

import openai
import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import ServeConfig
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.engine import Engine, EngineLimits

CLIENT_SIDE = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}  # never sent as body fields
MESSAGES = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"x": {"enum": [1, 2]}}, "required": ["x"], "additionalProperties": False}}}

CHAT_REFUSED = {
    "audio": {"voice": "alloy", "format": "wav"}, "function_call": "auto", "functions": [{"name": "f"}],
    "metadata": {"k": "v"}, "moderation": {"mode": "x"}, "prediction": {"type": "content", "content": "x"},
    "prompt_cache_key": "k", "prompt_cache_options": {"x": 1}, "prompt_cache_retention": "24h",
    "reasoning_effort": "low", "safety_identifier": "u1", "service_tier": "flex", "verbosity": "low",
    "web_search_options": {}, "store": True, "modalities": ["text", "audio"]}
CHAT_HONOURED = {"messages", "model", "frequency_penalty", "logit_bias", "logprobs", "max_completion_tokens",
                 "max_tokens", "n", "parallel_tool_calls", "presence_penalty", "response_format", "seed", "stop",
                 "store", "modalities", "stream", "stream_options", "temperature", "tool_choice", "tools",
                 "top_logprobs", "top_p", "user"}
COMPLETION_REFUSED = {"suffix": "x", "best_of": 3}
COMPLETION_HONOURED = {"model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
                       "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options",
                       "temperature", "top_p", "user"}


def _sdk_parameters(create) -> set[str]:
    return set(inspect.signature(create).parameters) - CLIENT_SIDE


@pytest.fixture(scope="module")
def sdk(tiny):
    engine = Engine(tiny, EngineLimits(max_num_seqs=8, max_model_len=1024), model_name="tiny").start()
    app = create_app(engine, "tiny", ServeConfig(max_tokens=64))
    yield openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=TestClient(app), max_retries=0)
    engine.shutdown()


def test_every_sdk_parameter_is_classified():
    chat = _sdk_parameters(openai.resources.chat.Completions.create)
    text = _sdk_parameters(openai.resources.Completions.create)
    assert chat - CHAT_HONOURED - set(CHAT_REFUSED) == set(), "new chat parameters: honour or refuse them"
    assert text - COMPLETION_HONOURED - set(COMPLETION_REFUSED) == set(), "new completions parameters"


@pytest.mark.parametrize("name, value", sorted(CHAT_REFUSED.items()))
def test_chat_refuses_naming_the_parameter(sdk, name, value):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, **{name: value})
    error = caught.value.body
    assert error["param"].split(".")[0] == name and name in error["message"], error


@pytest.mark.parametrize("name, value", sorted(COMPLETION_REFUSED.items()))
def test_completions_refuse_naming_the_parameter(sdk, name, value):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny", prompt="hi", max_tokens=4, **{name: value})
    assert name in caught.value.body["message"], caught.value.body


def test_an_unknown_field_is_refused_naming_it(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, extra_body={"frobnicate": 1})
    assert caught.value.body["param"] == "frobnicate" and "unrecognized" in caught.value.body["message"]


def _tokens(tiny, text: str) -> list[int]:
    return tiny.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_honours_its_parameters(sdk, tiny):
    def ask(**kw):
        return sdk.chat.completions.create(model="tiny", messages=MESSAGES, **{"max_tokens": 8, **kw})

    plain = ask().choices[0]
    text = plain.message.content
    assert ask(max_tokens=3).usage.completion_tokens == 3 and ask(max_completion_tokens=3).choices[0] \
        .finish_reason == "length"
    repeats = ask(max_tokens=24).choices[0].message.content  # the greedy answer repeats tokens by then
    assert ask(max_tokens=24, frequency_penalty=2.0).choices[0].message.content != repeats
    assert ask(max_tokens=24, presence_penalty=2.0).choices[0].message.content != repeats
    token = _tokens(tiny, " lamp")[0]
    assert _tokens(tiny, ask(logit_bias={str(token): 100}).choices[0].message.content) == [token] * 8
    lp = ask(logprobs=True, top_logprobs=3).choices[0].logprobs.content
    assert len(lp) >= 1 and all(len(t.top_logprobs) == 3 for t in lp)
    assert len(ask(n=2).choices) == 2
    seeded = [ask(temperature=1.0, seed=4).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1] and {ask(temperature=1.0, seed=s).choices[0].message.content
                                       for s in range(5)} != {text}
    assert ask(temperature=1.0, top_p=1e-9, seed=1).choices[0].message.content == text  # nucleus of one: greedy
    stop = text.strip()[1:3]
    cut = ask(stop=[stop]).choices[0]
    assert stop not in cut.message.content and text.startswith(cut.message.content)
    assert ask(user="someone", store=False, modalities=["text"]).choices[0].message.content == text
    schema = {"type": "object", "properties": {"c": {"enum": ["red", "blue"]}}, "required": ["c"],
              "additionalProperties": False}
    out = ask(max_tokens=20, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(out.choices[0].message.content)["c"] in ("red", "blue")
    called = ask(max_tokens=40, tools=[TOOL], tool_choice="required", parallel_tool_calls=False,
                 temperature=1.0, seed=2).choices[0]
    [call] = called.message.tool_calls
    assert call.function.name == "f" and json.loads(call.function.arguments)["x"] in (1, 2)
    chunks = list(ask(stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == ask().usage.completion_tokens


def test_completions_honour_their_parameters(sdk, tiny):
    def ask(**kw):
        return sdk.completions.create(model="tiny", prompt="hi", **{"max_tokens": 8, **kw})

    text = ask().choices[0].text
    assert ask(max_tokens=3).usage.completion_tokens == 3
    assert ask(echo=True).choices[0].text == "hi" + text
    assert ask(frequency_penalty=2.0).choices[0].text != text  # the plain answer repeats a token
    assert ask(presence_penalty=2.0).choices[0].text != text
    token = _tokens(tiny, " lamp")[0]
    assert _tokens(tiny, ask(logit_bias={str(token): 100}).choices[0].text) == [token] * 8
    assert all(len(top) == 2 for top in ask(logprobs=2).choices[0].logprobs.top_logprobs)
    assert len(ask(n=2, best_of=2).choices) == 2
    seeded = {ask(temperature=1.0, seed=4).choices[0].text for _ in range(2)}
    assert len(seeded) == 1 and {ask(temperature=1.0, seed=s).choices[0].text for s in range(5)} != {text}
    assert ask(temperature=1.0, top_p=1e-9, seed=1).choices[0].text == text
    stop = text.strip()[1:3]
    cut = ask(stop=stop).choices[0].text
    assert stop not in cut and text.startswith(cut)
    assert ask(user="someone").choices[0].text == text
    chunks = list(ask(stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text and chunks[-1].usage.completion_tokens == 8
