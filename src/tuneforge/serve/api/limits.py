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

from dataclasses import dataclass


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
