"""Sentence embeddings for the serving path: the injection classifier's int8 ONNX MiniLM, one copy per process.

The grounded-topic rules (`serve.safety.grounded`) and the gateway's semantic cache (`gateway.semantic`) compare
questions with these vectors; the classifier already holds the encoder, so they reuse it rather than load the
torch model beside it (torch, ~90 MB more weights and a second set of threads in the gateway process).
"""

from __future__ import annotations

import numpy as np

MAX_TOKENS = 256  # word pieces read of each text (the encoder was trained on 128-256); the rest is not read


class Sentences:
    """`encode(texts)` → (len(texts), 384) float32, unit length: the first MAX_TOKENS word pieces of each."""

    def encode(self, texts: list[str]) -> np.ndarray:
        from tuneforge.serve.safety.classifier import _encoder

        encoder = _encoder()
        pieces = [encoder.windows(text, MAX_TOKENS, 1)[0] for text in texts]
        vectors = encoder.encode_ids(pieces)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


SENTENCES = Sentences()


def pieces(text: str) -> list[int]:
    """The encoder's word-piece ids of `text` (no special tokens)."""
    from tuneforge.serve.safety.classifier import _encoder

    return _encoder().tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
