"""Talking to a replica: one JSON answer, or an SSE stream forwarded event by event without buffering.

While a stream passes through, each event is looked at (not changed): its id, the text it carries and,
at the end, the usage the gateway asked for (`stream_options.include_usage` is always set upstream so
that budgets count the real tokens; the usage event is dropped again when the client did not ask for it).
A stream that goes past its token reservation is cut with a final error event.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tuneforge.serve.api.wire import error_body

RETRYABLE = (429, 500, 502, 503, 504)  # answers that another replica may not give
DONE = b"data: [DONE]"
TEXT = re.compile(rb'"(?:content|text)":\s*"(?!")')  # a choice carrying text in a chunk (json's own spacing)


class UpstreamFailed(Exception):
    """The replica did not give an answer (no byte of it reached the client): retry elsewhere."""

    def __init__(self, why: str, status: int | None = None, body: bytes = b"", eject: bool = True) -> None:
        super().__init__(why)
        self.why, self.status, self.body, self.eject = why, status, body, eject


@dataclass
class Usage:
    prompt: int = 0
    completion: int = 0
    counted: int = 0  # content-bearing events seen: the completion tokens when the upstream sends no usage

    @property
    def total(self) -> int:
        return self.prompt + (self.completion or self.counted)


@dataclass
class Outcome:
    """What the gateway learned from an answer, for limits, cache, metrics and the request log."""

    status: int = 200
    usage: Usage = field(default_factory=Usage)
    response_id: str | None = None
    ttft: float | None = None
    complete: bool = False
    cut: bool = False


def headers_for(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def session(connect_s: float, read_s: float) -> aiohttp.ClientSession:
    """The upstream client: aiohttp, keep-alive connections reused per replica. (httpx's pool scans every
    pooled connection on each request; profiled here, it was a third of the gateway's CPU.)"""
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=read_s)
    return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                                 auto_decompress=False)


class Reply:
    """An upstream answer: status, headers, and its body whole (`content`) or as it arrives (`read`)."""

    def __init__(self, response: aiohttp.ClientResponse, content: bytes = b"") -> None:
        self.response, self.content = response, content
        self.status_code, self.headers = response.status, response.headers

    async def read(self) -> bytes:
        """What the socket has of the body now (b"" at its end)."""
        return await self.response.content.readany()

    async def aclose(self) -> None:
        # A stream read to its end hands its connection back to the pool (reconnecting per request cost
        # the upstream an accept and the request a handshake under load); one cut short is closed —
        # aiohttp closes a connection whose payload is not at EOF — which cancels it upstream.
        self.response.release()


UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


async def _send(client: aiohttp.ClientSession, url: str, body: dict, api_key: str | None,
                outcome: Outcome, stream: bool) -> Reply:
    started = time.perf_counter()
    try:
        response = await client.post(url, data=json.dumps(body, ensure_ascii=False).encode(),
                                     headers={"Content-Type": "application/json", **headers_for(api_key)})
        content = b"" if stream and response.status == 200 else await response.read()
    except UPSTREAM_ERRORS as exc:
        raise UpstreamFailed(f"{type(exc).__name__}: {exc}") from None
    outcome.ttft = time.perf_counter() - started
    outcome.status = response.status
    if response.status in RETRYABLE:
        raise UpstreamFailed(f"answered {response.status}", response.status, content, eject=response.status != 429)
    return Reply(response, content)


async def call_json(client: aiohttp.ClientSession, url: str, body: dict, api_key: str | None,
                    outcome: Outcome) -> Reply:
    """POST a non-streamed request; 5xx / 429 / a broken connection raise UpstreamFailed (retryable)."""
    reply = await _send(client, url, body, api_key, outcome, stream=False)
    if reply.status_code == 200:
        try:
            data = json.loads(reply.content)
            usage = data.get("usage") or {}
            outcome.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            outcome.response_id = data.get("id")
            outcome.complete = True
        except (ValueError, AttributeError, TypeError):
            pass
    return reply


async def open_stream(client: aiohttp.ClientSession, url: str, body: dict, api_key: str | None,
                      outcome: Outcome) -> Reply:
    """Open a streamed request; a failure before the answer starts raises UpstreamFailed (retryable). A
    non-200 answer comes back read whole."""
    reply = await _send(client, url, body, api_key, outcome, stream=True)
    if reply.status_code != 200:
        outcome.complete = True
    return reply


