"""The model runner: one forward pass over a step's decodes and prefill chunks, against the slot cache.

All tokens of a step are flattened into one row for the projections and the MLP (the bulk of the
work: one matmul per weight for the whole batch); attention is the only per-sequence part. Decodes
attend together over a strided view of the occupied slots; each prefill chunk attends over its own
slot with a causal mask offset by the chunk's start. Grouped-query attention needs no repeated keys:
the query heads that share a key/value head are laid out as extra query rows of that head.

The layer modules are the model's own (norms, projections, MLP), so LoRA-wrapped, int8 or bottleneck
layers run unchanged; attention and rotary embedding are done here. Llama-family decoders
(Llama, SmolLM2, Mistral, Qwen2, Qwen3) are supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.core.errors import TuneforgeError
from tuneforge.serve.engine.fused import FusedLinear, fuse_layers, plain, rms_norm, rotate
from tuneforge.serve.engine.kv_cache import CacheShape, SlotCache
from tuneforge.serve.engine.lora import MultiLoRA
from tuneforge.serve.engine.protocol import Capabilities
from tuneforge.serve.engine.sampler import LOGPROB_FLOOR
from tuneforge.serve.engine.scheduler import Chunk, SchedulerOutput

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def _slot(chunk: Chunk) -> int:
    assert chunk.seq.slot is not None, "a scheduled sequence holds a slot"
    return chunk.seq.slot


def decoder_of(model: Any) -> Any:
    """The bare `*ForCausalLM` under PEFT wrappers."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass
class StepInputs:
    """Tensors for one step, built from a scheduler plan."""

    ids: Any  # (N,) token ids, decodes first, then prefill chunks in order
    positions: Any  # (N,)
    slots: Any  # (N,)
    sample_index: Any  # (S,) rows of the flattened batch whose logits are sampled
    num_decodes: int
    decode_slots: list[int]
    decode_len: int  # attention length of the decode group (longest decode position + 1)
    decode_in_order: bool  # the decodes fill slots 0..n-1 in plan order: the slot view needs no scatter
    decode_unmasked: bool  # in order and all at the same position: no mask needed
    prefills: list[tuple[int, int, int, int]]  # (row offset, n tokens, slot, start position)
    adapter_rows: dict[str, Any]  # adapter name → row indices of its tokens


