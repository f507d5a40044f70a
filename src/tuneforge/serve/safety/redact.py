"""PII in the serving path: reversible placeholders on the way in, redaction and re-identification on the way out.

The detectors are the data pipeline's (`core.pii`). On the way in, every message of a request goes through
one `RowScrubber`, so the same value gets the same placeholder across the conversation (`<EMAIL>`,
`<EMAIL_2>`); the placeholder → value map stays with the request, never with the model. On the way out,
`StreamRedactor` finds PII in text that arrives in pieces and releases each piece as soon as no match
could still grow into it; `Reidentifier` puts the caller's own values back where the answer uses their
placeholders.

How much is held back: the detectors' regexes are recompiled with the `regex` module, whose partial
matching says whether the text from a position on could still become (part of) a match if more text came.
The earliest such position, over all detectors, is where the release stops; everything before it is final,
and redacted exactly as `find_pii` on the whole answer would redact it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import regex

from tuneforge.core.pii import DETECTORS, RowScrubber, find_pii
from tuneforge.core.safety_config import PiiGuardConfig

_LOOKAHEAD = 2  # the widest look-ahead of a detector (IPv4's `(?!\.\d)`): a match ending this close is not final
_PHONE_TAIL = re.compile(r"[\d(+][\d\s().+/-]*\Z")


def redact_messages(messages: list[dict], cfg: PiiGuardConfig) -> tuple[list[dict], dict[str, str], dict[int, list]]:
    """(messages with PII replaced by placeholders, placeholder → original value, message index → spans).

    Text contents and the text parts of multi-part contents are redacted; other parts pass unchanged.
    """
    scrubber = RowScrubber(cfg.types, cfg.allow, cfg.phone_regions)
    out: list[dict] = []
    found: dict[int, list] = {}

    def scrub(index: int, text: str) -> str:
        spans = find_pii(text, scrubber.kinds, scrubber.allow, scrubber.phone_regions)
        if spans:
            found.setdefault(index, []).extend(spans)
        return scrubber(text)

    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            message = {**message, "content": scrub(index, content)}
        elif isinstance(content, list):
            parts = [{**p, "text": scrub(index, p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                     else p for p in content]
            message = {**message, "content": parts}
        out.append(message)
    return out, {placeholder: value for (_, value), placeholder in scrubber.mapping.items()}, found


@lru_cache(maxsize=1)
def _partial_patterns() -> tuple[regex.Pattern[str], ...]:
    return tuple(regex.compile(det.pattern.pattern) for det in DETECTORS)


class StreamRedactor:
    """PII redaction over text that arrives in pieces; the concatenated output equals redacting the whole.

    `allow` are values never redacted (the caller's own, re-identified ones). `spans` collects
    (start, end, kind) of what was redacted, in offsets of the text fed.
    """

    def __init__(self, cfg: PiiGuardConfig, allow: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.allow = (*cfg.allow, *allow)
        self.text = ""  # everything fed so far
        self.released = 0  # offset in `text` up to which output was produced
        self.spans: list[tuple[int, int, str]] = []

    def _hold_from(self) -> int:
        """The earliest offset (≥ released) from which a match could still extend past the end of `text`."""
        text, end = self.text, len(self.text)
        hold = end
        for pattern in _partial_patterns():
            for start in range(self.released, hold):
                if pattern.fullmatch(text, start, end, partial=True) is not None:
                    hold = start
                    break
        if self.cfg.phone_regions and "PHONE" in self.cfg.types:
            tail = _PHONE_TAIL.search(text, self.released)
            if tail is not None:
                hold = min(hold, tail.start())
        if end - hold > self.cfg.max_hold_chars:  # nothing PII-shaped is this long: let the head go
            hold = end - self.cfg.max_hold_chars
        return hold

    def _final(self, hold: int) -> tuple[int, list[tuple[int, int, str, str]]]:
        """(release up to, final matches before it): a match that crosses `hold` or ends within the detectors'
        look-ahead of the end moves the release point back to its start."""
        found = [s for s in find_pii(self.text, self.cfg.types, self.allow, self.cfg.phone_regions)
                 if s[0] >= self.released]
        limit = len(self.text) - _LOOKAHEAD
        changed = True
        while changed:
            changed = False
            for start, end, _, _ in found:
                if start < hold and (end > hold or end > limit):
                    hold, changed = start, True
        return hold, [s for s in found if s[1] <= hold]

    def _emit(self, upto: int, matches: list[tuple[int, int, str, str]]) -> str:
        out, last = [], self.released
        for start, end, kind, _ in matches:
            out.append(self.text[last:start])
            out.append(self.cfg.output_mask.format(kind=kind))
            self.spans.append((start, end, kind))
            last = end
        out.append(self.text[last:upto])
        self.released = upto
        return "".join(out)

    def feed(self, delta: str) -> str:
        """Text now safe to release (redacted)."""
        self.text += delta
        upto, matches = self._final(self._hold_from())
        return self._emit(upto, matches) if upto > self.released else ""

    def finish(self) -> str:
        """The held-back tail, redacted: the text is complete now."""
        matches = [s for s in find_pii(self.text, self.cfg.types, self.allow, self.cfg.phone_regions)
                   if s[0] >= self.released]
        return self._emit(len(self.text), matches)


class Reidentifier:
    """Placeholders in streamed text replaced by the caller's values; a possible placeholder prefix is held."""

    def __init__(self, placeholders: dict[str, str]) -> None:
        self.placeholders = dict(placeholders)
        self.pending = ""
        keys = sorted(self.placeholders, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(k) for k in keys)) if keys else None
        self._prefixes = {k[:i] for k in keys for i in range(1, len(k))}

    def _replace(self, text: str) -> str:
        return self._pattern.sub(lambda m: self.placeholders[m.group()], text) if self._pattern else text

    def feed(self, delta: str) -> str:
        """Text with every complete placeholder replaced; a tail that could begin one is kept back."""
        if self._pattern is None:
            return delta
        text = self.pending + delta
        cut = len(text)
        for i in range(max(0, len(text) - max(map(len, self.placeholders)) + 1), len(text)):
            if text[i:] in self._prefixes:
                cut = i
                break
        # a placeholder begins with "<" and has no other "<": the cut never falls inside a whole one
        self.pending = text[cut:]
        return self._replace(text[:cut])

    def finish(self) -> str:
        """Whatever was held back (a placeholder prefix that never completed), replaced if possible."""
        out, self.pending = self._replace(self.pending), ""
        return out
