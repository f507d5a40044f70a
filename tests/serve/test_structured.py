"""Structured outputs and logit_bias on the tiny random model, through the real HTTP app (ASGI client).

A random model is the hardest case: only the constraint can make its output valid.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import ServeConfig
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.engine import Engine, EngineLimits

MESSAGES = [{"role": "user", "content": "Describe the Quokka lamp as JSON."}]


@pytest.fixture(scope="module")
def app(tiny):
    engine = Engine(tiny, EngineLimits(max_num_seqs=16, max_model_len=1024), model_name="tiny").start()
    yield create_app(engine, "tiny", ServeConfig(max_tokens=400, max_waiting=200))
    engine.shutdown()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def _leaf(rng: random.Random, depth: int) -> dict:
    """A random schema for one value: what a random model must be held to."""
    kinds = ["string", "integer", "number", "boolean", "enum", "array"] + (["object"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 12)}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "number":
        return {"type": "number", "minimum": -10, "maximum": 1000}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "quokka", "lamp", "x y"], rng.randint(1, 4))}
    if kind == "array":
        return {"type": "array", "items": _leaf(rng, depth + 1), "minItems": 1, "maxItems": rng.randint(1, 3)}
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int = 0) -> dict:
    names = rng.sample(["name", "age", "color", "tags", "size", "owner", "price", "ok", "parts"], rng.randint(1, 4))
    props = {name: _leaf(rng, depth) for name in names}
    required = [n for n in names if rng.random() < 0.8] or names[:1]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def test_100_schema_constrained_requests_parse_and_validate(app):
    rng = random.Random(21)
    schemas = [_object(rng) for _ in range(100)]

    bodies = [{"model": "tiny", "messages": MESSAGES, "max_tokens": 400, "temperature": 1.0, "seed": i,
               "response_format": {"type": "json_schema",
                                   "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}}}
              for i, schema in enumerate(schemas)]
    for schema, out in zip(schemas, _concurrently(app, "/v1/chat/completions", bodies), strict=True):
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop", (schema, choice)
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def _concurrently(app, path: str, bodies: list[dict]) -> list[dict]:
    async def run_all() -> list[dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     timeout=300) as client:
            resps = await asyncio.gather(*(client.post(path, json=body) for body in bodies))
        assert all(r.status_code == 200 for r in resps), [r.text for r in resps]
        return [r.json() for r in resps]

    return asyncio.run(run_all())


def test_json_object_streamed_and_not(app, client):
    """Any JSON object: the random model writes endless keys for most seeds (the constraint cannot end
    a string for it), so each answer is either a whole object (`stop`) or cut by max_tokens (`length`)."""
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 120, "temperature": 1.0,
            "response_format": {"type": "json_object"}}
    outs = _concurrently(app, "/v1/chat/completions", [{**body, "seed": seed} for seed in range(12)])
    whole = []
    for out in outs:
        choice = out["choices"][0]
        assert choice["message"]["content"].startswith("{")
        if choice["finish_reason"] == "stop":
            whole.append(json.loads(choice["message"]["content"]))
        else:
            assert choice["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 120
    assert whole and all(isinstance(obj, dict) for obj in whole)
    seed = next(s for s, out in enumerate(outs) if out["choices"][0]["finish_reason"] == "stop")
    with client.stream("POST", "/v1/chat/completions", json={**body, "seed": seed, "stream": True}) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == outs[seed]["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_guided_choice_regex_and_json_on_both_endpoints(client):
    choices = ["quokka lamp", "red", "blue whale"]
    for seed in range(4):
        out = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 20,
                                                        "temperature": 1.0, "seed": seed,
                                                        "guided_choice": choices}).json()
        assert out["choices"][0]["message"]["content"] in choices
        text = client.post("/v1/completions", json={"model": "tiny", "prompt": "Code:", "max_tokens": 20,
                                                    "temperature": 1.0, "seed": seed,
                                                    "guided_regex": r"[A-Z]{2}-[0-9]{3}"}).json()
        assert re.fullmatch(r"[A-Z]{2}-[0-9]{3}", text["choices"][0]["text"]), text
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    out = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 30,
                                               "guided_json": schema}).json()
    jsonschema.validate(json.loads(out["choices"][0]["text"]), schema)
    lark = 'start: "yes" | "no" | "maybe " NUM\nNUM: /[0-9]/'
    out = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 10,
                                               "guided_grammar": lark}).json()
    assert re.fullmatch(r"yes|no|maybe [0-9]", out["choices"][0]["text"])


def test_max_tokens_cut_is_length(client):
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    out = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4,
                                                    "response_format": {"type": "json_schema", "json_schema": {
                                                        "name": "cut", "schema": schema}}}).json()
    choice = out["choices"][0]
    assert choice["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 4
    assert choice["message"]["content"].startswith('{"s":"')


@pytest.mark.parametrize("body, param, text", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "frob"}}}},
     "response_format", "invalid JSON schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema is required"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "json_object"),
    ({"guided_regex": "[a-"}, "guided_regex", "invalid regular expression"),
    ({"guided_grammar": "start: ???"}, "guided_grammar", "invalid grammar"),
    ({"guided_choice": []}, "guided_choice", "at least 1"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, None, "at most one structured-output constraint"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5", "less than or equal to 100"),
    ({"logit_bias": {"5": -100.5}}, "logit_bias.5", "greater than or equal to -100"),
    ({"logit_bias": {"abc": 1}}, "logit_bias.abc.[key]", "pattern"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias", "not in this model's vocabulary"),
])
def test_bad_constraints_are_400_naming_the_field(client, body, param, text):
    resp = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 5, **body})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and text in error["message"], error


def test_logit_bias_forces_and_bans(client, tiny):
    body = {"model": "tiny", "prompt": "The Quokka lamp", "max_tokens": 6}
    plain = client.post("/v1/completions", json={**body, "logprobs": 0}).json()["choices"][0]
    first = tiny.tokenizer(plain["logprobs"]["tokens"][0], add_special_tokens=False)["input_ids"][0]
    forced_token = tiny.tokenizer(" quokka", add_special_tokens=False)["input_ids"][0]
    forced = client.post("/v1/completions", json={**body, "logit_bias": {str(forced_token): 100},
                                                  "temperature": 1.0, "seed": 3}).json()["choices"][0]
    assert tiny.tokenizer(forced["text"], add_special_tokens=False)["input_ids"] == [forced_token] * 6
    banned = client.post("/v1/completions", json={**body, "logit_bias": {str(first): -100},
                                                  "logprobs": 0}).json()["choices"][0]
    assert banned["logprobs"]["tokens"][0] != plain["logprobs"]["tokens"][0]
    assert plain["text"] != banned["text"]


@pytest.mark.parametrize("rows,vocab", [(1, 49152), (3, 100), (5, 33), (16, 64)])
def test_the_bitmask_forbids_exactly_the_cleared_bits(rows, vocab):
    import torch

    from tuneforge.serve.engine.grammar import allocate_bitmask, apply_bitmask

    gen = torch.Generator().manual_seed(rows * vocab)
    bitmask = allocate_bitmask(rows, vocab)
    bitmask.copy_(torch.randint(-2**31, 2**31 - 1, bitmask.shape, dtype=torch.int32, generator=gen))
    logits = torch.randn(rows, vocab, generator=gen)
    masked = apply_bitmask(logits, bitmask)
    words = bitmask.tolist()
    for row in range(rows):
        for token in (0, 1, 31, 32, vocab // 2, vocab - 1):
            allowed = (words[row][token // 32] >> (token % 32)) & 1
            assert masked[row, token].item() == (logits[row, token].item() if allowed else float("-inf")), (row, token)
    assert torch.equal(torch.isinf(masked).sum(), torch.tensor(sum(  # and no other token than the cleared bits
        1 - ((words[r][t // 32] >> (t % 32)) & 1) for r in range(rows) for t in range(vocab))))


def test_bench_structured_measures_every_constraint_at_every_concurrency():
    from tuneforge.bench.structured import render, run

    rows = run("tiny-random-llama", (1, 3), max_tokens=8, repeat=1)
    assert [(r.constraint, r.streams) for r in rows] == [
        (c, n) for n in (1, 3) for c in ("free", "json_schema", "regex")]
    assert all(r.tok_s > 0 and r.ttft_ms > 0 for r in rows)
    assert [r.ratio for r in rows if r.constraint == "free"] == [1.0, 1.0]
    assert all(r.compile_ms > 0 for r in rows if r.constraint != "free")
    assert "| json_schema | 3 |" in render(rows, 8)
