"""Keys, refusals, limits and budgets, against real gateway processes, fake upstreams and a real Redis."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
from tests.gateway.conftest import auth, chat, create_key
from typer.testing import CliRunner

from tuneforge.gateway.cli import app as gateway_cli


def _config(tmp_path, backends, **extra) -> dict:
    return {"database_url": f"sqlite:///{tmp_path / 'gw.db'}", "routes": {"bot": {"backends": backends}},
            "health": {"interval_s": 0.5, "eject_s": 2.0}, **extra}


def test_keys_cli_create_list_revoke_rotate_and_only_a_hash_is_stored(tmp_path):
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    made = runner.invoke(gateway_cli, ["keys", "create", "--tenant", "acme", "-m", "bot", "--rpm", "60",
                                       "--budget", "1000", "--period", "day", "--database-url", db])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    assert key.startswith("tfk_")
    secret = key.split("_", 2)[2]
    dump = "\n".join(str(row) for row in sqlite3.connect(tmp_path / "keys.db").execute("select * from api_keys"))
    assert secret not in dump and key.split("_")[1] in dump  # the id is stored, the secret only as its hash
    listed = runner.invoke(gateway_cli, ["keys", "list", "--database-url", db])
    assert listed.exit_code == 0 and "acme" in listed.output and secret not in listed.output
    key_id = key.split("_")[1]
    rotated = runner.invoke(gateway_cli, ["keys", "rotate", key_id, "--database-url", db])
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.output.strip().splitlines()[-1]
    from tuneforge.gateway.keys import KeyStore

    store = KeyStore(db)
    assert store.verify(key) is None and store.verify(new_key).lineage == key_id  # budgets carry over
    assert runner.invoke(gateway_cli, ["keys", "revoke", new_key.split("_")[1], "--database-url", db]).exit_code == 0
    assert store.verify(new_key) is None
    bad = runner.invoke(gateway_cli, ["keys", "revoke", "nope", "--database-url", db])
    assert bad.exit_code != 0 and "nope" in str(bad.exception or bad.output)
    zero = runner.invoke(gateway_cli, ["keys", "create", "--tenant", "x", "--rpm", "0", "--database-url", db])
    assert zero.exit_code != 0 and "rpm" in str(zero.exception)


def test_refusals_are_openai_shaped_and_decided_before_upstream(tmp_path, upstreams, gateways):
    up = upstreams("--tokens", "4", "--delay-ms", "300")
    cfg = _config(tmp_path, [up], max_body_bytes=4096)
    db = cfg["database_url"]
    gw = gateways(cfg)
    other = create_key(db, tenant="t", models=["elsewhere"])
    limited = create_key(db, tenant="t", rpm=2)
    single = create_key(db, tenant="t", max_parallel=1)

    none = httpx.post(f"{gw}/chat/completions", json={"model": "bot", "messages": []})
    assert none.status_code == 401 and none.json()["error"]["code"] == "missing_api_key"
    wrong = chat(gw, "tfk_abc_def")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    forbidden = chat(gw, other)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["param"] == "model"
    missing = chat(gw, limited, model="nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    big = httpx.post(f"{gw}/chat/completions", content=b"x" * 5000, headers=auth(limited))
    assert big.status_code == 413 and "gateway.max_body_bytes" in big.json()["error"]["message"]

    first = chat(gw, limited)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert chat(gw, limited).status_code == 200
    third = chat(gw, limited)
    assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(third.headers["retry-after"]) >= 1

    with ThreadPoolExecutor(3) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: chat(gw, single, max_tokens=4), range(3)))
    assert statuses.count(200) >= 1 and 429 in statuses  # one in flight at a time: the others are refused
    health = httpx.get(up.removesuffix("/v1") + "/health").json()
    assert health["requests"] == 2 + statuses.count(200)  # nothing refused ever reached the upstream


def test_two_gateways_one_redis_never_serve_past_a_budget(tmp_path, redis_server, upstreams, gateways):
    """A key with a budget of N tokens, concurrent clients on two gateway processes behind one Redis,
    streamed and not: the tokens served never exceed N, and the rest are refused with insufficient_quota."""
    up = upstreams("--tokens", "20", "--delay-ms", "2")
    cfg = _config(tmp_path, [up], redis_url=redis_server.url)
    budget = 1500
    key = create_key(cfg["database_url"], tenant="t", budget_tokens=budget, budget_period="day")
    a, b = gateways(cfg), gateways(cfg)

    def one(i: int) -> tuple[int, int]:
        url = (a, b)[i % 2]
        if i % 3:
            reply = chat(url, key, max_tokens=20)
            return reply.status_code, reply.json()["usage"]["total_tokens"] if reply.status_code == 200 else 0
        body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=auth(key), timeout=60) as reply:
            if reply.status_code != 200:
                reply.read()
                return reply.status_code, 0
            events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ") and "[DONE]" not in line]
            usage = [json.loads(e)["usage"] for e in events if json.loads(e).get("usage")]
            return 200, usage[-1]["total_tokens"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(120)))
    served = sum(tokens for _, tokens in results)
    statuses = {s for s, _ in results}
    assert served <= budget, f"served {served} tokens past a budget of {budget}"
    assert statuses == {200, 429}
    assert served > budget * 0.5  # the budget was used, not refused wholesale
    late = chat(a, key)
    assert late.status_code == 429 and late.json()["error"]["code"] == "insufficient_quota"
    metrics = httpx.get(a.removesuffix("/v1") + "/metrics").text  # used vs limit: what an alert compares
    limit = [line for line in metrics.splitlines() if line.startswith("tuneforge_gateway:budget_limit_tokens{")]
    used = [line for line in metrics.splitlines() if line.startswith("tuneforge_gateway:budget_used_tokens{")]
    assert len(limit) == len(used) == 1 and limit[0].endswith(f" {float(budget)}")
    assert budget * 0.5 < float(used[0].rsplit(" ", 1)[1]) <= budget


def test_a_stream_past_its_reservation_is_cut_with_an_error_event(tmp_path, upstreams, gateways):
    up = upstreams("--tokens", "50", "--ignore-max-tokens")  # an upstream that ignores max_tokens
    cfg = _config(tmp_path, [up])
    key = create_key(cfg["database_url"], tenant="t", budget_tokens=10_000)
    gw = gateways(cfg)
    body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{gw}/chat/completions", json=body, headers=auth(key), timeout=60) as reply:
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    content = [e for e in events if '"content"' in e]
    assert len(content) == 5
    assert json.loads(events[-1])["error"]["code"] == "budget_exceeded"


def test_key_store_on_a_real_postgresql_server(tmp_path, postgres_server, upstreams, gateways):
    """The same store on PostgreSQL: keys created by the CLI work in a gateway, revocation is seen."""
    up = upstreams()
    runner = CliRunner()
    made = runner.invoke(gateway_cli, ["keys", "create", "--tenant", "acme", "--database-url", postgres_server])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    gw = gateways({"database_url": postgres_server, "key_cache_s": 0, "routes": {"bot": {"backends": [up]}}})
    reply = chat(gw, key)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 8
    runner.invoke(gateway_cli, ["keys", "revoke", key.split("_")[1], "--database-url", postgres_server])
    assert chat(gw, key).status_code == 401
