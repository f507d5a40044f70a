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


def state_dir() -> Path:
    """Root of tuneforge's durable state (the gateway's key database, the local registry).
    `TUNEFORGE_HOME` overrides the user data dir."""
    override = os.environ.get("TUNEFORGE_HOME")
    if override:
        root = Path(override).expanduser()
    else:
        from platformdirs import user_data_dir

        root = Path(user_data_dir("tuneforge"))
    root.mkdir(parents=True, exist_ok=True)
    return root
