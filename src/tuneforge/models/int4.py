"""Weight-only int4 linear layers, group-wise asymmetric: 4-bit codes, one scale and zero per group of inputs.

Each group of `group_size` input weights of an output row is stored as codes q in 0..15 with
w ≈ (q - 8) · scale + zero (llama.cpp's Q4_1 and torchao's int4 weight-only use the same grid).
On disk: `qweight` uint8 (out, in/2, two codes per byte, low nibble first), `scale` and `zero`
(out, in/group_size) in bf16. On CPU the matmul is PyTorch's `aten._weight_int4pack_mm_for_cpu`
(the kernel torchao's int4 weight-only CPU path calls) over a layout packed once, at the first
call after the codes change; elsewhere the weight is dequantized on the fly.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from tuneforge.core.config import CompressConfig
from tuneforge.models.int8 import stack_buffers

DEFAULT_GROUP_SIZE: int = CompressConfig.model_fields["group_size"].default


class Int4Linear(nn.Module):
    """A linear layer holding int4 codes with a scale and zero per group of `group_size` inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype,
                 group_size: int = DEFAULT_GROUP_SIZE) -> None:
        super().__init__()
        if in_features % group_size or group_size % 2:
            raise ValueError(f"int4: in_features {in_features} is not a multiple of group_size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=dtype))
        self.register_buffer("zero", torch.zeros(out_features, groups, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)
        self._packed: tuple[Any, Any] | None = None  # (key of the codes it was made from, kernel layout)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype, group_size: int = DEFAULT_GROUP_SIZE) -> Int4Linear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype, group_size)
        codes, scale, zero = quantize_groups(linear.weight.detach(), group_size, dtype)
        q.qweight.copy_(pack_nibbles(codes))
        q.scale.copy_(scale.to(dtype))
        q.zero.copy_(zero.to(dtype))
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().to(dtype))
        return q

    @classmethod
    def concat(cls, modules: list[Int4Linear]) -> Int4Linear:
        """One layer computing all of `modules` (stacked outputs); their buffers become views of its own."""
        first = modules[0]
        fused = cls(first.in_features, sum(m.out_features for m in modules), first.bias is not None,
                    first.scale.dtype, first.group_size)
        names = ("qweight", "scale", "zero") + (("bias",) if first.bias is not None else ())
        stack_buffers(fused, modules, names)
        return fused

    def dequantize(self):
        codes = unpack_nibbles(self.qweight).float()
        groups = codes.reshape(self.out_features, -1, self.group_size) - 8
        weight = groups * self.scale.float()[..., None] + self.zero.float()[..., None]
        return weight.reshape(self.out_features, self.in_features)

    def _kernel_weight(self):
        key = (self.qweight.data_ptr(), self.qweight._version, self.scale._version, self.zero._version)
        if self._packed is None or self._packed[0] != key:
            codes = unpack_nibbles(self.qweight).to(torch.int32).contiguous()
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            scales_zeros = torch.stack([self.scale, self.zero], dim=-1).transpose(0, 1).contiguous()
            self._packed = (key, (packed, scales_zeros))
        return self._packed[1]

    def matmul_2d(self):
        """fn(x (rows, in) contiguous) → x Wᵀ with no per-call checks: the serving
        engine's fast path, whose weights never change once it runs. Falls back to `forward`."""
        if not (self.qweight.device.type == "cpu" and cpu_kernel_available()) or self.bias is not None:
            return self.forward
        packed, scales_zeros = self._kernel_weight()
        group_size, dtype, mm = self.group_size, self.scale.dtype, torch.ops.aten._weight_int4pack_mm_for_cpu
        return lambda x: mm(x.to(dtype), packed, group_size, scales_zeros).to(x.dtype)

    def forward(self, x):
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and cpu_kernel_available():
            packed, scales_zeros = self._kernel_weight()
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(self.scale.dtype).contiguous(), packed,
                                                              self.group_size, scales_zeros)
        else:
            out = rows.to(self.scale.dtype) @ self.dequantize().to(self.scale.dtype).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 group_size={self.group_size}")


def quantize_groups(weight, group_size: int, dtype=None):
    """Asymmetric round-to-nearest per group: codes (out, in) in 0..15, scale and zero (out, in/group_size)
    with w ≈ (code - 8) · scale + zero. With `dtype` (the stored one, e.g. bf16) scale and zero are rounded
    to it first and the codes chosen against the rounded values."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8)
    zero = low + 8 * scale
    if dtype is not None:
        scale, zero = scale.to(dtype).float(), zero.to(dtype).float()
    codes = torch.round((groups - zero[..., None]) / scale[..., None] + 8).clamp(0, 15).to(torch.uint8)
    return codes.reshape(out_features, in_features), scale, zero


def pack_nibbles(codes):
    """(out, in) codes 0..15 → (out, in/2) bytes, the even column in the low nibble."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed):
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


@functools.cache
def cpu_kernel_available() -> bool:
    """Whether this PyTorch has the int4 CPU kernels (asked once)."""
    return all(hasattr(torch.ops.aten, op) for op in
               ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"))


def int4_linear_class() -> type[Int4Linear]:
    """`Int4Linear` (kept for callers written when the class was built lazily)."""
    return Int4Linear
