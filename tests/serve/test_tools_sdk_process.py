"""The whole tool-calling loop as a client runs it: the official openai SDK against a real `tuneforge serve`
process on SmolLM2-135M-Instruct — a forced call parsed into the SDK's objects, the same call streamed and
accumulated the SDK way, then the tool's result sent back and answered in words."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tuneforge.core.config import ServeConfig
from tuneforge.pipeline import start_server, stop_server

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def client():
    from openai import OpenAI

    process, url = start_server("smollm2-135m", ServeConfig(served_model_name="smol", max_tokens=256))
    try:
        yield OpenAI(base_url=url, api_key="x", max_retries=0)
    finally:
        stop_server(process)


@pytest.mark.slow
def test_the_sdk_tool_loop_against_a_real_server(client):
    first = client.chat.completions.create(model="smol", messages=QUESTION, tools=[WEATHER], tool_choice="required",
                                           temperature=0, max_tokens=80)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    print(f"\nSmolLM2 called get_weather({arguments})")

    # the same request streamed: the SDK's deltas accumulate by index into the same call
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(model="smol", messages=QUESTION, tools=[WEATHER],
                                                tool_choice="required", temperature=0, max_tokens=80, stream=True):
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for piece in chunk.choices[0].delta.tool_calls or []:
            acc = calls.setdefault(piece.index, {"name": "", "arguments": ""})
            acc["name"] += (piece.function.name or "") if piece.function else ""
            acc["arguments"] += (piece.function.arguments or "") if piece.function else ""
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [{"name": c.function.name, "arguments": c.function.arguments}
                                                  for c in choice.message.tool_calls]

    # the tool's answer goes back; the model now answers in words and calls nothing
    history = [*QUESTION, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}]
    final = client.chat.completions.create(model="smol", messages=history, tools=[WEATHER], tool_choice="none",
                                           temperature=0, max_tokens=40)
    answer = final.choices[0]
    assert not answer.message.tool_calls and answer.finish_reason in ("stop", "length")
    assert answer.message.content and answer.message.content.strip()
    print(f"SmolLM2 answered: {answer.message.content!r}")
