"""Rate limits, parallel limits and token budgets: atomic counters every gateway instance shares.

All of a request's checks and reservations are one Redis script (`ADMIT`): either every limit has room and
all are taken together, or nothing is taken and the first limit hit is named — one round trip, no partial
acquisition, no race between two gateways. When the request ends, `SETTLE` returns the reservations and
counts the real tokens. Scripts run on a real Redis (`redis_url`) or, for one instance, on fakeredis's
in-process Redis with the same scripts (its Lua runtime is lupa), so both paths are the same code.

- RPM and TPM: sliding-window counters over the current and previous minute (the previous one weighted by
  the part of it still inside the window), as `limits`' SlidingWindowCounter; TPM takes the request's
  token reservation at admission and is corrected to the real count when it ends.
- Parallel: a sorted set of in-flight request ids scored by their deadline, so a gateway that dies
  mid-request leaks nothing past `request_ttl`.
- Budget: tokens per key per period (day / month; the period is part of the counter's name, so it resets
  by itself). Admission reserves prompt (upper bound) + max_tokens; the served tokens can therefore never
  pass the budget, and the proxy cuts a stream that would go past its reservation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from tuneforge.gateway.keys import KeyRecord

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local win = math.floor(now / 60)
local frac = (now - win * 60) / 60
local rpm, tpm, tpm_cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local par, rid, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local budget, reserve, budget_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

local function window(prefix, limit, cost)
  local cur = tonumber(redis.call('GET', prefix .. ':' .. win) or '0')
  local prev = tonumber(redis.call('GET', prefix .. ':' .. (win - 1)) or '0')
  local used = prev * (1 - frac) + cur
  if used + cost <= limit then return -1, limit - used - cost end
  local wait
  if cur + cost > limit or prev == 0 then
    wait = 60 - (now - win * 60)
  else
    wait = (1 - (limit - cur - cost) / prev - frac) * 60
  end
  return math.max(1, math.ceil(wait)), 0
end

local rpm_left, tpm_left = -1, -1
if rpm > 0 then
  local wait, left = window(KEYS[1], rpm, 1)
  if wait > 0 then return {'rpm', wait, 0, 0} end
  rpm_left = left
end
if tpm > 0 then
  local wait, left = window(KEYS[2], tpm, tpm_cost)
  if wait > 0 then return {'tpm', wait, 0, 0} end
  tpm_left = left
end
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= par then return {'parallel', 1, 0, 0} end
end
local used = 0
if budget > 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
  for _, id in ipairs(expired) do redis.call('HDEL', KEYS[6], id) end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  used = tonumber(redis.call('GET', KEYS[4]) or '0')
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[6])) do reserved = reserved + tonumber(v) end
  if used >= budget then return {'budget', 0, used, 0} end
  if used + reserved + reserve > budget then return {'budget_reserved', 1, used, reserved} end
  redis.call('ZADD', KEYS[5], now + ttl, rid)
  redis.call('HSET', KEYS[6], rid, reserve)
  redis.call('EXPIRE', KEYS[5], budget_ttl)
  redis.call('EXPIRE', KEYS[6], budget_ttl)
end
if rpm > 0 then
  redis.call('INCRBY', KEYS[1] .. ':' .. win, 1)
  redis.call('EXPIRE', KEYS[1] .. ':' .. win, 180)
end
if tpm > 0 then
  redis.call('INCRBY', KEYS[2] .. ':' .. win, tpm_cost)
  redis.call('EXPIRE', KEYS[2] .. ':' .. win, 180)
end
if par > 0 then
  redis.call('ZADD', KEYS[3], now + ttl, rid)
  redis.call('EXPIRE', KEYS[3], ttl + 60)
end
return {'ok', tostring(win), tostring(rpm_left), tostring(tpm_left), used}
"""

