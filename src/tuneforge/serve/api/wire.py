"""What any OpenAI-compatible HTTP front shares, engine or gateway: the error object and the body bound.

Light on purpose (no torch, no engine): the gateway imports it too.
"""

from __future__ import annotations

import json
from typing import Any


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (OpenAI's SDKs send it), else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def body_too_large(max_bytes: int, setting: str) -> str:
    return f"the request body is larger than this server's limit of {max_bytes} bytes ({setting})"


class BodyLimit:
    """Refuse request bodies over `max_bytes` with OpenAI's error shape and 413."""

    def __init__(self, app, max_bytes: int, setting: str = "serve.max_body_bytes") -> None:
        self.app, self.max_bytes, self.setting = app, max_bytes, setting

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)  # the server stops reading at Content-Length
            return
        # no Content-Length (chunked): read up to the limit here, then hand the body on
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, receive), send)

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(body_too_large(self.max_bytes, self.setting), code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then=None):
    """A `receive` that hands out `messages`, then defers to `then` (disconnects) or waits."""
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class VersionHeader:
    """Adds `x-tuneforge-model-version: <version>` to every response (a gateway's cache keys on it)."""

    def __init__(self, app, version: str) -> None:
        self.app, self.header = app, (b"x-tuneforge-model-version", version.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, with_header)
