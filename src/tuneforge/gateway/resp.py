"""A pipelined Redis client for the gateway's hot path: one connection, each command written the moment it
is made, replies matched in order (Redis answers a connection's commands in the order they came), parsed
by hiredis (Redis' own C reply parser).

Why not redis-py's asyncio client, which the rest of the project uses: every request runs two scripts
(admit, settle), and redis-py takes a pooled connection, a lock and a full write/drain/read round per
command. Measured here with the admission script, 64 concurrent callers on one event loop: redis-py
4,369 admit+settle pairs/s, admit p50 6.7 ms / p99 46 ms; this client 19,704 pairs/s, p50 2.0 ms / p99
3.7 ms (1 caller: 2,347 vs 4,211 pairs/s). It speaks only what the gateway uses — scripts (`EVALSHA`,
loading the script again after a Redis restart) and `GET` — through redis-py's own method names, so the
quota and the cache take either client.

A lost connection fails the commands in flight (the callers' limits fail closed, the cache is bypassed)
and the next command connects again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis


def _pack(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller timed out; the reply still had to be taken off in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"the connection to Redis was lost ({exc or 'closed'})"))


class Script:
    """A Lua script called by its SHA-1 (`EVALSHA`), loaded again when the server does not know it."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.client.execute("SCRIPT", "LOAD", self.source)
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)


class PipelinedRedis:
    """`redis://host:port/db` on one pipelined connection; `timeout_s` bounds each command and connect."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"redis_url: only redis:// URLs take the pipelined client, not {url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.password, self.username = parts.password, parts.username
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    async def get(self, key: str) -> bytes | None:
        return await self.execute("GET", key)

    async def execute(self, *args: Any) -> Any:
        return await self._send(await self._connected(), args)

    async def _send(self, protocol: _Protocol, args: Sequence[Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        assert protocol.transport is not None
        protocol.transport.write(_pack(args))
        async with asyncio.timeout(self.timeout_s):
            return await future

    async def _connected(self) -> _Protocol:
        if self._protocol is not None and not self._protocol.lost:
            return self._protocol
        if self._connecting is None:  # one connect for every caller waiting on it
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s):
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
        if self.password is not None:
            await self._send(protocol, ("AUTH", *((self.username,) if self.username else ()), self.password))
        if self.db:
            await self._send(protocol, ("SELECT", self.db))
        self._protocol = protocol  # only now: no command may run before AUTH / SELECT
        return protocol

    async def aclose(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
