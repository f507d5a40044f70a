"""Incremental detokenization with stop strings held back until they can be ruled out.

Decoding a sequence's whole output every step is quadratic; like vLLM, only a short window is
decoded: the text of ids[prefix:] minus the text of ids[prefix:read]. A window that ends inside a
multi-byte character (a trailing U+FFFD) waits for the next token.
"""

from __future__ import annotations

from collections.abc import Sequence


class Detokenizer:
    """Turns a growing list of token ids into text deltas, cut at the first stop string."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.holdback = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""  # all text decoded so far (before any stop cut)
        self.sent = 0  # characters handed out
        self.stopped = False
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, ids: list[int]) -> None:
        """`ids` is the whole output so far; its new tail is decoded."""
        if self.stopped:
            return
        before = self._decode(ids[self._prefix: self._read])
        after = self._decode(ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            start = max(len(self.text) - self.holdback, 0)  # a stop can begin at most holdback chars back
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(ids)
            cuts = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if cuts:
                self.text = self.text[: min(cuts)]
                self.stopped = True

    def delta(self, final: bool = False) -> str:
        """Text safe to send now: all of it when final or stopped, else all but a possible stop's prefix."""
        end = len(self.text) if (final or self.stopped) else max(len(self.text) - self.holdback, self.sent)
        out = self.text[self.sent: end]
        self.sent = end
        return out
