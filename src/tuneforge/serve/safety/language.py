"""The language guard: a request (or answer) in a language the route does not allow is flagged.

Detection is `core.language` (langdetect, seeded), shared with data cleaning and drift; texts shorter than
`min_chars` letters are not judged, nor (with `min_confidence`) texts whose language the detector is unsure of.
"""

from __future__ import annotations

import unicodedata

from tuneforge.core.language import detect_language_ranked
from tuneforge.core.safety_config import LanguageGuardConfig
from tuneforge.serve.safety.verdict import Finding


def _allowed(code: str, allowed: list[str]) -> bool:
    """`zh` allows zh-cn and zh-tw; `zh-cn` allows only itself."""
    return any(code == a or code.split("-")[0] == a for a in allowed)


# The script each language is written in, where it is not Latin (every other code is taken as Latin).
_SCRIPTS = {"zh": "CJK", "ja": "CJK", "ko": "HANGUL", "ru": "CYRILLIC", "uk": "CYRILLIC", "bg": "CYRILLIC",
            "sr": "CYRILLIC", "mk": "CYRILLIC", "be": "CYRILLIC", "kk": "CYRILLIC", "ar": "ARABIC", "fa": "ARABIC",
            "ur": "ARABIC", "he": "HEBREW", "el": "GREEK", "hi": "DEVANAGARI", "mr": "DEVANAGARI",
            "ne": "DEVANAGARI", "th": "THAI", "ka": "GEORGIAN", "hy": "ARMENIAN", "bn": "BENGALI", "ta": "TAMIL"}
_KANA = ("HIRAGANA", "KATAKANA")


def script_of(text: str) -> str | None:
    """The script most of `text`'s letters are in (LATIN, CJK, HANGUL, CYRILLIC, …), None without letters."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "").split(" ")[0]
            script = "CJK" if name in _KANA else name
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def judged_language(text: str, cfg: LanguageGuardConfig, allowed: list[str] | None = None) -> str | None:
    """`text`'s language when it has `min_chars` letters and the detector is at least `min_confidence` sure of
    it — or, unsure which language it is, when its letters are in a script none of `allowed` is written in
    (traditional Chinese can read ko 0.71 / zh-cn 0.29: unsure, but no English); None when it cannot be judged
    (yet). Unsure Latin text on a Latin route passes: correct short French reads es 0.57 / ro 0.40."""
    ranked = detect_language_ranked(text, cfg.min_chars, region=True)
    if not ranked:
        return None
    code, probability = ranked[0]
    if probability >= cfg.min_confidence:
        return code
    if allowed and script_of(text) not in {_SCRIPTS.get(a.split("-")[0], "LATIN") for a in allowed}:
        return code
    return None


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
    return language_finding(judged_language(text, cfg, allowed), allowed, cfg, message, where=where)