SETTLE = """
local rid, tokens, tpm_delta = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local win, budget_ttl = ARGV[4], tonumber(ARGV[5])
redis.call('ZREM', KEYS[3], rid)
local reserved = redis.call('HGET', KEYS[6], rid)
redis.call('HDEL', KEYS[6], rid)
redis.call('ZREM', KEYS[5], rid)
local used = 0
if tonumber(ARGV[6]) > 0 then
  used = redis.call('INCRBY', KEYS[4], tokens)
  redis.call('EXPIRE', KEYS[4], budget_ttl)
end
if tpm_delta ~= 0 and redis.call('EXISTS', KEYS[2] .. ':' .. win) == 1 then
  redis.call('INCRBY', KEYS[2] .. ':' .. win, tpm_delta)
end
return used
"""


class QuotaRefused(Exception):
    """A limit without room: its name (rpm, tpm, parallel, budget, budget_reserved) and Retry-After."""

    def __init__(self, reason: str, retry_after: int, used: int = 0, reserved: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.used, self.reserved = reason, retry_after, used, reserved


@dataclass
class Admission:
    """What a request holds while it runs; `Quota.settle` hands it back."""

    request_id: str
    keys: list[str]
    window: str
    tpm_cost: int
    reserve: int
    budget_used: int
    rpm_left: float | None
    tpm_left: float | None
    settled: bool = False


def period_id(period: str, now: float | None = None) -> str:
    stamp = time.gmtime(now if now is not None else time.time())
    return time.strftime("%Y-%m-%d" if period == "day" else "%Y-%m", stamp)


def _period_ttl(period: str) -> int:
    return 2 * 86400 if period == "day" else 62 * 86400


class Quota:
    """Limits and budgets of keys on one Redis (real, or fakeredis in-process)."""

    def __init__(self, redis: Any, request_ttl: float = 600.0) -> None:
        self.redis, self.request_ttl = redis, int(request_ttl)
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)

    @staticmethod
    def keys_of(key: KeyRecord) -> list[str]:
        base = f"tf:q:{{{key.lineage}}}"  # one hash slot per key: the script's keys live together on a cluster
        period = period_id(key.policy.budget_period)
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:par", f"{base}:used:{period}", f"{base}:resz:{period}",
                f"{base}:resh:{period}"]

    async def admit(self, key: KeyRecord, reserve: int) -> Admission:
        """Take a slot in every limit of `key` for a request that may use `reserve` tokens, or raise
        QuotaRefused naming the first limit without room."""
        p = key.policy
        rid, keys = uuid.uuid4().hex, self.keys_of(key)
        args = [p.rpm or 0, p.tpm or 0, reserve, p.max_parallel or 0, rid, self.request_ttl, p.budget_tokens or 0,
                reserve, _period_ttl(p.budget_period)]
        out = await self._admit(keys=keys, args=args)
        status = _text(out[0])
        if status != "ok":
            raise QuotaRefused(status, int(out[1]), int(out[2]), int(out[3]))
        rpm_left, tpm_left = float(_text(out[2])), float(_text(out[3]))
        return Admission(rid, keys, _text(out[1]), reserve if p.tpm else 0, reserve, int(out[4]),
                         None if rpm_left < 0 else rpm_left, None if tpm_left < 0 else tpm_left)

    async def settle(self, key: KeyRecord, admission: Admission, tokens: int) -> int:
        """End a request that used `tokens` (prompt + completion); returns the budget used this period.
        Settling twice is a no-op (the first one counts)."""
        if admission.settled:
            return admission.budget_used
        admission.settled = True
        args = [admission.request_id, tokens, tokens - admission.tpm_cost if admission.tpm_cost else 0,
                admission.window, _period_ttl(key.policy.budget_period), key.policy.budget_tokens or 0]
        return int(await self._settle(keys=admission.keys, args=args))

    async def used(self, key: KeyRecord) -> int:
        """Tokens counted against the key's budget this period."""
        return int(await self.redis.get(self.keys_of(key)[3]) or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