class ModelRunner:
    """Owns the model and its slot cache; `forward(plan)` returns logits for the sampled rows."""

    def __init__(self, model: Any, num_slots: int, max_model_len: int) -> None:
        import torch

        self.model = model
        self.lm = decoder_of(model)
        arch = type(self.lm).__name__
        inner = getattr(self.lm, "model", None)
        if arch not in SUPPORTED or inner is None or not hasattr(inner, "rotary_emb"):
            raise TuneforgeError(f"the native engine runs {', '.join(SUPPORTED)}; this model is {arch}. "
                                 "Serve it with backend: llamacpp (GGUF) or vllm")
        self.inner = inner
        cfg = self.lm.config
        attn = inner.layers[0].self_attn
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(attn, "head_dim", None) or cfg.hidden_size // self.num_heads
        self.group = self.num_heads // self.num_kv_heads
        self.scaling = getattr(attn, "scaling", self.head_dim ** -0.5)
        self.dtype = next(model.parameters()).dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):  # int8 weights: scales say
            self.dtype = torch.bfloat16
        self.device = next(model.parameters()).device
        self.context = max_model_len
        self.capabilities = Capabilities(prompt_logprobs=True, multi_lora=True)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self._rope = apply_rotary_pos_emb
        self.cache = SlotCache(CacheShape(len(inner.layers), num_slots, self.num_kv_heads, max_model_len,
                                          self.head_dim), self._cache_dtype(), self.device)
        self.lora = MultiLoRA(self.lm)
        self.fused = fuse_layers(inner.layers, getattr(cfg, "hidden_act", "silu"))
        head = self.lm.lm_head
        self.head = FusedLinear([head]) if self.fused is not None and plain(head) else None

    def _cache_dtype(self):
        embed = self.inner.embed_tokens.weight
        return embed.dtype

    # ---- plan → tensors --------------------------------------------------------------------------
    def inputs(self, plan: SchedulerOutput) -> StepInputs:
        import torch

        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        prefills = []
        by_adapter: dict[str, list[int]] = {}
        for chunk in plan.decodes:
            if chunk.seq.adapter is not None:
                by_adapter.setdefault(chunk.seq.adapter, []).append(len(ids))
            ids += chunk.tokens
            positions.append(chunk.start)
            slots.append(_slot(chunk))
            sample_rows.append(len(ids) - 1)
        for chunk in plan.prefills:
            offset, n = len(ids), len(chunk.tokens)
            if chunk.seq.adapter is not None:
                by_adapter.setdefault(chunk.seq.adapter, []).extend(range(offset, offset + n))
            ids += chunk.tokens
            positions += range(chunk.start, chunk.start + n)
            slots += [_slot(chunk)] * n
            prefills.append((offset, n, _slot(chunk), chunk.start))
            if chunk.samples:
                sample_rows.append(len(ids) - 1)
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=self.device)  # noqa: E731
        decode_slots = slots[: len(plan.decodes)]  # one position per decode, in plan order
        decode_len = max((c.start for c in plan.decodes), default=-1) + 1
        in_order = decode_slots == list(range(len(decode_slots)))
        unmasked = in_order and all(c.start == decode_len - 1 for c in plan.decodes)
        return StepInputs(as_tensor(ids), as_tensor(positions), as_tensor(slots), as_tensor(sample_rows),
                          len(plan.decodes), decode_slots, decode_len, in_order, unmasked, prefills,
                          {name: as_tensor(rows) for name, rows in by_adapter.items()})

    # ---- the forward pass ----------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: Any, num_slots: int, max_model_len: int) -> ModelRunner:
        """A runner whose slots hold `max_model_len` tokens, capped at the model's own context."""
        config = getattr(model, "config", None)
        model_max = int(getattr(config, "max_position_embeddings", None) or max_model_len)
        return cls(model, num_slots, min(max_model_len, model_max))

    def close(self) -> None:
        """Nothing to free: the model belongs to the caller."""

    def score(self, ids: list[int], top: int, adapter: str | None = None
              ) -> tuple[list[float | None], list[dict[int, float] | None]]:
        """Log-probability of each token given the ones before it (None for the first), and the top-k.

        One plain forward of the whole sequence (for `echo` + `logprobs` scoring); call it between steps."""
        import torch

        if adapter is not None:
            self.lora.step.rows = {adapter: torch.arange(len(ids), device=self.device)}
        try:
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float()
        finally:
            self.lora.step.rows = {}
        if not bool(torch.isfinite(logits).all()):
            raise RuntimeError("the model produced non-finite logits (NaN or inf) for this prompt")
        logprobs = torch.log_softmax(logits[:-1], dim=-1).clamp(min=LOGPROB_FLOOR)
        targets = torch.tensor(ids[1:], device=logprobs.device)
        chosen: list[float | None] = [None, *logprobs.gather(1, targets[:, None])[:, 0].tolist()]
        tops: list[dict[int, float] | None] = [None]
        if top > 0:
            values, indices = logprobs.topk(top, dim=-1)
            tops += [dict(zip(i.tolist(), v.tolist(), strict=True)) for v, i in zip(values, indices, strict=True)]
        else:
            tops += [None] * (len(ids) - 1)
        return chosen, tops

    def forward(self, plan: SchedulerOutput):
        """Logits (float32) for each chunk that samples, in plan order (decodes, then prefills)."""

        step = self.inputs(plan)
        self.lora.step.rows = step.adapter_rows
        try:
            return self._forward(step)
        finally:
            self.lora.step.rows = {}

    def _forward(self, step: StepInputs):
        import torch

        with torch.inference_mode():
            h = self.inner.embed_tokens(step.ids)[None]  # (1, N, hidden)
            cos, sin = self.inner.rotary_emb(h, step.positions[None])
            decode_mask = self._decode_mask(step)
            prefill_masks = [self._causal_mask(n, start) for _, n, _, start in step.prefills]
            if self.fused is not None and not self.lora.names:
                h = self._fused_layers(h[0], cos[0][:, None], sin[0][:, None], step, decode_mask, prefill_masks)[None]
            else:
                for index, layer in enumerate(self.inner.layers):
                    h = h + self._attention(index, layer.self_attn, layer.input_layernorm(h), cos, sin, step,
                                            decode_mask, prefill_masks)
                    h = h + layer.mlp(layer.post_attention_layernorm(h))
            h = self.inner.norm(h[0, step.sample_index])
            return (self.head(h) if self.head is not None else self.lm.lm_head(h)).float()

    def _fused_layers(self, h, cos, sin, step: StepInputs, decode_mask, prefill_masks):
        """All layers on the fast path; h (N, hidden), cos/sin (N, 1, d)."""
        from torch.nn.functional import silu

        assert self.fused is not None
        n_tokens, d = h.shape[0], self.head_dim
        q_size, kv_size = self.num_heads * d, self.num_kv_heads * d
        for index, layer in enumerate(self.fused):
            qkv = layer.qkv(rms_norm(h, layer.input_norm))
            # queries and keys are adjacent in the fused output: one rotary over both
            qk = rotate(qkv[:, :q_size + kv_size].view(n_tokens, self.num_heads + self.num_kv_heads, d), cos, sin)
            q, k = qk[:, :self.num_heads], qk[:, self.num_heads:]
            v = qkv[:, q_size + kv_size:].view(n_tokens, self.num_kv_heads, d)
            h = h + layer.o(self._attend(index, q, k, v, step, decode_mask, prefill_masks).to(h.dtype))
            gate, up = layer.gate_up(rms_norm(h, layer.post_norm)).chunk(2, dim=-1)
            h = h + layer.down(silu(gate) * up)
        return h

    def _decode_mask(self, step: StepInputs):
        """(slots in view, 1, 1, length): each decoding slot sees its positions; idle slots see position 0."""
        import torch

        if not step.num_decodes or step.decode_unmasked:  # e.g. one stream: it sees every cached position
            return None
        width = max(step.decode_slots) + 1
        limit = torch.zeros(width, dtype=torch.long, device=self.device)
        limit[step.decode_slots] = step.positions[: step.num_decodes]
        mask = torch.arange(step.decode_len, device=self.device)[None, :] <= limit[:, None]
        return mask[:, None, None, :]

    def _causal_mask(self, n: int, start: int):
        """(1, 1, group·n, start + n): query row p of each head group sees positions ≤ start + p."""
        import torch

        keys = torch.arange(start + n, device=self.device)
        queries = torch.arange(start, start + n, device=self.device)
        mask = keys[None, :] <= queries[:, None]
        return mask.repeat(self.group, 1)[None, None]

    def _attention(self, index: int, attn, x, cos, sin, step: StepInputs, decode_mask, prefill_masks):
        """The generic path: the layer's own projection modules (LoRA-wrapped, bottleneck, q/k norms)."""
        n_tokens = x.shape[1]
        kv, d = self.num_kv_heads, self.head_dim
        q = attn.q_proj(x).view(1, n_tokens, self.num_heads, d)
        k = attn.k_proj(x).view(1, n_tokens, kv, d)
        v = attn.v_proj(x).view(1, n_tokens, kv, d)
        if hasattr(attn, "q_norm"):  # Qwen3 normalises queries and keys per head
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = self._rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # (1, heads, N, d)
        out = self._attend(index, q[0].transpose(0, 1), k[0].transpose(0, 1), v[0], step, decode_mask, prefill_masks)
        return attn.o_proj(out[None].to(x.dtype))

    def _attend(self, index: int, q, k, v, step: StepInputs, decode_mask, prefill_masks):
        """Store k/v (N, kv_heads, d) in the cache, attend with q (N, heads, d); returns (N, heads·d)."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        kv, g, d = self.num_kv_heads, self.group, self.head_dim
        n_tokens = q.shape[0]
        self.cache.write(index, step.slots, step.positions, k.to(self.cache.k.dtype), v.to(self.cache.v.dtype))
        q_rows = q.to(self.cache.k.dtype)
        nd = step.num_decodes
        if nd and not step.prefills and step.decode_in_order:  # decodes only, slots in order
            keys, values = self.cache.view(index, slice(0, nd), step.decode_len)
            o = sdpa(q_rows.reshape(nd, kv, g, d), keys, values, attn_mask=decode_mask, scale=self.scaling)
            return o.reshape(nd, -1)
        out = torch.empty(n_tokens, self.num_heads * d, dtype=q_rows.dtype, device=q.device)
        if nd:
            width = max(step.decode_slots) + 1
            keys, values = self.cache.view(index, slice(0, width), step.decode_len)
            grouped = q_rows[:nd].reshape(nd, kv, g, d)
            in_order = step.decode_in_order
            if not in_order:  # queries go to their slot's row; idle rows attend to position 0 only
                scattered = grouped.new_zeros(width, kv, g, d)
                scattered[step.decode_slots] = grouped
                grouped = scattered
            o = sdpa(grouped, keys, values, attn_mask=decode_mask, scale=self.scaling)
            out[:nd] = (o if in_order else o[step.decode_slots]).reshape(nd, -1)
        for (offset, n, slot, start), mask in zip(step.prefills, prefill_masks, strict=True):
            keys, values = self.cache.view(index, slice(slot, slot + 1), start + n)
            grouped = q_rows[offset: offset + n].reshape(n, kv, g, d).permute(1, 2, 0, 3).reshape(1, kv, g * n, d)
            o = sdpa(grouped, keys, values, attn_mask=mask, scale=self.scaling)  # (1, kv, g·n, d)
            out[offset: offset + n] = o.reshape(kv, g, n, d).permute(2, 0, 1, 3).reshape(n, -1)
        return out
