"""Weight-only int8 linear layers: int8 weights with one scale per output channel, activations in bf16/fp32.

On CPU the matmul is PyTorch's own `aten._weight_int8pack_mm` (the kernel torchao uses for
int8 weight-only on CPU), which at decode shapes measured ~2× faster than a bf16 `F.linear` on
this machine (docs/benchmarks.md). Elsewhere the weight is dequantized on the fly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Int8Linear(nn.Module):
    """A linear layer holding int8 weights and one scale per output channel (the offline form and the runtime one)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype) -> Int8Linear:
        weight = linear.weight.detach().float()
        # the codes are rounded against the scale as stored (bf16): rounding it afterwards would
        # scale every row by up to ±0.2 % more (mean |Δlogit| 0.272 → 0.242 on the demo model)
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-8).to(dtype).float()
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype)
        q.weight_int8.copy_(torch.round(weight / scale[:, None]).clamp(-128, 127).to(torch.int8))
        q.scale.copy_(scale.to(dtype))
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().to(dtype))
        return q

    @classmethod
    def concat(cls, modules: list[Int8Linear]) -> Int8Linear:
        """One layer computing all of `modules` (stacked outputs); their buffers become views of its own."""
        first = modules[0]
        fused = cls(first.in_features, sum(m.out_features for m in modules), first.bias is not None,
                    first.scale.dtype)
        names = ("weight_int8", "scale") + (("bias",) if first.bias is not None else ())
        stack_buffers(fused, modules, names)
        return fused

    def matmul_2d(self):
        """fn(x (rows, in) contiguous) → x Wᵀ with no per-call checks (the serving
        engine's fast path). Falls back to `forward`."""
        if self.weight_int8.device.type != "cpu" or self.bias is not None:
            return self.forward
        weight, scale, mm = self.weight_int8, self.scale, torch.ops.aten._weight_int8pack_mm
        return lambda x: mm(x.to(scale.dtype), weight, scale).to(x.dtype)

    def forward(self, x):
        shape = x.shape
        out = int8_matmul(x.reshape(-1, self.in_features), self.weight_int8, self.scale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def stack_buffers(fused, modules: list[Any], names: tuple[str, ...]) -> None:
    """Give `fused` the row-wise concatenation of the modules' buffers `names`, and re-point each module's
    buffers at its rows of it (so memory is not doubled and both compute the same)."""
    for name in names:
        setattr(fused, name, torch.cat([getattr(m, name) for m in modules]))
    offset = 0
    for m in modules:
        for name in names:
            setattr(m, name, getattr(fused, name)[offset: offset + m.out_features])
        offset += m.out_features


def int8_matmul(x, weight_int8, scale):
    """x (rows, in) @ int8 weight (out, in) with one scale per output row, in the scale's dtype."""
    x = x.to(scale.dtype)
    if x.device.type == "cpu":
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), weight_int8, scale)
    return x @ (weight_int8.to(scale.dtype) * scale[:, None]).T


def int8_linear_class() -> type[Int8Linear]:
    """`Int8Linear` (kept for callers written when the class was built lazily)."""
    return Int8Linear
