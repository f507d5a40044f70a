"""The response cache: exact match on (tenant, model version, normalized request), bounded in bytes.

Only deterministic requests are cached (temperature 0, or a fixed seed) unless a route opts in. The
version is the replica's — the artifact's content hash for a tuneforge server — so a new version never
answers from an old one's cache. Streamed answers are stored as the SSE events the client got and
replayed as a stream. The bound is kept by the store itself: one script adds an entry and evicts the
oldest until the cached bytes fit `cache.max_bytes` (entries that expired still count until evicted,
so the real size is at most the bound). A cache whose Redis is down is bypassed (the request goes
upstream) and retried after `RETRY_S`; `/ready` reports it degraded meanwhile.

Redis Cluster: every key the script touches, the evicted ones included, carries the hash tag of its shard
(`tf:cache:{c3}:…`), so one script's keys always live in one slot (the BullMQ layout). `cache.shards`
spreads the cache over that many slots, each bounded by `max_bytes / shards`. The semantic cache's
question lists (`gateway.semantic`) are entries of the same store, under the same bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from tuneforge.gateway.config import CacheConfig, RouteConfig

log = logging.getLogger("tuneforge.gateway")
RETRY_S = 5.0  # after a Redis failure, the cache is skipped this long before it is tried again
IGNORED = ("user", "stream_options")  # fields that do not change the answer

PUT = """
local size = string.len(ARGV[1])
local bound = tonumber(ARGV[3])
if ARGV[5] == 'push' then  -- a list entry (the semantic cache's questions): newest first, once, at most ARGV[6]
  redis.call('LREM', KEYS[1], 0, ARGV[1])
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[6]) - 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  size = redis.call('LLEN', KEYS[1]) * size
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
local t = redis.call('TIME')  -- the server's clock orders entries: a gateway with a slow clock is not evicted first
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
redis.call('ZADD', KEYS[2], tonumber(t[1]) + tonumber(t[2]) / 1e6, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size - old)
local evicted = 0
while total > bound do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then
    redis.call('SET', KEYS[4], 0)
    total = 0
    break
  end
  if oldest == KEYS[1] and redis.call('ZCARD', KEYS[2]) == 1 then
    -- every other entry is gone, so this one is all there is: a total whose bookkeeping keys were lost (a
    -- cache Redis under allkeys-lru) is set right here instead of evicting each new entry for ever
    redis.call('SET', KEYS[4], size)
    total = size
    if size <= bound then break end
  end
  local s = tonumber(redis.call('HGET', KEYS[3], oldest) or '0')
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('DEL', oldest)
  total = redis.call('DECRBY', KEYS[4], s)
  evicted = evicted + 1
end
return {total, evicted}
"""
LIST = "return redis.call('LRANGE', KEYS[1], 0, -1)"


def deterministic(body: dict[str, Any]) -> bool:
    """Would the same request give the same answer: greedy (temperature 0) or seeded."""
    return body.get("temperature") == 0 or body.get("seed") is not None


def digest(*parts: Any) -> str:
    """SHA-256 of `parts` as canonical JSON (key order and whitespace normalized)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The request without the fields that do not change the answer."""
    return {k: v for k, v in body.items() if k not in IGNORED}


def shard_prefix(name_digest: str, shards: int) -> str:
    """`tf:cache:{cN}`: the hash tag that puts an entry and its shard's index in one Redis Cluster slot."""
    return f"tf:cache:{{c{int(name_digest[:8], 16) % shards}}}"


def meta_keys(prefix: str) -> list[str]:
    """A shard's index (name → time added), sizes (name → bytes) and total bytes."""
    return [f"{prefix}:index", f"{prefix}:sizes", f"{prefix}:bytes"]


class ResponseCache:
    """Cached answers on a Redis (real, or the in-process fakeredis)."""

    def __init__(self, redis: Any, cfg: CacheConfig) -> None:
        self.redis, self.cfg = redis, cfg
        self._put = redis.register_script(PUT)
        self._list = redis.register_script(LIST)
        self.down_since: float | None = None
        self.evicted = 0

    def usable(self, route: RouteConfig, body: dict[str, Any]) -> bool:
        if not (self.cfg.enabled and route.cache):
            return False
        if self.down_since is not None and time.monotonic() - self.down_since < RETRY_S:
            return False
        return route.cache_sampled or deterministic(body)

    def key(self, tenant: str, version: str, body: dict[str, Any]) -> str:
        """The entry's name: a hash of tenant, version and the request's answer-changing fields."""
        return self.name("e", digest(tenant, version, answer_fields(body)))

    def name(self, kind: str, name_digest: str) -> str:
        """An entry of `kind` (e: an answer, s: the semantic cache's questions) in the shard its digest picks."""
        return f"{shard_prefix(name_digest, self.cfg.shards)}:{kind}:{name_digest}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(key)
        except Exception as exc:  # any Redis failure: bypass, never fail the request
            self._failed(exc)
            return None
        self.down_since = None
        return value

    @property
    def largest(self) -> int:
        """The largest answer cached: max_entry_bytes, or a shard's share of the bound when smaller (an answer
        larger than its shard would evict the whole shard, itself included)."""
        return min(self.cfg.max_entry_bytes, self.cfg.max_bytes // self.cfg.shards)

    async def put(self, key: str, value: bytes) -> None:
        if len(value) <= self.largest:
            await self._store(key, value, "set", 0)

    async def push(self, key: str, value: bytes, max_length: int) -> None:
        """Put `value` at the head of the list `key`, keeping its `max_length` newest, all under the bound."""
        await self._store(key, value, "push", max_length)

    async def members(self, key: str) -> list[bytes]:
        """The list `key`, newest first; empty when missing or when Redis is down (bypassed, like `get`)."""
        try:
            values = await self._list(keys=[key])
        except Exception as exc:
            self._failed(exc)
            return []
        self.down_since = None
        return list(values or [])

    async def _store(self, key: str, value: bytes, mode: str, max_length: int) -> None:
        prefix = key.rsplit(":", 2)[0]  # tf:cache:{cN}
        bound = max(1, self.cfg.max_bytes // self.cfg.shards)
        try:
            _, evicted = await self._put(keys=[key, *meta_keys(prefix)],
                                         args=[value, self.cfg.ttl_s, bound, 0, mode, max_length])
            self.evicted += int(evicted)
        except Exception as exc:
            self._failed(exc)

    async def size(self) -> int:
        """Bytes cached, over every shard (one GET each: a cluster answers no cross-slot MGET)."""
        total = 0
        for shard in range(self.cfg.shards):
            total += int(await self.redis.get(meta_keys(f"tf:cache:{{c{shard}}}")[2]) or 0)
        return total

    async def watch(self) -> None:
        """While the cache is bypassed, try its Redis every RETRY_S (a route that only sends uncacheable requests
        would otherwise never find out it is back, and `cache_up` / `/ready` would stay degraded)."""
        while True:
            await asyncio.sleep(RETRY_S)
            if self.down_since is not None and time.monotonic() - self.down_since >= RETRY_S:
                try:
                    await self.redis.get(meta_keys(shard_prefix("0" * 8, self.cfg.shards))[2])
                except Exception as exc:
                    self._failed(exc)
                else:
                    self.down_since = None
                    log.info("response cache reachable again")

    def _failed(self, exc: Exception) -> None:
        if self.down_since is None:
            log.warning("response cache unavailable, bypassing it: %s: %s", type(exc).__name__, exc)
        self.down_since = time.monotonic()

    @property
    def degraded(self) -> bool:
        return self.down_since is not None
