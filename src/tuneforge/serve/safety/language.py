"""Which language a text is in: langdetect (Google's language-detection profiles, offline), seeded.

langdetect is probabilistic; its seed is fixed so that one text always gets one answer. Short texts
(fewer than `min_chars` letters) are not judged: at a few words every detector guesses.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from tuneforge.core.errors import ConfigError
from tuneforge.core.safety_config import LanguageGuardConfig
from tuneforge.serve.safety.verdict import Finding

_LOCK = threading.Lock()  # one profile load, whichever thread asks first


@lru_cache(maxsize=1)
def _load_factory() -> Any:
    try:
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    except ImportError as exc:
        raise ConfigError("safety language checks need langdetect: `pip install langdetect`") from exc
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def _factory() -> Any:
    with _LOCK:
        return _load_factory()


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code (zh-cn / zh-tw for Chinese), or None when nothing can be told."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _factory().create()  # a detector per call: its random state is its own
    detector.append(text)
    try:
        return str(detector.detect())
    except LangDetectException:
        return None


def _allowed(code: str, allowed: list[str]) -> bool:
    """`zh` allows zh-cn and zh-tw; `zh-cn` allows only itself."""
    return any(code == a or code.split("-")[0] == a for a in allowed)


def check_language(text: str, allowed: list[str] | None, cfg: LanguageGuardConfig, message: int | None = None,
                   *, where: str = "request") -> list[Finding]:
    """A finding when `text` is long enough to judge and its language is not among `allowed`."""
    if not allowed or letters(text) < cfg.min_chars:
        return []
    code = detect_language(text)
    if code is None or _allowed(code, allowed):
        return []
    return [Finding("language", cfg.action, f"{where} language {code!r} is not one of {', '.join(allowed)}",
                    message=message)]
