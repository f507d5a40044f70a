"""Tool calling on the tiny random model through the HTTP app: forced calls are valid by construction,
calls stream as OpenAI streams them, histories with calls and results render, bad requests are 400s."""

from __future__ import annotations

import json

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import ServeConfig
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.engine import Engine, EngineLimits
from tuneforge.serve.engine.tools import ToolCallStream, hermes_messages, parse_tool_calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now"}}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tiny):
    engine = Engine(tiny, EngineLimits(max_num_seqs=8, max_model_len=2048), model_name="tiny").start()
    yield TestClient(create_app(engine, "tiny", ServeConfig(max_tokens=300)))
    engine.shutdown()


def _ask(client, **kw):
    body = {"model": "tiny", "messages": MESSAGES, "tools": [WEATHER, CLOCK], "max_tokens": 200, **kw}
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]


def _valid(call: dict) -> None:
    tool = {"get_weather": WEATHER, "get_time": CLOCK}[call["function"]["name"]]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, tool["function"].get("parameters") or {"type": "object", "maxProperties": 0})
    assert call["type"] == "function" and call["id"].startswith("call_")


def test_required_and_named_choices_give_valid_calls(client):
    for seed in range(3):
        choice = _ask(client, tool_choice="required", temperature=1.0, seed=seed)
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"]
        for call in choice["message"]["tool_calls"]:
            _valid(call)
    named = _ask(client, tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=1.0,
                 seed=7, parallel_tool_calls=False)
    [call] = named["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and named["message"]["content"] is None
    _valid(call)


def test_streamed_calls_match_the_whole_answer(client):
    kw = {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "temperature": 1.0, "seed": 3}
    whole = _ask(client, **kw)
    body = {"model": "tiny", "messages": MESSAGES, "tools": [WEATHER, CLOCK], "max_tokens": 200, "stream": True, **kw}
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    calls: dict[int, dict] = {}
    for c in chunks:
        for piece in c["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
            call["name"] += piece.get("function", {}).get("name", "")
            call["arguments"] += piece["function"].get("arguments", "")
            if "id" in piece:
                assert piece["id"].startswith("call_") and piece["type"] == "function"
    expected = [c["function"] for c in whole["message"]["tool_calls"]]
    assert [{"name": c["name"], "arguments": c["arguments"]} for _, c in sorted(calls.items())] == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_history_with_calls_and_results_renders_and_none_never_calls(client, tiny):
    history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]
    choice = _ask(client, messages=history, tool_choice="none", max_tokens=10)
    assert choice["message"]["tool_calls"] == [] and choice["finish_reason"] in ("stop", "length")
    rendered = tiny.tokenizer.apply_chat_template(hermes_messages(history, [WEATHER]), tokenize=False)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>' \
        in rendered
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in rendered and "<tools>" in rendered


def test_parser_whole_and_streamed():
    text = ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><tool_call>not json</tool_call>')
    content, calls = parse_tool_calls(text)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert content == "Let me check.\n<tool_call>not json</tool_call>"
    assert parse_tool_calls("plain <tool_call answer") == ("plain <tool_call answer", [])
    ids = iter(f"call_{i}" for i in range(9))
    stream = ToolCallStream(lambda: next(ids))
    deltas = [d for ch in text for d in stream.feed(ch)] + stream.flush()
    streamed = "".join(d.get("content", "") for d in deltas)
    assert streamed == "Let me check.<tool_call>not json</tool_call>"
    heads = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert [(h["index"], h["id"], h["function"]["name"]) for h in heads] == [(0, "call_0", "get_weather"),
                                                                                (1, "call_1", "get_time")]


@pytest.mark.parametrize("body, param, text", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not in tools"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"messages": [{"role": "tool", "content": "21"}]}, "messages.0", "tool_call_id"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "frob"}}}],
      "tool_choice": "required"}, "tools", "invalid function parameters schema"),
    ({"functions": [{"name": "f"}]}, "functions", "use tools"),
    ({"tool_choice": "required", "guided_regex": "a"}, None, "cannot be combined"),
])
def test_bad_tool_requests_are_400s(client, body, param, text):
    resp = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "tools": [WEATHER],
                                                     "max_tokens": 5, **body})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and text in error["message"], error
