"""The two completion endpoints in plain ASGI, ahead of FastAPI.

Every token of every stream passes through here, so the hot path skips what a framework adds per request
and per message: routing, the request object, seven middleware layers each wrapping `send`, and the task
group Starlette's streaming response opens per stream. Profiled under 64 streaming clients, those layers
were an eighth of the gateway's CPU. Everything else (models, feedback, reviews, probes, metrics) stays on
the FastAPI app behind this one, which also keeps the two endpoints in its OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from tuneforge.gateway.errors import GatewayError
from tuneforge.serve.api.wire import body_too_large

log = logging.getLogger("tuneforge.gateway")
PATHS = {"/v1/chat/completions": "/chat/completions", "/v1/completions": "/completions"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _raw_headers(headers: Mapping[str, str], media_type: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", media_type.encode()), *((k.encode(), v.encode()) for k, v in headers.items())]


class EventStream:
    """An SSE answer as an ASGI app: each chunk written as it comes. The client going away (uvicorn then
    drops writes silently) is watched for on `receive` and stops the stream at once, so that closing
    `chunks` cancels the upstream request even while it is still thinking."""

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str],
                 media_type: str = "text/event-stream", on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.chunks, self.on_close = chunks, on_close
        self.headers = _raw_headers({"cache-control": "no-cache", **headers}, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The writer runs in this task (a task of its own would cost the first token a loop turn); the
        # watcher cancels it when the client leaves, and that cancellation ends here.
        me = asyncio.current_task()
        assert me is not None
        left = False

        def client_left(task: asyncio.Future) -> None:
            nonlocal left
            if not task.cancelled() and task.exception() is None:
                left = True
                me.cancel()

        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(client_left)
        try:
            await self._write(send)
        except asyncio.CancelledError:
            if not left:
                raise  # the server is stopping, not the client
            me.uncancel()
        finally:
            watcher.remove_done_callback(client_left)
            watcher.cancel()
            # shielded: a client leaving right at the end must not interrupt the settlement
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        await self.chunks.aclose()  # type: ignore[attr-defined]  # closes the upstream request
        if self.on_close is not None:
            await self.on_close()  # settles, caches, logs

    async def _write(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The request body, refused with 413 past `max_bytes` (declared or streamed)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            raise GatewayError(413, body_too_large(max_bytes, "gateway.max_body_bytes"), "request_too_large")
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise GatewayError(400, "the client went away before its body was read", "client_disconnected")
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            raise GatewayError(413, body_too_large(max_bytes, "gateway.max_body_bytes"), "request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or 400."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, f"the body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object", "invalid_json")
    return body


class HotPath:
    """POST /v1/chat/completions and /v1/completions → `handle(authorization, body, path)`, whose answer is
    itself an ASGI app; anything else → `app`."""

    def __init__(self, app: Any, handle: Callable[[str | None, bytes, str], Awaitable[Any]],
                 max_body_bytes: int) -> None:
        self.app, self.handle, self.max_body_bytes = app, handle, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = PATHS.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if path is None:
            await self.app(scope, receive, send)
            return
        try:
            raw = await read_body(scope, receive, self.max_body_bytes)
            answer = await self.handle(header(scope, b"authorization"), raw, path)
        except GatewayError as refused:
            answer = refused.response()
        except Exception:  # a bug: logged with its trace, answered in OpenAI's shape
            log.exception("gateway error on %s", scope.get("path"))
            answer = GatewayError(500, "the gateway failed on this request (its log has the trace)",
                                  "internal_error", "server_error").response()
        await answer(scope, receive, send)