def error_event(message: str, code: str, type_: str = "server_error") -> bytes:
    return f"data: {json.dumps(error_body(message, type_, code=code))}\n\n".encode()


class StreamWatch:
    """Looks at each SSE event going by: id, content tokens, usage; decides what the client gets (the
    route's guards rewrite the text when it has any); `texts` collects each choice's text as the client
    got it (a request sampled for the traffic log)."""

    def __init__(self, outcome: Outcome, client_wants_usage: bool, cap: int, guards: Any = None,
                 texts: dict[int, list[str]] | None = None) -> None:
        self.outcome, self.wants_usage, self.cap, self.guards = outcome, client_wants_usage, cap, guards
        self.texts = texts
        self.fast = guards is None and texts is None  # nothing needs each event's text

    def event(self, raw: bytes) -> bytes | None:
        """The event as the client gets it (None: dropped). Without guards only the first event (its id) and
        the usage event are parsed; text-bearing events are counted by a byte pattern."""
        if not raw.startswith(b"data: ") or raw.startswith(DONE):
            if raw.startswith(DONE):
                self.outcome.complete = True
            return raw
        if self.fast and self.outcome.response_id is not None and b'"usage"' not in raw:
            self.outcome.usage.counted += len(TEXT.findall(raw))
            return raw
        try:
            data = json.loads(raw[6:])
        except ValueError:
            return raw
        if not isinstance(data, dict):
            return raw
        if self.outcome.response_id is None:
            self.outcome.response_id = data.get("id")
        choices = data.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content") or choice.get("text"):
                self.outcome.usage.counted += 1
        usage = data.get("usage")
        if usage:
            self.outcome.usage.prompt = int(usage.get("prompt_tokens") or 0)
            self.outcome.usage.completion = int(usage.get("completion_tokens") or 0)
            if not choices and not self.wants_usage:
                return None
        out = self.guards.event(data) if self.guards is not None and choices else raw  # rewrites `data` too
        if self.texts is not None:
            for choice in choices:
                piece = (choice.get("delta") or {}).get("content") or choice.get("text")
                if piece:
                    self.texts.setdefault(int(choice.get("index") or 0), []).append(piece)
        return out

    def stop(self) -> bytes | None:
        """The final error event when the stream must end here, else None."""
        if self.outcome.usage.counted > self.cap:
            self.outcome.cut, self.outcome.status = True, 429
            return error_event("the answer went past this request's token reservation (its budget)",
                               "budget_exceeded", "insufficient_quota")
        if self.guards is not None and self.guards.blocked:
            self.outcome.cut, self.outcome.status = True, 400
            return error_event("the answer was blocked by this route's safety guards: "
                               + "; ".join(self.guards.reasons()), "content_blocked", "invalid_request_error")
        return None


def replay(stored: bytes) -> Callable[[], Awaitable[bytes]]:
    """A `read` for `relay` that hands out a stored stream, then its end."""
    left = [stored]

    async def read() -> bytes:
        return left.pop() if left else b""

    return read


async def relay(read: Callable[[], Awaitable[bytes]], watch: StreamWatch, keep: list[bytes] | None,
                close: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bytes]:
    """Upstream events, as they arrive (`read()` until b""), to the client; `keep` collects them as they
    came (for the cache: a replay goes through the same watch). Closing this generator (the client went
    away) closes the upstream request, which cancels it there."""
    buffer = b""
    try:
        while chunk := await read():
            buffer += chunk
            if b"\n\n" not in buffer:
                continue
            *events, buffer = buffer.split(b"\n\n")
            ready: list[bytes] = []  # the events of one upstream read go out in one write
            for raw in events:
                if keep is not None:
                    keep.append(raw + b"\n\n")
                out = watch.event(raw)
                if out is None:
                    continue
                if (last := watch.stop()) is not None:
                    yield b"".join(ready) + last
                    return
                ready.append(out + b"\n\n")
            if ready:
                yield b"".join(ready)
        if not watch.outcome.complete:
            yield error_event("the model server ended the stream before it was done", "upstream_error")
    except UPSTREAM_ERRORS as exc:
        watch.outcome.status = 502
        yield error_event(f"the model server failed mid-answer: {type(exc).__name__}", "upstream_error")
    finally:
        if close is not None:
            await close()
