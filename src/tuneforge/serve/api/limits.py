"""Bounds applied before any heavy work, so that one large request cannot stall the server.

- `BodyLimit`: an ASGI middleware that refuses a body larger than `serve.max_body_bytes` with 413,
  from its Content-Length when it has one and otherwise as the chunks arrive — before the body is
  read whole or parsed.
- `PromptBound`: a prompt whose UTF-8 bytes exceed what the context can hold is refused before it is
  tokenized. A token stands for at most `longest` bytes of text (the longest entry of the vocabulary,
  measured once in its stored form, which is never shorter than the text it decodes to for byte-level
  BPE, WordPiece and SentencePiece vocabularies), so a text of B bytes has at least B / longest tokens.
  The check uses twice the longest entry as a margin; a tokenizer whose normalizer deletes much of the
  text (accent stripping over a text of combining marks) could still be refused by it wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tuneforge.serve.api.protocol import error_body


class BodyLimit:
    """Refuse request bodies over `max_bytes` with OpenAI's error shape and 413."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

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
        body = json.dumps(error_body(f"the request body is larger than this server's limit of {self.max_bytes} "
                                     "bytes (serve.max_body_bytes)", code="request_too_large")).encode()
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


@dataclass(frozen=True)
class PromptBound:
    """The most bytes of text a context of `max_context` tokens can hold, from the vocabulary's longest entry."""

    bytes_per_token: int
    max_context: int

    @classmethod
    def of(cls, tokenizer, max_context: int) -> PromptBound:
        vocab = tokenizer.get_vocab()
        longest = max((len(token.encode("utf-8")) for token in vocab), default=1)
        return cls(2 * max(longest, 1), max_context)

    def too_long(self, text_bytes: int, room_needed: int = 1) -> bool:
        """True when a text of `text_bytes` surely has more than `max_context - room_needed` tokens."""
        return text_bytes > self.bytes_per_token * max(self.max_context - room_needed, 0)
