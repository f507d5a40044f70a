"""Who is calling: the bearer key looked up once and trusted for `key_cache_s` (the database is not asked
on every request; a revoked key stops working within that time)."""

from __future__ import annotations

import asyncio
import time

from tuneforge.gateway.errors import GatewayError
from tuneforge.gateway.keys import KeyRecord, KeyStore
from tuneforge.serve.api.wire import bearer_token

NEGATIVE_MAX = 10_000  # unknown keys remembered (bounded: random keys must not grow memory)


class KeyCache:
    def __init__(self, store: KeyStore, ttl_s: float) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._known: dict[str, tuple[KeyRecord | None, float]] = {}

    async def resolve(self, authorization: str | None) -> KeyRecord:
        """The live key of an `Authorization: Bearer …` header, or 401."""
        token = bearer_token(authorization)
        if token is None:
            raise GatewayError(401, "this gateway needs an API key: send `Authorization: Bearer <key>` "
                               "(create one with `tuneforge gateway keys create`)", "missing_api_key",
                               "authentication_error")
        now = time.monotonic()
        hit = self._known.get(token)
        if hit is None or hit[1] < now:
            record = await asyncio.to_thread(self.store.verify, token)
            if record is None and len(self._known) >= NEGATIVE_MAX:
                self._known.clear()
            self._known[token] = hit = (record, now + self.ttl_s)
        if hit[0] is None:
            raise GatewayError(401, "the API key sent is not valid (unknown, revoked or mistyped)", "invalid_api_key",
                               "authentication_error")
        return hit[0]
