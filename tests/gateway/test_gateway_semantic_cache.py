"""The semantic cache, against a real gateway process, a real redis-server and a fake upstream; the encoder is
the packaged all-MiniLM-L6-v2 (ONNX). Its pure parts (question, signature, nearest) are tested first."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import redis
from tests.gateway.conftest import auth, create_key

from tuneforge.core.errors import ConfigError
from tuneforge.gateway.config import load_gateway
from tuneforge.gateway.semantic import DIM, nearest, quantized, question_of, signature


def test_the_question_is_the_last_user_turn_and_the_rest_is_its_context():
    body = {"model": "bot", "temperature": 0, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"}]}
    question, rest = question_of(body, chat=True)
    assert question == "Where is my order?"
    assert rest["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user"}]
    assert body["messages"][-1]["content"] == "Where is my order?"  # the request itself is not changed
    assert question_of({"messages": [{"role": "assistant", "content": "hi"}]}, chat=True) is None
    assert question_of({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, True) is None
    assert question_of({"prompt": "Once upon", "max_tokens": 3}, chat=False) == ("Once upon", {"max_tokens": 3})
    assert question_of({"prompt": [1, 2, 3]}, chat=False) is None


@pytest.mark.parametrize(("a", "b"), [
    ("Can I return shoes after 30 days?", "Can I return shoes after 14 days?"),
    ("What are your opening hours on Saturday?", "What are your opening hours on Sunday?"),  # MiniLM: 0.95
    ("What is the price of the premium plan per month?", "What is the price of the premium plan per year?"),
    ("I can't log in to my account", "I can log in to my account"),
    ("Is the Kestrel X4 waterproof?", "Is the Heron X4 waterproof?"),
])
def test_questions_that_differ_in_what_changes_the_answer_never_share_a_context(a, b):
    assert signature(a) != signature(b)


@pytest.mark.parametrize(("a", "b"), [
    ("How do I reset my password?", "What is the way to reset my password?"),
    ("How many days does delivery take?", "Delivery takes how many day?"),
    ("Hi! Where is my Veltra card?", "Where is my Veltra card?"),
])
def test_paraphrases_share_a_signature(a, b):
    assert signature(a) == signature(b)


def test_nearest_reads_int8_vectors_back_within_a_hundredth():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = [f"{i:064x}".encode() + quantized(v) for i, v in enumerate(vectors)]
    name, score = nearest(vectors[3], [*entries, b"short, ignored"])
    assert name == f"{3:064x}" and abs(score - 1.0) < 0.01
    assert nearest(vectors[0], []) is None


def test_config_refuses_a_semantic_cache_without_the_cache(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("routes:\n  bot:\n    backends: [http://127.0.0.1:1/v1]\n"
                    "    cache: false\n    cache_semantic: true\n")
    with pytest.raises(ConfigError, match="routes.bot.*cache_semantic needs cache: true"):
        load_gateway(path)


def _ask(url: str, key: str, question: str, model: str = "bot", history: tuple = (), **body) -> httpx.Response:
    payload = {"model": model, "temperature": 0, "max_tokens": 8, **body,
               "messages": [*history, {"role": "user", "content": question}]}
    reply = httpx.post(f"{url}/chat/completions", json=payload, headers=auth(key), timeout=60)
    assert reply.status_code == 200, reply.text
    return reply


def _seen(upstream: str) -> int:
    return httpx.get(upstream.removesuffix("/v1") + "/health").json()["requests"]


def test_a_paraphrase_is_answered_from_the_cache_only_in_its_own_context(tmp_path, redis_server, upstreams,
                                                                          gateways):
    v1, v2 = upstreams("--version", "v1", "--text", "Go to Settings, then Reset."), upstreams("--version", "v2")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    common = {"database_url": db, "redis_url": redis_server.url, "cache": {"max_bytes": 65536}}
    gw = gateways({**common, "routes": {"bot": {"backends": [v1], "cache_semantic": True},
                                        "exact": {"backends": [v1]}}})
    gw2 = gateways({**common, "routes": {"bot": {"backends": [v2], "cache_semantic": True}}})
    k1, k2 = create_key(db, tenant="t1"), create_key(db, tenant="t2")

    first = _ask(gw, k1, "How do I reset my password?")
    assert first.headers["x-tuneforge-cache"] == "miss"
    again = _ask(gw, k1, "What is the way to reset my password?")
    assert again.headers["x-tuneforge-cache"] == "hit"
    assert 0.92 <= float(again.headers["x-tuneforge-cache-similarity"]) < 1.0
    assert again.json()["id"] == first.json()["id"]  # the cached answer itself
    assert _seen(v1) == 1

    # each of these goes upstream: other question, tenant, version, params, system prompt, route, language
    misses = [
        _ask(gw, k1, "How do I change my e-mail address?"),
        _ask(gw, k2, "How can I reset my password?"),
        _ask(gw2, k1, "How can I reset my password?"),
        _ask(gw, k1, "How can I reset my password?", max_tokens=7),
        _ask(gw, k1, "How can I reset my password?", history=({"role": "system", "content": "Answer in French."},)),
        _ask(gw, k1, "How do I reset my password?", model="exact"),  # exact-only route: its own entry
        _ask(gw, k1, "How can I reset my password?", model="exact"),  # ...and no semantic lookup
        _ask(gw, k1, "请问怎么重置我的密码？"),
        _ask(gw, k1, "请问怎样重置我的密码？"),  # Chinese is not compared (the encoder does not read it)
    ]
    assert [r.headers["x-tuneforge-cache"] for r in misses] == ["miss"] * len(misses)
    assert _seen(v1) == 1 + 8 and _seen(v2) == 1

    # a streamed paraphrase of a streamed question is replayed as the same stream
    def stream(question: str) -> tuple[str, list[str]]:
        payload = {"model": "bot", "temperature": 0, "max_tokens": 8, "stream": True,
                   "messages": [{"role": "user", "content": question}]}
        with httpx.stream("POST", f"{gw}/chat/completions", json=payload, headers=auth(k1), timeout=60) as reply:
            return reply.headers["x-tuneforge-cache"], [x for x in reply.iter_lines() if x.startswith("data: ")]

    cold, events = stream("When will my parcel be delivered?")
    warm, replayed = stream("When will my parcel get delivered?")
    assert (cold, warm) == ("miss", "hit") and replayed == events and events[-1] == "data: [DONE]"

    metrics = httpx.get(gw.removesuffix("/v1") + "/metrics").text
    assert 'tuneforge_gateway:cache_total{result="semantic_hit",route="bot"} 2.0' in metrics
    assert "tuneforge_gateway:cache_up 1.0" in metrics

    # the questions' lists are entries of the bounded store, in the shard of their hash tag
    client = redis.Redis.from_url(redis_server.url)
    lists = client.keys("tf:cache:{c0}:s:*")
    assert lists and all(client.type(k) == b"list" for k in lists)
    stored = sum(client.strlen(k) if client.type(k) == b"string" else sum(map(len, client.lrange(k, 0, -1)))
                 for k in client.keys("tf:cache:{c0}:[es]:*"))
    assert stored == int(client.get("tf:cache:{c0}:bytes")) <= 65536


def test_the_semantic_cache_works_on_the_in_process_store_too(tmp_path, upstreams, gateways):
    up = upstreams("--text", "Open 9 to 5.")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "routes": {"bot": {"backends": [up], "cache_semantic": True}}})
    key = create_key(db, tenant="t")
    assert _ask(gw, key, "When does the shop open?").headers["x-tuneforge-cache"] == "miss"
    assert _ask(gw, key, "When does the shop open up?").headers["x-tuneforge-cache"] == "hit"
    assert _seen(up) == 1


def test_bench_semantic_cache_counts_wrong_hits_with_and_without_the_signature(tmp_path):
    from tuneforge.bench.semantic import run

    folder = tmp_path / "shop"
    folder.mkdir()
    rows = [("What are your opening hours on Saturday?", "On Saturday we open 9:00 to 13:00."),
            ("What are your opening hours on Sunday?", "On Sunday the shop is closed."),
            ("How do I reset my password?", "Reset it under Settings, then Security."),
            ("How can I reset my password?", "Reset it under Settings, then Security.")]
    (folder / "train.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in rows))
    (folder / "test.jsonl").write_text(json.dumps({"question": "What is the way to reset my password?",
                                                   "key": "Settings"}) + "\n"
                                       + json.dumps({"question": "Can I pay by card?", "key": "no such key"}) + "\n")
    report = run([folder], ["en"], tmp_path / "out", cost=False)
    result = json.loads((tmp_path / "out" / "results.json").read_text())["domains"][0]
    assert result["skipped_tests"] == 1 and result["facts"] == 3
    at = {kind: {r["threshold"]: r for r in data["rows"]} for kind, data in result["kinds"].items()}
    assert at["test"][0.92]["hits"] == 1 and at["test"][0.92]["wrong"] == 0  # the paraphrase, right answer
    paraphrase = at["paraphrase (leave-one-out)"][0.92]
    assert paraphrase["wrong"] == 0 and paraphrase["hits"] == 2  # the two reset questions find each other
    assert paraphrase["wrong_no_signature"] == 2  # Saturday ↔ Sunday (0.95) without the rule
    assert "| 0.92 | 2 / 0 | 4 / 2 |" in report


def test_bench_semantic_cache_names_a_bad_domain_row(tmp_path):
    from tuneforge.bench.semantic import read_domain

    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                   {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q?"}) + "\n")
    with pytest.raises(ConfigError, match=r"test.jsonl:1: a test row needs `question` and `key`"):
        read_domain(tmp_path)


def test_bench_semantic_cache_times_lookups_on_a_real_redis_server():
    import asyncio

    from tuneforge.bench.semantic import _lookup_costs

    costs = asyncio.run(_lookup_costs(rounds=5))
    assert costs.pop("store") == "redis-server"
    assert list(costs) == ["probe (language check + embedding)", "lookup, 1 cached", "lookup, 64 cached",
                           "lookup, 256 cached"]
    assert all(0 < q["p50"] <= q["p99"] for q in costs.values())


@pytest.mark.parametrize(("a", "b"), [
    ("Do you open at 9am on Saturday?", "Do you open at 9pm on Saturday?"),
    ("Is the rate above 5% this year?", "Is the rate below 5% this year?"),
    ("Is the fee higher in winter?", "Is the fee lower in winter?"),
    ("Is it free for children over 12?", "Is it free for children under 12?"),
    ("Does the price include VAT?", "Does the price exclude VAT?"),
    ("Can I cancel my order?", "Can’t I cancel my order?"),  # a phone keyboard's apostrophe
    ("do I need a passport to collect it", "dont I need a passport to collect it"),
    ("What is the dose for adults?", "What is the dose for children?"),
])
def test_opposites_an_encoder_puts_together_differ_in_signature(a, b):
    assert signature(a) != signature(b)


def test_requests_whose_answer_is_more_than_the_question_are_never_compared():
    import asyncio

    from tuneforge.gateway.cache import ResponseCache
    from tuneforge.gateway.config import CacheConfig
    from tuneforge.gateway.semantic import MAX_PIECES, SemanticCache

    cfg = CacheConfig()
    semantic = SemanticCache(ResponseCache(__import__("fakeredis").FakeAsyncRedis(), cfg), cfg.semantic)
    chat = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "What's the weather in Paris?"}]}

    def probe(body: dict, is_chat: bool = True):
        return asyncio.run(semantic.probe("t", "v", body, is_chat))

    assert probe(chat) is not None
    assert probe({**chat, "tools": [{"type": "function", "function": {"name": "weather"}}]}) is None
    assert probe({"model": "m", "prompt": "Once upon a time", "echo": True}, False) is None
    long = "Here is my lease. " + "The tenant keeps the flat clean. " * MAX_PIECES + "Who pays for repairs?"
    assert probe({**chat, "messages": [{"role": "user", "content": long}]}) is None  # read only in part: not compared
