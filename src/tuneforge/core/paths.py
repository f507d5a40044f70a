"""Where tuneforge keeps its caches (`TUNEFORGE_CACHE` overrides the user cache dir) and its durable state
(`TUNEFORGE_HOME` overrides the user data dir)."""

from __future__ import annotations

import os
from pathlib import Path


def _root(variable: str, kind: str) -> Path:
    override = os.environ.get(variable)
    if override:
        root = Path(override).expanduser()
    else:
        import platformdirs

        root = Path(getattr(platformdirs, kind)("tuneforge"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir() -> Path:
    """Root of tuneforge's caches (converted models, tokenizers)."""
    return _root("TUNEFORGE_CACHE", "user_cache_dir")


def state_dir() -> Path:
    """Root of tuneforge's durable state (the gateway's key database)."""
    return _root("TUNEFORGE_HOME", "user_data_dir")
