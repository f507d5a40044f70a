"""The response cache: exact match on (tenant, model version, normalized request), bounded in bytes.

Only deterministic requests are cached (temperature 0, or a fixed seed) unless a route opts in. The
version is the replica's — the artifact's content hash for a tuneforge server — so a new version never
answers from an old one's cache. Streamed answers are stored as the SSE events the client got and
replayed as a stream. The bound is kept by the store itself: one script adds an entry and evicts the
oldest until the cached bytes fit `cache.max_bytes` (entries that expired still count until evicted,
so the real size is at most the bound). A cache whose Redis is down is bypassed (the request goes
upstream) and retried after `RETRY_S`; `/ready` reports it degraded meanwhile.
"""

from __future__ import annotations

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
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size - old)
local evicted = 0
while total > tonumber(ARGV[3]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  local s = tonumber(redis.call('HGET', KEYS[3], oldest) or '0')
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('DEL', oldest)
  total = redis.call('DECRBY', KEYS[4], s)
  evicted = evicted + 1
end
return {total, evicted}
"""
INDEX, SIZES, TOTAL = "tf:cache:index", "tf:cache:sizes", "tf:cache:bytes"


def deterministic(body: dict[str, Any]) -> bool:
    """Would the same request give the same answer: greedy (temperature 0) or seeded."""
    return body.get("temperature") == 0 or body.get("seed") is not None


def cache_key(tenant: str, version: str, body: dict[str, Any]) -> str:
    """The entry's name: a hash of tenant, version and the request without fields that do not change the
    answer (key order and whitespace normalized by canonical JSON)."""
    normalized = {k: v for k, v in body.items() if k not in IGNORED}
    canonical = json.dumps([tenant, version, normalized], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "tf:cache:e:" + hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Cached answers on a Redis (real, or the in-process fakeredis)."""

    def __init__(self, redis: Any, cfg: CacheConfig) -> None:
        self.redis, self.cfg = redis, cfg
        self._put = redis.register_script(PUT)
        self.down_since: float | None = None
        self.evicted = 0

    def usable(self, route: RouteConfig, body: dict[str, Any]) -> bool:
        if not (self.cfg.enabled and route.cache):
            return False
        if self.down_since is not None and time.monotonic() - self.down_since < RETRY_S:
            return False
        return route.cache_sampled or deterministic(body)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(key)
        except Exception as exc:  # any Redis failure: bypass, never fail the request
            self._failed(exc)
            return None
        self.down_since = None
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.cfg.max_entry_bytes:
            return
        try:
            _, evicted = await self._put(keys=[key, INDEX, SIZES, TOTAL],
                                         args=[value, self.cfg.ttl_s, self.cfg.max_bytes, time.time()])
            self.evicted += int(evicted)
        except Exception as exc:
            self._failed(exc)

    async def size(self) -> int:
        return int(await self.redis.get(TOTAL) or 0)

    def _failed(self, exc: Exception) -> None:
        if self.down_since is None:
            log.warning("response cache unavailable, bypassing it: %s: %s", type(exc).__name__, exc)
        self.down_since = time.monotonic()

    @property
    def degraded(self) -> bool:
        return self.down_since is not None
