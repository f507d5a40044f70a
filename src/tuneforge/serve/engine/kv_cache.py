"""The KV cache: preallocated once, one fixed slot of `max_model_len` positions per running sequence.

Fixed slots rather than paged blocks: the scheduler never preempts (a slot holds a sequence's whole
prompt + max_tokens), a decode step attends over a strided *view* of the occupied slots (no gather,
no copy), and a slot is reused the moment its sequence finishes or is cancelled. Paging would let
more short sequences share the same memory; at the model sizes served on CPU the slots are small
(SmolLM2-135M, bf16: 23 KiB per token, 16 slots × 2048 positions = 0.74 GB), so fixed slots win
on simplicity and per-step cost. Nothing grows per token: positions are written in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CacheShape:
    num_layers: int
    num_slots: int
    num_kv_heads: int
    max_model_len: int
    head_dim: int

    def bytes(self, element_size: int) -> int:
        s = self
        return 2 * s.num_layers * s.num_slots * s.num_kv_heads * s.max_model_len * s.head_dim * element_size


class SlotCache:
    """Keys and values: (layers, slots, kv_heads, positions, head_dim) tensors, zero-filled once."""

    def __init__(self, shape: CacheShape, dtype: Any, device: Any = "cpu") -> None:
        import torch

        self.shape = shape
        dims = (shape.num_layers, shape.num_slots, shape.num_kv_heads, shape.max_model_len, shape.head_dim)
        self.k = torch.zeros(dims, dtype=dtype, device=device)
        self.v = torch.zeros(dims, dtype=dtype, device=device)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def write(self, layer: int, slots, positions, k, v) -> None:
        """Store one layer's keys/values for N tokens: slots/positions (N,), k/v (N, kv_heads, head_dim)."""
        self.k[layer][slots, :, positions] = k
        self.v[layer][slots, :, positions] = v

    def view(self, layer: int, slots: slice, length: int):
        """Keys and values of `slots` up to `length` positions: strided views, nothing copied."""
        return self.k[layer, slots, :, :length], self.v[layer, slots, :, :length]
