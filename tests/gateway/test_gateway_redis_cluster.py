"""The gateway on a real Redis Cluster (three redis-server masters made by `redis-cli --cluster create`): limits,
budgets, the bounded cache and the semantic cache, each script's keys in one slot."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from tests.gateway.conftest import auth, chat, create_key
from tests.servers import RedisCluster


@pytest.fixture
def cluster(tmp_path):
    made = RedisCluster(tmp_path)
    yield made
    made.stop()


def _cached(node: redis.Redis) -> list[bytes]:
    return [k for k in node.keys("tf:cache:*") if b":e:" in k or b":s:" in k]


def test_limits_budgets_and_the_cache_on_a_redis_cluster(tmp_path, cluster, upstreams, gateways):
    up = upstreams("--tokens", "40")
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    bound, shards = 12 * 1024, 6
    cfg = {"database_url": db, "redis_url": cluster.url, "cache": {"max_bytes": bound, "shards": shards},
           "routes": {"bot": {"backends": [up], "cache_semantic": True}}}
    a, b = gateways(cfg), gateways(cfg)

    # a budget shared by two gateways: never served past it, then insufficient_quota
    budget = 600
    limited = create_key(db, tenant="t", budget_tokens=budget, budget_period="day", rpm=1000)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda i: chat((a, b)[i % 2], limited, max_tokens=20), range(60)))
    served = sum(r.json()["usage"]["total_tokens"] for r in replies if r.status_code == 200)
    assert {r.status_code for r in replies} == {200, 429} and budget * 0.5 < served <= budget
    assert chat(a, limited).json()["error"]["code"] == "insufficient_quota"

    # the cache: exact and semantic hits, across the two gateways
    key = create_key(db, tenant="u")
    ask = {"temperature": 0, "max_tokens": 40}
    first = chat(a, key, messages=[{"role": "user", "content": "How do I reset my password?"}], **ask)
    exact = chat(b, key, messages=[{"role": "user", "content": "How do I reset my password?"}], **ask)
    close = chat(b, key, messages=[{"role": "user", "content": "How can I reset my password?"}], **ask)
    assert [r.headers["x-tuneforge-cache"] for r in (first, exact, close)] == ["miss", "hit", "hit"]
    assert "x-tuneforge-cache-similarity" in close.headers and close.json()["id"] == first.json()["id"]

    # filled past its bound: every shard stays under its share, and the shards live on more than one node
    for i in range(60):
        assert chat(a, key, messages=[{"role": "user", "content": f"question {i}"}], **ask).status_code == 200
    nodes = [redis.Redis(port=n.port) for n in cluster.nodes]
    per_node = [_cached(node) for node in nodes]
    assert sum(1 for keys in per_node if keys) >= 2
    whole = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)  # routes each GET to its slot's node
    totals = [int(whole.get(f"tf:cache:{{c{s}}}:bytes") or 0) for s in range(shards)]
    assert 0 < sum(totals) <= bound and max(totals) <= bound // shards
    metrics = httpx.get(a.removesuffix("/v1") + "/metrics").text
    assert "tuneforge_gateway:cache_up 1.0" in metrics
    assert chat(a, key, messages=[{"role": "user", "content": "question 59"}],
                **ask).headers["x-tuneforge-cache"] == "hit"
    assert httpx.get(a.removesuffix("/v1") + "/ready", headers=auth(key)).json()["cache"] == "ok"

