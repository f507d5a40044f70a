"""Cache, load balancing, failover and canary, against real gateway processes, fake upstreams and Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
from tests.gateway.conftest import auth, chat, create_key
from typer.testing import CliRunner

from tuneforge.gateway.cli import app as gateway_cli


def _requests_seen(upstream: str) -> int:
    return httpx.get(upstream.removesuffix("/v1") + "/health").json()["requests"]


def _stream(url: str, key: str, **body) -> tuple[httpx.Headers, list[str]]:
    payload = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True,
               **body}
    with httpx.stream("POST", f"{url}/chat/completions", json=payload, headers=auth(key), timeout=60) as reply:
        assert reply.status_code == 200, reply.read()
        return reply.headers, [line for line in reply.iter_lines() if line.startswith("data: ")]


def test_cache_hits_only_within_tenant_version_and_params(tmp_path, redis_server, upstreams, gateways):
    v1, v2 = upstreams("--version", "v1"), upstreams("--version", "v2")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    common = {"database_url": db, "redis_url": redis_server.url}
    gw1 = gateways({**common, "routes": {"bot": {"backends": [v1]}}})
    gw2 = gateways({**common, "routes": {"bot": {"backends": [v2]}}})  # same Redis, another model version
    k1, k2 = create_key(db, tenant="t1"), create_key(db, tenant="t2")

    def cache(url, key, **body) -> str:
        reply = chat(url, key, **body)
        assert reply.status_code == 200
        return reply.headers["x-tuneforge-cache"]

    assert cache(gw1, k1, temperature=0) == "miss"
    assert cache(gw1, k1, temperature=0) == "hit"
    assert cache(gw1, k1, temperature=0, user="someone") == "hit"  # `user` does not change the answer
    assert cache(gw1, k1, temperature=0, max_tokens=7) == "miss"  # other params
    assert cache(gw1, k2, temperature=0) == "miss"  # other tenant
    assert cache(gw2, k1, temperature=0) == "miss"  # other model version
    assert cache(gw1, k1, temperature=0.7) == "bypass"  # sampled: not cached
    assert cache(gw1, k1, temperature=0.7, seed=3) == "miss"
    assert cache(gw1, k1, temperature=0.7, seed=3) == "hit"
    assert _requests_seen(v1) == 5 and _requests_seen(v2) == 1

    first_headers, first = _stream(gw1, k1, temperature=0)
    again_headers, again = _stream(gw1, k1, temperature=0)
    assert (first_headers["x-tuneforge-cache"], again_headers["x-tuneforge-cache"]) == ("miss", "hit")
    assert again == first and first[-1] == "data: [DONE]"  # replayed as the same stream
    assert again_headers["x-tuneforge-model-version"] == "v1"
    # every hit is in the request log, as its own row (3 JSON answers and the stream)
    hits = _log_rows(db, lambda rows: sum(r["cache"] == "hit" for r in rows) >= 4)
    assert sorted(r["cache"] for r in hits).count("hit") == 4
    assert all(r["prompt_tokens"] == r["completion_tokens"] == 0 for r in hits if r["cache"] == "hit")


def _log_rows(database_url: str, done, seconds: float = 20.0) -> list[dict]:
    """The gateway's request log once `done(rows)` holds (it is written in batches, about every second)."""
    import time

    import sqlalchemy as sa

    from tuneforge.gateway.store import request_log

    engine, end = sa.create_engine(database_url), time.monotonic() + seconds
    while True:
        with engine.connect() as db:
            rows = [dict(r) for r in db.execute(sa.select(request_log)).mappings()]
        if done(rows) or time.monotonic() > end:
            return rows
        time.sleep(0.2)


