"""The response cache's store on a real redis-server: the bound, the semantic lists' accounting, and a cache
whose bookkeeping keys were lost (a Redis under allkeys-lru) healing instead of evicting every new entry."""

from __future__ import annotations

import asyncio

import redis

from tuneforge.gateway.cache import ResponseCache, meta_keys
from tuneforge.gateway.config import CacheConfig
from tuneforge.gateway.resp import PipelinedRedis


def test_lists_are_counted_once_per_question_and_a_store_that_lost_its_index_heals(redis_server):
    cfg = CacheConfig(redis_url=redis_server.url, max_bytes=4096, max_entry_bytes=1024)
    plain = redis.Redis.from_url(redis_server.url)
    index, sizes, total = meta_keys("tf:cache:{c0}")

    async def run() -> None:
        cache = ResponseCache(PipelinedRedis(redis_server.url), cfg)
        question = cache.name("s", "a" * 64)
        for _ in range(3):  # the same question re-asked: one element, counted once
            await cache.push(question, b"q" * 100, max_length=8)
        assert plain.llen(question) == 1 and int(plain.get(total)) == 100
        await cache.push(question, b"r" * 100, max_length=8)
        assert plain.llen(question) == 2 and int(plain.get(total)) == 200
        for i in range(20):  # 20 × 300 bytes into a 4096-byte bound
            await cache.put(cache.name("e", f"{i:064x}"), b"x" * 300)
        assert int(plain.get(total)) <= 4096 and await cache.get(cache.name("e", f"{19:064x}")) is not None
        plain.delete(index, sizes)  # evicted by an LRU policy: the total is left counting entries no one lists
        plain.set(total, 10**6)
        fresh = cache.name("e", "f" * 64)
        await cache.put(fresh, b"y" * 300)
        assert await cache.get(fresh) == b"y" * 300  # kept, not evicted as "the oldest"
        assert int(plain.get(total)) == 300  # the total starts again from what is listed
        await cache.redis.aclose()

    asyncio.run(run())
