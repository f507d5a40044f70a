"""Segment attention: causal attention computed per packed example, never across examples.

A packed row of examples [a | b | c] needs block-diagonal causal attention. A dense L×L mask
(what transformers builds for sdpa/eager from restarting position ids) costs L² per head although
only Σ nᵢ² entries are used — for 8 examples that is ~8× the needed work, and on CPU attention
then takes a third of the step. This kernel splits the row where the position ids restart and
runs `scaled_dot_product_attention(is_causal=True)` on each example: no mask is materialised and
only the useful blocks are computed. The result equals the masked computation (tested).
"""

from __future__ import annotations

NAME = "tuneforge_segments"
_registered = False


def _segments(position_ids) -> list[list[tuple[int, int]]]:
    rows = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if p == 0] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        rows.append(list(zip(starts, [*starts[1:], len(row)], strict=True)))
    return rows


def segment_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: (B, H, T, D) inputs → ((B, T, H, D) output, None).

    Packed rows are regrouped into a (segments, H, longest, D) batch, attention runs causally on
    it with no mask (padding sits at each segment's end, so real queries never see it) and the
    result is scattered back: linear layers still see only real tokens, attention pays Σ nᵢ² only.
    """
    import torch
    import torch.nn.functional as F

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    position_ids = kwargs.get("position_ids")
    if position_ids is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        # Not a packed training forward (padding mask, cache): plain causal/masked sdpa.
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=p, scale=scaling,
                                             is_causal=attention_mask is None and query.shape[2] > 1)
        return out.transpose(1, 2).contiguous(), None
    b, h, t, d = query.shape
    lengths = [e - s for segs in _segments(position_ids.expand(b, -1)) for s, e in segs]

    def regroup(x):  # (B, H, T, D) → (S, H, n_max, D), padded at each segment's end
        parts = x.transpose(1, 2).reshape(b * t, h, d).split(lengths)
        return torch.nn.utils.rnn.pad_sequence(parts, batch_first=True).transpose(1, 2)

    q, k, v = regroup(query), regroup(key), regroup(value)
    n = q.shape[2]
    scores = torch.matmul(q, k.transpose(-1, -2)) * (scaling if scaling is not None else d**-0.5)
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if p:
        weights = F.dropout(weights, p=p)
    out = torch.matmul(weights, v).transpose(1, 2)  # (S, n_max, H, D)
    flat = torch.cat([out[i, :n] for i, n in enumerate(lengths)])  # segment order == token order
    return flat.reshape(b, t, h, d), None


def _segment_mask(**kwargs):
    """No mask without padding (packed rows: the segments come from the position ids); sdpa's otherwise."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(**kwargs)


def register() -> str:
    """Make NAME available to `model.set_attn_implementation` (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, segment_attention)
        AttentionMaskInterface.register(NAME, _segment_mask)
        _registered = True
    return NAME
