"""Memory plan: estimate peak training memory before the first step, pick a batch size that fits.

The estimate adds, in bytes:
- weights as loaded (before frozen weights are cast to bf16: the allocator keeps that peak;
  4-bit weights count their packed size),
- per trainable parameter: fp32 gradient + AdamW's two moments (12 bytes),
- activations saved for backward, per token per layer: ~(10·hidden + 4·intermediate) values in the
  autocast dtype plus attention scores (heads × sequence length) — one layer's worth only when
  gradient checkpointing is on, plus the hidden state at every layer boundary,
- the vocabulary projection at target positions: logits, their fp32 copy and gradient (10 bytes × vocab),
- a fixed runtime overhead (CUDA context or the CPU process's libraries).
It is deliberately simple; `docs/training.md` compares it with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.core.errors import TrainError

GiB = 1024**3
CPU_OVERHEAD = int(1.2 * GiB)  # torch/transformers/peft imports, tokenizer, allocator slack (calibrated)
CUDA_OVERHEAD = int(0.5 * GiB)


@dataclass
class MemoryPlan:
    weights: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    batch_size: int
    tokens_per_batch: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + self.logits + self.overhead

    def describe(self) -> str:
        def g(n: int) -> str:
            return f"{n / GiB:.2f} GiB"

        return (f"{g(self.total)} (weights {g(self.weights)}, grads+optimizer {g(self.optimizer)}, "
                f"activations {g(self.activations)}, logits {g(self.logits)}, runtime {g(self.overhead)}) "
                f"at batch {self.batch_size} × ~{self.tokens_per_batch // max(self.batch_size, 1)} tokens")


def weight_bytes(model) -> int:
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
    for b in model.buffers():
        total += b.numel() * b.element_size()
    return total


def estimate(model, trainable: int, batch_size: int, seq_len: int, target_share: float, act_bytes: int,
             gradient_checkpointing: bool, device_type: str, weights: int | None = None) -> MemoryPlan:
    """Peak-memory estimate for one micro-batch of `batch_size` examples of `seq_len` tokens."""
    cfg: Any = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = getattr(cfg, "hidden_size", 768)
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    layers = getattr(cfg, "num_hidden_layers", 12)
    heads = getattr(cfg, "num_attention_heads", 12)
    vocab = getattr(cfg, "vocab_size", 32000)
    tokens = batch_size * seq_len
    per_layer_token = act_bytes * (10 * hidden + 4 * inter) + act_bytes * heads * seq_len * 2
    if gradient_checkpointing:
        activations = tokens * (per_layer_token + layers * act_bytes * hidden)
    else:
        activations = tokens * layers * per_layer_token
    logits = int(tokens * target_share) * vocab * 10
    overhead = CUDA_OVERHEAD if device_type == "cuda" else CPU_OVERHEAD
    held = weights if weights is not None else weight_bytes(model)
    return MemoryPlan(held, trainable * 12, activations, logits, overhead, batch_size, tokens)


def available_bytes(device_type: str, limit_gb: float | None) -> int:
    """The budget: the configured limit, else free GPU memory, else available RAM."""
    if limit_gb is not None:
        return int(limit_gb * GiB)
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def plan_batch(model, trainable: int, requested: int | str, seq_len: int, target_share: float, act_bytes: int,
               gradient_checkpointing: bool, device_type: str, budget: int, max_auto: int = 64,
               weights: int | None = None) -> MemoryPlan:
    """The plan for the requested batch size, or for 'auto' the largest power of two ≤ max_auto that fits.

    Raises TrainError with the knobs that would fit when nothing does.
    """
    def plan(b: int, ckpt: bool = gradient_checkpointing) -> MemoryPlan:
        return estimate(model, trainable, b, seq_len, target_share, act_bytes, ckpt, device_type, weights)

    if requested == "auto":
        chosen = None
        b = 1
        while b <= max_auto and plan(b).total <= budget:
            chosen = plan(b)
            b *= 2
        if chosen is not None:
            return chosen
        candidate = plan(1)
    else:
        candidate = plan(int(requested))
        if candidate.total <= budget:
            return candidate
    hints = []
    if not gradient_checkpointing and plan(candidate.batch_size, True).total <= budget:
        hints.append("train.gradient_checkpointing=true")
    smaller = [b for b in (16, 8, 4, 2, 1) if b < candidate.batch_size and plan(b).total <= budget]
    if smaller:
        hints.append(f"train.batch_size={smaller[0]} (raise train.grad_accum to keep the effective batch)")
    hints.append("a shorter data.max_length")
    hints.append("train.method=qlora (4-bit base) or a smaller model")
    raise TrainError(
        f"the memory plan does not fit: estimated peak {candidate.describe()} > budget {budget / GiB:.2f} GiB. "
        f"Options: {'; '.join(hints)}. Set train.memory_limit_gb to change the budget."
    )
