"""Which language a text is in — the one detector that data cleaning, the safety guard and drift share.

langdetect (Google's language-detection profiles, offline) is probabilistic; its seed is fixed so that one
text always gets one answer, and each call gets a detector of its own (langdetect's module-level `detect`
shares one random state between threads). Below `min_letters` letters nothing is judged: at a few words
every detector guesses.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from tuneforge.core.errors import ConfigError

MIN_LETTERS = 20  # fewer letters than this and langdetect guesses
_LOCK = threading.Lock()  # one profile load, whichever thread asks first


@lru_cache(maxsize=1)
def _load_factory() -> Any:
    try:
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    except ImportError as exc:
        raise ConfigError("language detection needs langdetect: `pip install 'tuneforge[lang]'`") from exc
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def _factory() -> Any:
    with _LOCK:
        return _load_factory()


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def detect_language(text: str, min_letters: int = MIN_LETTERS, *, region: bool = False) -> str | None:
    """ISO 639-1 code of `text` (`zh-cn` / `zh-tw` kept apart with `region=True`), or None when the text has
    fewer than `min_letters` letters or nothing can be told."""
    found = detect_language_scored(text, min_letters, region=region)
    return found[0] if found else None


def detect_language_scored(text: str, min_letters: int = MIN_LETTERS, *,
                           region: bool = False) -> tuple[str, float] | None:
    """`detect_language` with the detector's probability of that language (0–1): langdetect reads some short
    French sentences as Spanish or Romanian at 0.4–0.6, and real English at 0.99+."""
    ranked = detect_language_ranked(text, min_letters, region=region)
    if ranked is None:
        return None
    return ranked[0] if ranked else ("unknown", 0.0)  # what langdetect's detect() answers then


def detect_language_ranked(text: str, min_letters: int = MIN_LETTERS, *,
                           region: bool = False) -> list[tuple[str, float]] | None:
    """Every language the detector gives `text` (probability > 0.1, langdetect's floor), most likely first;
    None when the text is too short or nothing can be told."""
    if letters(text) < min_letters:
        return None
    from langdetect.lang_detect_exception import LangDetectException

    detector = _factory().create()  # a detector per call: its random state is its own
    detector.append(text)
    try:
        ranked = detector.get_probabilities()
    except LangDetectException:
        return None
    return [(str(r.lang) if region else str(r.lang).split("-")[0], float(r.prob)) for r in ranked]
