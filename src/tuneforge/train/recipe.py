"""`train.recipe: auto`: the learning rate, length, warmup, LoRA rank and anti-forgetting chosen from the data.

A fixed recipe tuned on one dataset under-trains a small one and over-trains a large one (#23):
what a fact needs is to be seen often enough, whatever the row count. So the length is set by
exposures per fact (a fact = a distinct answer; its rows = its phrasings, augmented ones included),
bounded below by a step count and above by a token budget; the rank grows with the number of
facts. Replay of the base model's own general answers is on unless `train.forgetting.methods` is set:
at the auto lr, LoRA without it lost 17 points of general accuracy on a new domain (#23). Only fields
the config leaves unset are chosen, so any value given in YAML or `--set` wins.
The choice is printed before training and recorded in the artifact's manifest (`recipe`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tuneforge.core.config import TrainConfig

LORA_FAMILY = ("lora", "dora", "qlora")


@dataclass(frozen=True)
class DataShape:
    """What the recipe looks at in the training split."""

    rows: int  # training rows, augmented ones included, replay excluded
    facts: int  # distinct answers (last assistant turn of chat rows; text rows count as their own)
    tokens: int  # tokens of all training rows
    target_tokens: int  # trained (unmasked) tokens

    @property
    def rows_per_fact(self) -> float:
        return self.rows / max(1, self.facts)


def data_shape(rows: list[dict[str, Any]]) -> DataShape:
    """The shape of tokenized training rows (as `read_split` returns them)."""
    answers: set[str] = set()
    for row in rows:
        messages = row.get("messages")
        if messages is not None and len(messages):
            replies = [m["content"] for m in messages if m["role"] == "assistant"]
            answers.add(replies[-1].strip() if replies else "")
        elif row.get("text"):
            answers.add(str(row["text"]).strip())
    tokens = sum(len(r["input_ids"]) for r in rows)
    targets = sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
    return DataShape(len(rows), len(answers), tokens, targets)


def _batch(cfg: TrainConfig) -> int:
    return (cfg.batch_size if isinstance(cfg.batch_size, int) else 8) * cfg.grad_accum


def choose(cfg: TrainConfig, shape: DataShape) -> tuple[TrainConfig, dict[str, Any]]:
    """(`cfg` with the unset recipe fields chosen from `shape`, the record of what was chosen and why)."""
    record: dict[str, Any] = {"recipe": cfg.recipe, "data": asdict(shape), "chosen": {}, "kept": []}
    if cfg.recipe == "fixed":
        return cfg, record
    auto, given, chosen = cfg.auto, cfg.model_fields_set, record["chosen"]
    update: dict[str, Any] = {}
    if cfg.method in LORA_FAMILY:
        lora_given = cfg.lora.model_fields_set
        if "lora" not in given or "r" not in lora_given:
            steps_up = max(0, shape.facts - 1) // auto.facts_per_rank_step
            rank = min(64, auto.rank * 2 ** min(2, steps_up))
            alpha = 2.0 * rank if "alpha" not in lora_given else cfg.lora.alpha
            update["lora"] = cfg.lora.model_copy(update={"r": rank, "alpha": alpha})
            chosen["lora.r"], chosen["lora.alpha"] = rank, alpha
        if "lr" not in given:
            update["lr"] = chosen["lr"] = auto.lr
    if "forgetting" not in given or "methods" not in cfg.forgetting.model_fields_set:
        update["forgetting"] = cfg.forgetting.model_copy(update={"methods": list(auto.forgetting)})
        chosen["forgetting.methods"] = "+".join(auto.forgetting) or "none"
    per_epoch = max(1, math.ceil(shape.rows / _batch(cfg)))
    tokens_per_epoch = max(1, shape.tokens)
    if "epochs" not in given and "max_steps" not in given:
        epochs = math.ceil(auto.exposures / max(1.0, shape.rows_per_fact))
        epochs = max(epochs, math.ceil(auto.min_steps / per_epoch))
        budget = max(1, auto.max_tokens // tokens_per_epoch)
        epochs = max(1, min(epochs, auto.max_epochs, budget))
        update["epochs"] = chosen["epochs"] = epochs
        record["why_epochs"] = (f"{auto.exposures} exposures / {shape.rows_per_fact:.1f} rows per fact, "
                                f"≥ {auto.min_steps} steps, ≤ {auto.max_epochs} epochs, ≤ {auto.max_tokens:,} tokens")
    epochs = update.get("epochs", cfg.epochs)
    total = per_epoch * epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * epochs)
    if "warmup_ratio" not in given:
        update["warmup_ratio"] = chosen["warmup_ratio"] = round(min(0.1, auto.warmup_steps / max(1, total)), 4)
    kept = [f for f in ("lr", "epochs", "max_steps", "warmup_ratio", "lora") if f in given]
    record["kept"] = sorted(kept if "forgetting.methods" in chosen else [*kept, "forgetting.methods"])
    record["total_steps"] = total
    return cfg.model_copy(update=update), record


def describe(record: dict[str, Any]) -> str:
    """One line for the console: what the recipe chose from which data."""
    data = record["data"]
    if record["recipe"] == "fixed":
        return "recipe fixed: the train config as given"
    chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in record["chosen"].items())
    kept = f"; kept from the config: {', '.join(record['kept'])}" if record["kept"] else ""
    return (f"recipe auto from {data['rows']} rows / {data['facts']} facts ({data['rows'] / max(1, data['facts']):.1f} "
            f"rows per fact, {data['target_tokens']:,} target tokens): {chosen or 'nothing left to choose'}{kept} "
            f"(override with --set train.<field>=… or train.recipe=fixed)")
