"""The fast path for plain Llama-family layers: fused projections, fewer ops per layer.

When every attention/MLP projection of a layer is a plain `nn.Linear` (or tuneforge's int8/int4 layers),
q/k/v become one matmul and gate/up another, over weights concatenated once at start-up. The
modules' own weights are then re-pointed at slices of the fused tensors, so memory is unchanged
and the generic module path (used while LoRA adapters are loaded) still sees the same numbers.
At batch 1 on CPU a decode step is mostly per-op overhead and weight reads; this halves the op
count per layer and turns seven weight reads into four larger ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.models.int4 import int4_linear_class
from tuneforge.models.int8 import int8_linear_class
from tuneforge.models.lora import attached_lora, lora_delta


class FusedLinear:
    """One matmul over the concatenation of several linear layers' weights (float, int8 or int4)."""

    def __init__(self, modules: list[Any]) -> None:
        import torch
        from torch import nn

        self.sizes = [m.out_features for m in modules]
        quantized = quantized_classes()
        kind = type(modules[0])
        self.quantized = None
        if kind in quantized and all(type(m) is kind for m in modules):
            # int8/int4 layers: one layer of the same kind over the stacked outputs (its kernel, its layout)
            self.quantized = modules[0] if len(modules) == 1 else kind.concat(modules)
        elif len(modules) == 1:  # nothing to fuse: the module's own weight (a tied lm_head stays tied)
            self.weight, self.bias = modules[0].weight.detach(), getattr(modules[0], "bias", None)
        else:
            self.weight = torch.cat([m.weight.detach() for m in modules])
            biases = [m.bias for m in modules]
            self.bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
            offset = 0
            for m, size in zip(modules, self.sizes, strict=True):
                m.weight = nn.Parameter(self.weight[offset: offset + size], requires_grad=False)
                if self.bias is not None:
                    m.bias = nn.Parameter(self.bias[offset: offset + size], requires_grad=False)
                offset += size

        self.packed = self._prepack() if self.quantized is None else None
        self.matmul = self.quantized.matmul_2d() if self.quantized is not None else None
        self.lora = self._stack_lora(modules)

    def _stack_lora(self, modules: list[Any]):
        """LoRA updates attached to the modules (an adapter kept over a quantized base) as one pair: A of
        all of them stacked (Σr, in), B·scale block-diagonal (Σout, Σr); None if none."""
        import torch

        updates = [attached_lora(m) for m in modules]
        if all(u is None for u in updates):
            return None
        a_rows = [u[0] for u in updates if u is not None]
        first = a_rows[0]
        b = torch.zeros(sum(self.sizes), sum(a.shape[0] for a in a_rows), dtype=first.dtype, device=first.device)
        row = col = 0
        for update, size in zip(updates, self.sizes, strict=True):
            if update is not None:
                up = update[1]
                b[row: row + size, col: col + up.shape[1]] = up
                col += up.shape[1]
            row += size
        return torch.cat(a_rows), b

    def _prepack(self):
        """oneDNN's own layout for a bf16 weight on CPU: measured 1.2-1.6× faster per matmul than `F.linear`,
        which reorders the weight on every call (docs/benchmarks.md). Costs one more copy of the weight."""
        import torch

        if self.weight.device.type != "cpu" or self.weight.dtype != torch.bfloat16:
            return None
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
            return None
        return torch.ops.mkldnn._reorder_linear_weight(self.weight, 1)

    def __call__(self, x):
        import torch
        from torch.nn.functional import linear

        if self.packed is not None:
            rows = x.shape[0]
            padded = padded_rows(rows)
            wide = torch.nn.functional.pad(x, (0, 0, 0, padded - rows)) if padded != rows else x
            y = torch.ops.mkldnn._linear_pointwise(wide, self.packed, self.bias, "none", [], "")[:rows]
        elif self.quantized is not None:
            y = self.matmul(x.contiguous())
        else:
            y = linear(x, self.weight, self.bias)
        if self.lora is None:
            return y
        return y + lora_delta(x, *self.lora).to(y.dtype)


def padded_rows(rows: int) -> int:
    """The row count a prepacked matmul runs at: `rows` up to 16 (decode batches), above that rounded up to
    one of 8 sizes per doubling (at most 1/8 more rows: 17 → 18, 100 → 104, 300 → 320).

    oneDNN builds and caches a primitive per input shape, ~0.7 MiB each (JIT code) on this CPU, and
    every step of continuous batching has a new token count: unbounded shapes filled its caches (1024
    entries) for many minutes, +11 % server RSS from minute 1 to 10 of the soak (docs/benchmarks.md).
    Rounding bounds the shapes to 56 up to 512 tokens. Each row's result is the same bits at any
    padding (checked for every layer shape at 1-519 rows), so outputs do not change."""
    if rows <= 16:
        return rows
    step = 1 << ((rows - 1).bit_length() - 4)  # an eighth of the power of two at or above `rows`
    return -(-rows // step) * step


@dataclass
class FusedLayer:
    input_norm: Any  # (weight, eps)
    qkv: FusedLinear
    o: FusedLinear
    post_norm: Any
    gate_up: FusedLinear
    down: FusedLinear


def plain(module: Any) -> bool:
    """A float/int8/int4 linear with no wrapper and no hooks but an attached LoRA (fused below)."""
    from torch import nn

    hooked = bool(module._forward_hooks or module._forward_pre_hooks) and attached_lora(module) is None
    return (type(module) is nn.Linear or type(module) in quantized_classes()) and not hooked


def quantized_classes() -> tuple[Any, ...]:
    return int8_linear_class(), int4_linear_class()


def fuse_layers(layers: Any, hidden_act: str) -> list[FusedLayer] | None:
    """Fused views of every layer, or None when any layer is not plain (adapters, q/k norms, other MLPs)."""
    if hidden_act not in ("silu", "swish"):
        return None
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        if hasattr(attn, "q_norm") or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            return None
        modules = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if not all(plain(m) for m in modules) or type(mlp).__name__.startswith("Bottleneck"):
            return None
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if not hasattr(norm, "weight") or not hasattr(norm, "variance_epsilon"):
                return None
    return [FusedLayer((layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                       FusedLinear([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                       FusedLinear([layer.self_attn.o_proj]),
                       (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                       FusedLinear([layer.mlp.gate_proj, layer.mlp.up_proj]), FusedLinear([layer.mlp.down_proj]))
            for layer in layers]


def rms_norm(x, norm: Any):
    """Llama's RMSNorm as Hugging Face computes it (float32 statistics, weight applied in the input dtype),
    with PyTorch's fused kernel for the statistics: one op instead of five, bitwise the same."""
    from torch.nn.functional import rms_norm as fused_rms_norm

    weight, eps = norm
    return weight * fused_rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rotate(x, cos, sin):
    """Rotary embedding on (N, heads, d) with cos/sin (N, 1, d), half-split layout as Llama."""
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
