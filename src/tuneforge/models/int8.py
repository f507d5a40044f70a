"""Weight-only int8 linear layers: int8 weights with one scale per output channel, activations in bf16/fp32.

On CPU the matmul is PyTorch's own `aten._weight_int8pack_mm` (the kernel torchao uses for
int8 weight-only on CPU), which at decode shapes measured ~2× faster than a bf16 `F.linear` on
this machine (docs/benchmarks.md). Elsewhere the weight is dequantized on the fly.
"""

from __future__ import annotations

from typing import Any

QUANT_FILE = "quantization.json"


def _module():
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
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

    return Int8Linear


def stack_buffers(fused, modules: list[Any], names: tuple[str, ...]) -> None:
    """Give `fused` the row-wise concatenation of the modules' buffers `names`, and re-point each module's
    buffers at its rows of it (so memory is not doubled and both compute the same)."""
    import torch

    for name in names:
        setattr(fused, name, torch.cat([getattr(m, name) for m in modules]))
    offset = 0
    for m in modules:
        for name in names:
            setattr(m, name, getattr(fused, name)[offset: offset + m.out_features])
        offset += m.out_features


def int8_matmul(x, weight_int8, scale):
    """x (rows, in) @ int8 weight (out, in) with one scale per output row, in the scale's dtype."""
    import torch

    x = x.to(scale.dtype)
    if x.device.type == "cpu":
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), weight_int8, scale)
    return x @ (weight_int8.to(scale.dtype) * scale[:, None]).T


_INT8_LINEAR: Any = None


def int8_linear_class():
    global _INT8_LINEAR
    if _INT8_LINEAR is None:
        _INT8_LINEAR = _module()
    return _INT8_LINEAR


def quantize_linears(model, skip: tuple[str, ...] = (), dtype=None, from_weights: bool = True, bits: int = 8,
                     group_size: int | None = None) -> list[str]:
    """Replace every nn.Linear whose name does not end with an entry of `skip` by its int8 (per channel) or
    int4 (group-wise) counterpart; returns the names replaced.

    With `from_weights=False` the replacements are empty shells to load a saved state dict into.
    """
    import torch
    from torch import nn

    from tuneforge.models.int4 import DEFAULT_GROUP_SIZE, int4_linear_class

    dtype = dtype or torch.bfloat16
    if bits == 4:
        group, int4 = group_size or DEFAULT_GROUP_SIZE, int4_linear_class()

        def make(linear):
            return (int4.from_linear(linear, dtype, group) if from_weights else
                    int4(linear.in_features, linear.out_features, linear.bias is not None, dtype, group))
    elif bits == 8:
        int8 = int8_linear_class()

        def make(linear):
            return (int8.from_linear(linear, dtype) if from_weights else
                    int8(linear.in_features, linear.out_features, linear.bias is not None, dtype))
    else:
        raise ValueError(f"weight-only quantization to {bits} bits is not built (8 or 4)")
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and not any(name.endswith(s) for s in skip)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))
    return names


def quantize_dynamic_int8(model) -> list[str]:
    """Dynamic int8 (CPU): every nn.Linear gets int8 weights (per output channel) and quantizes its float32
    activations per tensor at run time; PyTorch's x86 int8 GEMM does the matmul. Returns the names replaced.

    Nothing of it is stored: an artifact keeps float weights and `quantization.json` says to apply this
    at load, so the same file also serves bf16 elsewhere.
    """
    import torch
    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    model.float()
    quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return names
