"""Causal-LM math shared by training and evaluation: batching and token-summed loss."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

IGNORE_INDEX = -100


def collate(rows: Sequence[dict[str, Any]], pad_token_id: int):
    """Right-pad rows of input_ids/labels into tensors: input_ids, attention_mask, labels (B, T)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def target_tokens(labels) -> int:
    """Tokens that carry loss after the causal shift."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def summed_loss(model, batch):
    """Cross-entropy summed over target tokens (not averaged), so callers can normalise correctly."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    shifted = logits[:, :-1, :].float()  # predict token t+1 from position t
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    """Consecutive slices of `size` rows."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def mean_loss(model, rows: Sequence[dict[str, Any]], pad_token_id: int, batch_size: int = 8,
              autocast_dtype=None) -> dict[str, float]:
    """Token-mean loss and perplexity of `model` on tokenized rows (no gradients)."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                         enabled=autocast_dtype is not None):
        for chunk in batches(rows, batch_size):
            batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()}
            total += float(summed_loss(model, batch))
            count += target_tokens(batch["labels"])
    if count == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
