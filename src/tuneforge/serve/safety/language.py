"""The language guard: a request (or answer) in a language the route does not allow is flagged.

Detection is `core.language` (langdetect, seeded), shared with data cleaning and drift; texts shorter than
`min_chars` letters are not judged, nor (with `min_confidence`) texts whose language the detector is unsure of.
"""

from __future__ import annotations

from tuneforge.core.language import detect_language_scored
from tuneforge.core.safety_config import LanguageGuardConfig
from tuneforge.serve.safety.verdict import Finding


def _allowed(code: str, allowed: list[str]) -> bool:
    """`zh` allows zh-cn and zh-tw; `zh-cn` allows only itself."""
    return any(code == a or code.split("-")[0] == a for a in allowed)


def judged_language(text: str, cfg: LanguageGuardConfig) -> str | None:
    """`text`'s language when it has `min_chars` letters and the detector is at least `min_confidence` sure of
    it; None when it cannot be judged (yet)."""
    found = detect_language_scored(text, cfg.min_chars, region=True)
    return found[0] if found is not None and found[1] >= cfg.min_confidence else None


def language_finding(code: str | None, allowed: list[str] | None, cfg: LanguageGuardConfig,
                     message: int | None = None, *, where: str = "request") -> list[Finding]:
    """A finding when a judged language `code` is not among `allowed` (none when unjudged or unrestricted)."""
    if not allowed or code is None or _allowed(code, allowed):
        return []
    return [Finding("language", cfg.action, f"{where} language {code!r} is not one of {', '.join(allowed)}",
                    message=message)]


def check_language(text: str, allowed: list[str] | None, cfg: LanguageGuardConfig, message: int | None = None,
                   *, where: str = "request") -> list[Finding]:
    """A finding when `text` is long enough to judge and its language is not among `allowed`."""
    if not allowed:
        return []
    return language_finding(judged_language(text, cfg), allowed, cfg, message, where=where)
