"""Micro-batches for training: packed (default) or padded, and the loss summed over target tokens.

Packing concatenates a micro-batch's examples into one row. Position ids restart at 0 for each
example and no attention mask is passed, which makes transformers build a block-diagonal causal
mask: no token attends across an example boundary. Targets are shifted *inside* each example, so
the last token of one example never learns to predict the first token of the next (the packing
leak of naive concatenation). Logits are computed only where a target exists (`logits_to_keep`),
which skips the vocabulary projection on prompt tokens. The result equals the padded batch's
loss exactly; only the speed changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from tuneforge.models.lm import IGNORE_INDEX, collate

Row = dict[str, Any]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of `epoch`: a pure function of (seed, epoch), so resume can rebuild it."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def micro_batches(rows: Sequence[Row], order: Sequence[int], batch_size: int) -> list[list[Row]]:
    return [[rows[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def shifted_targets(labels: Sequence[int]) -> list[int]:
    """Target of position t is label t+1 of the same example; the last position has none."""
    return [*labels[1:], IGNORE_INDEX]


def pack(rows: Sequence[Row], capacity: int | None = None) -> dict[str, Any]:
    """Pack examples into rows of at most `capacity` tokens (first-fit decreasing; default: one row).

    Each row holds input_ids, position_ids restarting per example, and per-example shifted
    targets; the tail of a short row is padding that forms its own segment and carries no target.
    On CPU one row per micro-batch with eager attention measured fastest (docs/benchmarks.md);
    a capacity (never below the longest example) bounds attention's quadratic cost for big batches.
    """
    import torch

    from tuneforge.data.packing import plan_packing

    lengths = [len(r["input_ids"]) for r in rows]
    capacity = max([*lengths, capacity]) if capacity else sum(lengths)
    bins = plan_packing(lengths, capacity)["bins"] if len(rows) > 1 else [[0]]
    width = max(sum(lengths[i] for i in b) for b in bins)
    input_ids = torch.zeros((len(bins), width), dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    targets = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for i in sorted(members):
            n = lengths[i]
            input_ids[r, at : at + n] = torch.tensor(rows[i]["input_ids"])
            positions[r, at : at + n] = torch.arange(n)
            targets[r, at : at + n] = torch.tensor(shifted_targets(rows[i]["labels"]))
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": input_ids, "position_ids": positions, "targets": targets,
            "real_tokens": torch.tensor(sum(lengths))}


def pad(rows: Sequence[Row], pad_token_id: int) -> dict[str, Any]:
    """Right-padded rows with an attention mask and shifted targets (B, T)."""
    import torch

    batch = collate(rows, pad_token_id)
    labels = batch.pop("labels")
    batch["targets"] = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)
    return batch


def make_batch(rows: Sequence[Row], pad_token_id: int, packed: bool,
               pack_length: int | None = None) -> dict[str, Any]:
    return pack(rows, pack_length) if packed else pad(rows, pad_token_id)


def count_targets(batch: dict[str, Any]) -> int:
    return int((batch["targets"] != IGNORE_INDEX).sum())


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens in the batch."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["real_tokens"])


def forward_logits(model, batch: dict[str, Any]):
    """Logits aligned with `batch['targets']`: (N, V) at target positions for packed rows, else (B, T, V)."""
    if "position_ids" in batch:
        # Only positions where some row has a target go through the vocabulary projection.
        keep = (batch["targets"] != IGNORE_INDEX).any(0).nonzero().flatten()
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                    logits_to_keep=keep)
        return out.logits  # (rows, len(keep), V)
    width = batch["input_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return logits[:, -width:]  # prompt tuning prepends virtual tokens


def target_logits(model, batch: dict[str, Any]):
    """(N, V) logits at exactly the batch's N target positions (packed batches only)."""
    return forward_logits(model, batch)[aligned_targets(batch) != IGNORE_INDEX]


def batch_loss(model, batch: dict[str, Any]):
    """Cross-entropy summed over the batch's target tokens (callers divide by the step's target count)."""
    import torch.nn.functional as F

    logits = forward_logits(model, batch)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), aligned_targets(batch).reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def aligned_targets(batch: dict[str, Any]):
    """The batch's targets in the shape `forward_logits` returns (packed rows keep only target columns)."""
    targets = batch["targets"]
    if "position_ids" in batch:
        targets = targets[:, (targets != IGNORE_INDEX).any(0)]
    return targets


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items()}


def evaluate_loss(model, rows: Sequence[Row], pad_token_id: int, batch_size: int, packed: bool,
                  autocast_dtype=None) -> dict[str, float]:
    """Token-mean loss and perplexity on `rows`, without gradients."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                         enabled=autocast_dtype is not None):
        for chunk in micro_batches(rows, range(len(rows)), batch_size):
            batch = to_device(make_batch(chunk, pad_token_id, packed), device)
            n = count_targets(batch)
            if n:
                total += float(batch_loss(model, batch))
                count += n
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
