"""Where tuneforge keeps its caches. `TUNEFORGE_CACHE` overrides the user cache dir."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of tuneforge's caches (converted models, tokenizers)."""
    override = os.environ.get("TUNEFORGE_CACHE")
    if override:
        root = Path(override).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("tuneforge"))
    root.mkdir(parents=True, exist_ok=True)
    return root
