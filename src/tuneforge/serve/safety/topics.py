"""Per-route policy: denied and allowed topics (named phrase lists) and banned substrings.

Matching is on the canonical reading (`normalize.canonical`: case, accents, homoglyphs and invisible
characters folded), so "Ｂitcoin" or "bit\u200bcoin" is still "bitcoin". Topic phrases match whole words;
banned strings match anywhere.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tuneforge.core.safety_config import TopicGuardConfig, TopicRule
from tuneforge.serve.safety.normalize import canonical
from tuneforge.serve.safety.verdict import Finding


@lru_cache(maxsize=256)
def _topic_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    words = sorted({canonical(p) for p in phrases if canonical(p)}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)")


def topic_hits(text: str, rules: list[TopicRule]) -> list[str]:
    """Names of the topics whose phrases occur in `text` (already canonical)."""
    return [r.name for r in rules if _topic_pattern(tuple(r.phrases)).search(text)]


def banned_hits(text: str, banned: list[str]) -> list[str]:
    """The banned strings that occur in `text` (already canonical)."""
    return [b for b in banned if canonical(b) and canonical(b) in text]


def check_topics(text: str, cfg: TopicGuardConfig, message: int | None = None) -> list[Finding]:
    """Findings for the denied topics and banned strings in `text`."""
    if not (cfg.deny or cfg.banned) or not text.strip():
        return []
    folded = canonical(text)
    found = [Finding("topic", cfg.action, f"denied topic {name!r}", message=message)
             for name in topic_hits(folded, cfg.deny)]
    return found + [Finding("banned", cfg.action, f"banned text {b!r}", message=message)
                    for b in banned_hits(folded, cfg.banned)]


def check_allowed(text: str, cfg: TopicGuardConfig) -> list[Finding]:
    """A finding when the route allows only some topics and `text` (a request's user turns) touches none."""
    if not cfg.allow or topic_hits(canonical(text), cfg.allow):
        return []
    return [Finding("topic", cfg.action, "off-topic: the route allows only " + ", ".join(r.name for r in cfg.allow))]
