"""`tuneforge data prepare`: files → validated rows → seeded split → templated tokens → dataset artifact."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import DataConfig, ModelConfig
from tuneforge.core.errors import DataError
from tuneforge.core.progress import progress_bar
from tuneforge.data.formats import load_rows
from tuneforge.data.template import IGNORE_INDEX, tokenize_conversation
from tuneforge.models import load_tokenizer
from tuneforge.models.chat_template import template_hash

SPLITS = ("train", "validation")


def split_rows(rows: list[Any], validation_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Shuffle with `seed` and hold out round(n * fraction) rows (at least 1 when fraction > 0)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = round(len(rows) * validation_fraction)
    if validation_fraction > 0:
        n_val = max(1, n_val)
    if n_val >= len(rows):
        raise DataError(
            f"data.validation_fraction={validation_fraction} leaves no training rows out of {len(rows)}"
        )
    validation = [rows[i] for i in order[:n_val]]
    train = [rows[i] for i in order[n_val:]]
    return train, validation


def prepare(data: DataConfig, model: ModelConfig, output: str | Path) -> Artifact:
    """Build a dataset artifact at `output` from `data.files`, tokenized for `model.name`."""
    rows = load_rows(list(data.files), data.format)
    tokenizer = load_tokenizer(model.name)
    train, validation = split_rows(rows, data.validation_fraction, data.seed)
    stats = {"rows_in": len(rows), "truncated": 0, "dropped_no_target": 0}
    splits: dict[str, list[dict[str, Any]]] = {}
    with progress_bar() as bar:
        task = bar.add_task("tokenizing", total=len(rows), info="")
        for name, part in (("train", train), ("validation", validation)):
            out = []
            for row in part:
                encoded = tokenize_conversation(tokenizer, row["messages"], data.max_length)
                bar.advance(task)
                stats["truncated"] += int(encoded.pop("truncated"))
                if all(label == IGNORE_INDEX for label in encoded["labels"]):
                    stats["dropped_no_target"] += 1
                    continue
                out.append({**row, **encoded})
            splits[name] = out
    if not splits["train"]:
        raise DataError("no training rows left after templating (all were cut before the answer?)")
    for name, part in splits.items():
        stats[f"rows_{name}"] = len(part)
        stats[f"tokens_{name}"] = sum(len(r["input_ids"]) for r in part)
        stats[f"target_tokens_{name}"] = sum(sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in part)

    config = {"data": data.model_dump(mode="json"), "model": model.model_dump(mode="json")}
    with create_artifact(output, "dataset", config=config) as writer:
        for name, part in splits.items():
            with open(writer.path / f"{name}.jsonl", "w", encoding="utf-8") as handle:
                for row in part:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        writer.metrics.update(stats)
        writer.extra.update({"tokenizer": model.name, "chat_template_hash": template_hash(tokenizer)})
    return load_artifact(output, kind="dataset")


def read_split(dataset: Artifact, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a dataset artifact."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    with open(dataset.file(f"{split}.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