def test_redis_killed_mid_test_bypasses_the_cache_with_no_errors(tmp_path, redis_server, upstreams, gateways):
    up = upstreams()
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "cache": {"redis_url": redis_server.url},
                   "routes": {"bot": {"backends": [up]}}})
    key = create_key(db, tenant="t")
    assert chat(gw, key, temperature=0).headers["x-tuneforge-cache"] == "miss"
    assert chat(gw, key, temperature=0).headers["x-tuneforge-cache"] == "hit"
    redis_server.stop()
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: chat(gw, key, temperature=0), range(20)))
    assert [r.status_code for r in replies] == [200] * 20
    ready = httpx.get(gw.removesuffix("/v1") + "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded" and ready.json()["cache"] == "bypassed"
    assert "tuneforge_gateway:cache_up 0.0" in httpx.get(gw.removesuffix("/v1") + "/metrics").text
    # Redis comes back; only uncacheable (sampled) requests arrive: the gateway still finds it up again
    from tests.servers import Redis, until

    again = Redis(tmp_path, port=redis_server.port)
    try:
        assert chat(gw, key, temperature=0.7).headers["x-tuneforge-cache"] == "bypass"
        until(lambda: httpx.get(gw.removesuffix("/v1") + "/ready").json()["cache"] == "ok", 30,
              "the cache reported up again")
        assert "tuneforge_gateway:cache_up 1.0" in httpx.get(gw.removesuffix("/v1") + "/metrics").text
    finally:
        again.stop()


def test_cache_stays_under_its_byte_bound_when_filled_past_it(tmp_path, redis_server, upstreams, gateways):
    up = upstreams("--tokens", "64")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    bound = 8192
    gw = gateways({"database_url": db, "redis_url": redis_server.url, "cache": {"max_bytes": bound},
                   "routes": {"bot": {"backends": [up]}}})
    key = create_key(db, tenant="t")
    for i in range(60):  # each answer ~ 500 bytes: ~4x the bound
        assert chat(gw, key, temperature=0, max_tokens=64, messages=[{"role": "user", "content": f"q{i}"}]
                    ).status_code == 200
    client = redis.Redis.from_url(redis_server.url)
    entries = client.keys("tf:cache:{c0}:e:*")
    stored = sum(client.strlen(k) for k in entries)
    assert 0 < stored <= bound and int(client.get("tf:cache:{c0}:bytes")) <= bound
    assert 5 < len(entries) < 60  # the newest kept, the oldest evicted
    newest = chat(gw, key, temperature=0, max_tokens=64, messages=[{"role": "user", "content": "q59"}])
    assert newest.headers["x-tuneforge-cache"] == "hit"


def test_least_outstanding_balancing_and_failover_before_the_first_byte(tmp_path, upstreams, gateways):
    a, b = upstreams("--delay-ms", "40", "--tokens", "10"), upstreams("--delay-ms", "40", "--tokens", "10")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = gateways({"database_url": db, "routes": {"bot": {"backends": [a, b]}},
                   "health": {"interval_s": 0.5, "eject_s": 30}})
    key = create_key(db, tenant="t")
    with ThreadPoolExecutor(8) as pool:
        assert all(s == 200 for s in pool.map(lambda _: chat(gw, key, max_tokens=10).status_code, range(16)))
    seen_a, seen_b = _requests_seen(a), _requests_seen(b)
    assert seen_a + seen_b == 16 and min(seen_a, seen_b) >= 4  # spread by outstanding requests

    upstreams.processes[0].kill()  # replica a dies without a word
    upstreams.processes[0].wait()
    replies = [chat(gw, key, max_tokens=4) for _ in range(10)]
    assert [r.status_code for r in replies] == [200] * 10  # retried on b before any byte went out
    assert _requests_seen(b) == seen_b + 10
    ready = httpx.get(gw.removesuffix("/v1") + "/ready").json()
    assert ready["status"] == "degraded" and ready["routes"]["bot"]["up"] == 1
    metrics = httpx.get(gw.removesuffix("/v1") + "/metrics").text
    assert "tuneforge_gateway:replica_ejections_total" in metrics


def test_canary_split_is_sticky_with_feedback_and_a_comparison(tmp_path, upstreams, gateways):
    v3, v4 = upstreams("--version", "v3"), upstreams("--version", "v4")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    route = {"sticky_by": "user", "variants": {"v3": {"backends": [v3], "weight": 90},
                                               "v4": {"backends": [v4], "weight": 10}}}
    gw = gateways({"database_url": db, "routes": {"bot": route}})
    key, stranger = create_key(db, tenant="t"), create_key(db, tenant="other")
    assigned, ids = {}, {}
    for user in range(150):
        variants = set()
        for _ in range(2):
            reply = chat(gw, key, user=f"user-{user}", max_tokens=2)
            assert reply.status_code == 200
            variants.add(reply.headers["x-tuneforge-variant"])
            ids.setdefault(reply.headers["x-tuneforge-variant"], []).append(reply.json()["id"])
        assert len(variants) == 1  # one user sees one version
        assigned[user] = variants.pop()
    share = sum(v == "v4" for v in assigned.values()) / len(assigned)
    assert 0.03 < share < 0.2, share

    def vote(rid, score, who=key):
        return httpx.post(f"{gw}/feedback", json={"response_id": rid, "score": score}, headers=auth(who))

    for rid in ids["v3"][:20]:
        assert vote(rid, 1).status_code == 200
    for rid in ids["v4"][:10]:
        assert vote(rid, -1).json()["variant"] == "v4"
    assert vote("nope", 1).status_code == 404
    assert vote(ids["v3"][0], 5).status_code == 400
    assert vote(ids["v3"][0], 1, stranger).status_code == 404  # another tenant's answer
    out = CliRunner().invoke(gateway_cli, ["compare", "bot", "--database-url", db])
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if line.startswith("| v") and "variant" not in line]
    lines = {line.split("|")[1].strip(): line for line in rows}
    assert set(lines) == {"v3", "v4"} and "100.0 %" in lines["v3"] and "| 10 |" in lines["v4"]
    assert "thumbs-up differs" in out.output
