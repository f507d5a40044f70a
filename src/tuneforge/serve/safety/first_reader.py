"""The injection classifier's first reader: a static word-piece reader that ranks a long text's windows, so the
encoder (`onnx_encoder`, ~18 ms a window on one core here) reads only the most suspicious few.

A window's features are the idf-weighted mean of all-MiniLM-L6-v2's own input word-piece embeddings
(`embeddings.word_embeddings.weight` in the packaged `model.safetensors`: no new model, nothing fetched),
L2-normalised; a logistic head over them gives its score. Reading one window costs a gather and a dot product
(microseconds), so every window of the clipped text is scored, not only the first, last and evenly spaced
ones the encoder alone would read.

The head and the idf weights (`data/first_reader.json`, plain numbers) are fitted by
`python -m tuneforge.serve.safety.train_head --first-reader` on the same training windows as the classifier's
head. Only the ranking is used: the verdict is still the encoder's probability over the chosen windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.core.errors import ConfigError

__all__ = ["EMBEDDING_KEY", "READER_PATH", "FirstReader", "first_reader", "load_reader", "static_table"]
READER_PATH = Path(__file__).parent / "data" / "first_reader.json"
EMBEDDING_KEY = "embeddings.word_embeddings.weight"


@lru_cache(maxsize=1)
def static_table() -> np.ndarray:
    """(30522, 384) float32: MiniLM's input word-piece embeddings, read from the packaged weights."""
    from safetensors import safe_open

    from tuneforge.core.encoder import encoder_dir

    with safe_open(str(encoder_dir() / "model.safetensors"), "np") as weights:
        return np.asarray(weights.get_tensor(EMBEDDING_KEY), np.float32)


def pooled(table: np.ndarray, idf: np.ndarray, pieces: list[list[int]]) -> np.ndarray:
    """(len(pieces), 384) unit vectors: each window's idf-weighted mean of its word pieces' static embeddings."""
    out = np.zeros((len(pieces), table.shape[1]), np.float32)
    for row, ids in enumerate(pieces):
        if ids:
            index = np.asarray(ids, np.int64)
            weights = idf[index]  # (T,)
            out[row] = weights @ table[index] / max(float(weights.sum()), 1e-9)  # (384,)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)


@dataclass(frozen=True)
class FirstReader:
    """score(window) = pooled(window) · w + b; the encoder reads the `k` best-scoring windows."""

    idf: np.ndarray  # (V,) weight of each word piece in the mean
    w: np.ndarray  # (384,)
    b: float
    meta: dict[str, Any]

    def scores(self, pieces: list[list[int]], table: np.ndarray | None = None) -> np.ndarray:
        """(len(pieces),) logits: higher is more suspicious."""
        table = static_table() if table is None else table
        return pooled(table, self.idf, pieces) @ self.w + self.b

    def pick(self, pieces: list[list[int]], k: int, table: np.ndarray | None = None) -> list[int]:
        """Indices of the `k` most suspicious windows, in text order (ties: the earlier window)."""
        if len(pieces) <= k:
            return list(range(len(pieces)))
        order = np.argsort(-self.scores(pieces, table), kind="stable")
        return sorted(order[:k].tolist())

    def to_json(self) -> dict[str, Any]:
        """The plain-number form written to `first_reader.json` (idf as a list over the vocabulary)."""
        return {"meta": self.meta, "idf": np.round(self.idf.astype(np.float64), 4).tolist(),
                "w": np.round(self.w.astype(np.float64), 6).tolist(), "b": float(self.b)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FirstReader:
        return cls(np.asarray(data["idf"], np.float32), np.asarray(data["w"], np.float32), float(data["b"]),
                   data.get("meta", {}))


def load_reader(path: Path = READER_PATH) -> FirstReader:
    """The fitted first reader; a clear error when it was never fitted."""
    if not path.is_file():
        raise ConfigError(f"no first-reader head at {path}: run `python -m tuneforge.serve.safety.train_head "
                          "--first-reader`, or set injection.first_reader_windows: 0")
    return FirstReader.from_json(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def first_reader() -> FirstReader:
    """The packaged first reader, loaded once."""
    return load_reader()
