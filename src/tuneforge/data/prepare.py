"""`tuneforge data prepare`: sources → validate → normalize → dedup → filter → PII → split → template → artifact.

Every step works on plain rows and reports what it kept, changed and dropped; the counts form the
funnel in the dataset artifact's `report.md` and manifest metrics.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.progress import Progress

from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact, sha256_file
from tuneforge.core.config import DataConfig, ModelConfig, default
from tuneforge.core.errors import DataError
from tuneforge.core.progress import console, progress_bar
from tuneforge.data.augment import augment_rows
from tuneforge.data.balance import balance_rows
from tuneforge.data.clean import StepStats, dedup_rows, filter_rows, normalize_rows, row_texts, scrub_rows
from tuneforge.data.contamination import check_contamination
from tuneforge.data.formats import load_source, weighted
from tuneforge.data.knowledge import knowledge_rows
from tuneforge.data.packing import plan_packing
from tuneforge.data.report import length_stats, render_html, render_markdown, write_charts
from tuneforge.data.store import read_split_file, write_split
from tuneforge.data.template import IGNORE_INDEX, tokenize_row
from tuneforge.models import load_tokenizer
from tuneforge.models.chat_template import template_hash, tokenizer_hash
from tuneforge.models.tokens import add_tokens

SPLITS = ("train", "validation", "test")
Row = dict[str, Any]


def split_rows(rows: list[Row], validation_fraction: float, seed: int, test_fraction: float | None = None,
               stratify: bool | None = None) -> dict[str, list[Row]]:
    """Seeded train/validation/test split; rows with a `label` are split per label (stratified).
    Unset options take `data`'s defaults."""
    test_fraction = default(DataConfig, "test_fraction") if test_fraction is None else test_fraction
    stratify = default(DataConfig, "stratify") if stratify is None else stratify
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    labelled = stratify and any("label" in r for r in rows if isinstance(r, dict))
    for i, row in enumerate(rows):
        groups[str(row.get("label")) if labelled else ""].append(i)
    picked: dict[str, list[int]] = {name: [] for name in SPLITS}
    for key in sorted(groups):
        order = groups[key]
        rng.shuffle(order)
        n_val = round(len(order) * validation_fraction)
        n_test = round(len(order) * test_fraction)
        picked["validation"] += order[:n_val]
        picked["test"] += order[n_val : n_val + n_test]
        picked["train"] += order[n_val + n_test :]
    # Small sets: make sure a requested held-out split is not empty.
    for name, fraction in (("validation", validation_fraction), ("test", test_fraction)):
        if fraction > 0 and not picked[name] and len(picked["train"]) > 1:
            picked[name].append(picked["train"].pop())
    if not picked["train"]:
        raise DataError(f"data.validation_fraction={validation_fraction} and data.test_fraction={test_fraction} "
                        f"leave no training rows out of {len(rows)}")
    result = {}
    for name, idx in picked.items():
        rng.shuffle(idx)  # labels interleaved, not in blocks
        result[name] = [rows[i] for i in idx]
    return result


def _load_all(data: DataConfig) -> tuple[list[Row], StepStats, list[dict[str, Any]]]:
    sources = [{"path": Path(p), "format": data.format, "columns": {}, "weight": 1.0} for p in data.files]
    sources += [s.model_dump() for s in data.sources]
    if not sources:
        raise DataError("data.files / data.sources: no input files given")
    stats = StepStats("load")
    rng = random.Random(data.seed)
    rows: list[Row] = []
    errors: list[str] = []
    described = []
    for source in sources:
        path = Path(source["path"])
        found = load_source(path, source["format"], source["columns"], data.on_error, errors)
        taken = weighted(found, source["weight"], rng)
        rows.extend(taken)
        digest = sha256_file(path) if path.is_file() else None
        described.append({"path": str(path), "sha256": digest, "rows": len(found), "used": len(taken),
                          "weight": source["weight"]})
    stats.rows_in = len(rows) + len(errors)
    stats.kept = len(rows)
    stats.dropped = len(errors)
    if errors:
        stats.reasons["malformed"] = len(errors)
        stats.details["first_errors"] = errors[:10]
        console.print(f"[yellow]skipped {len(errors)} malformed row(s); first: {errors[0]}[/yellow]")
    return rows, stats, described


def _token_counter(tokenizer):
    def count(rows: list[Row]) -> list[int]:
        texts = ["\n".join(row_texts(r)) for r in rows]
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


def _check_left(rows: list[Row], stats: StepStats) -> None:
    if not rows:
        why = ", ".join(f"{k}: {v}" for k, v in stats.reasons.items()) or "no rows came in"
        raise DataError(f"step '{stats.step}' removed the last rows ({why}); loosen data.{stats.step} settings")


class _Tracked(list):
    """A list whose iteration advances a progress bar, so every step shows progress unchanged."""

    def __init__(self, rows: list[Row], bar: Progress, description: str) -> None:
        super().__init__(rows)
        self.bar = bar
        self.task = bar.add_task(description, total=len(rows), info="")

    def __iter__(self):
        for i, row in enumerate(super().__iter__(), start=1):
            yield row
            if i % 256 == 0 or i == len(self):
                self.bar.update(self.task, completed=i)


def clean(data: DataConfig, tokenizer) -> tuple[list[Row], list[StepStats], list[dict[str, Any]]]:
    """Load and clean the rows (everything before splitting and templating)."""
    rows, load_stats, sources = _load_all(data)
    steps = [load_stats]
    _check_left(rows, load_stats)
    f = data.filter
    with progress_bar() as bar:
        if data.normalize.enabled:
            rows, stats = normalize_rows(_Tracked(rows, bar, "normalize"), cfg=data.normalize)
            steps.append(stats)
        if data.dedup.exact or data.dedup.near:
            rows, stats = dedup_rows(_Tracked(rows, bar, "dedup"), cfg=data.dedup)
            steps.append(stats)
            _check_left(rows, stats)
        rows, stats = filter_rows(_Tracked(rows, bar, "filter"), _token_counter(tokenizer), cfg=f)
        steps.append(stats)
        _check_left(rows, stats)
        if data.pii.enabled:
            rows, stats = scrub_rows(_Tracked(rows, bar, "PII"), list(data.pii.types), data.pii.allow,
                                     data.pii.phone_regions)
            steps.append(stats)
    return rows, steps, sources


def clean_outside_rows(rows: list[Row], data: DataConfig) -> tuple[list[Row], list[StepStats]]:
    """Rows made from text outside the sources (`data.augment.back_translation.files`) through the sources'
    normalize, dedup and PII steps, so that an e-mail in a help-centre line is scrubbed like one in a row."""
    def outside(row: Row) -> bool:
        return row.get("meta", {}).get("augmented") == "back_translation"

    fresh = [r for r in rows if outside(r)]
    if not fresh:
        return rows, []
    steps = []
    if data.normalize.enabled:
        fresh, _ = normalize_rows(fresh, cfg=data.normalize)
    if data.dedup.exact or data.dedup.near:
        fresh, stats = dedup_rows(fresh, cfg=data.dedup)
        steps.append(stats)
    if data.pii.enabled:
        fresh, stats = scrub_rows(fresh, list(data.pii.types), data.pii.allow, data.pii.phone_regions)
        steps.append(stats)
    for stats in steps:
        stats.step += " (back-translated)"
    return [r for r in rows if not outside(r)] + fresh, steps


def prepare(data: DataConfig, model: ModelConfig, output: str | Path) -> Artifact:
    """Build a dataset artifact at `output` from the configured sources, tokenized for `model.name`."""
    tokenizer = load_tokenizer(model.name)
    added = add_tokens(tokenizer, model.add_tokens) if model.add_tokens else {}
    rows, steps, sources = clean(data, tokenizer)
    parts = split_rows(rows, data.validation_fraction, data.seed, data.test_fraction, data.stratify)
    # Augment and balance the training split only: copies of a training row must not leak into held-out splits.
    if data.augment.enabled:
        parts["train"], stats_aug = augment_rows(parts["train"], data.augment, data.seed)
        steps.append(stats_aug)
        parts["train"], outside = clean_outside_rows(parts["train"], data)
        steps += outside
    if data.knowledge.enabled:
        parts["train"], stats_knowledge = knowledge_rows(parts["train"], data.knowledge, data.seed)
        steps.append(stats_knowledge)
    if data.balance.enabled:
        b = data.balance
        parts["train"], stats_bal = balance_rows(parts["train"], b.max_per_label, b.min_per_label,
                                                 b.max_oversample, data.seed)
        steps.append(stats_bal)
    rows = [r for name in SPLITS for r in parts[name]]
    tmpl = StepStats("template", rows_in=len(rows))
    stats: dict[str, Any] = {"rows_in": steps[0].rows_in, "truncated": 0, "dropped_no_target": 0}
    splits: dict[str, list[Row]] = {}
    with progress_bar() as bar:
        task = bar.add_task("tokenizing", total=len(rows), info="")
        for name in SPLITS:
            out = []
            for row in parts[name]:
                encoded = tokenize_row(tokenizer, row, data.max_length, data.mask)
                bar.advance(task)
                truncated = encoded.pop("truncated")
                stats["truncated"] += int(truncated)
                if encoded.pop("turns_without_eos") and not truncated and data.check_eos:
                    raise DataError(
                        f"{row['source']}: an assistant turn does not end with the EOS token "
                        f"{tokenizer.eos_token!r} after templating, so the model would never learn to stop. "
                        "Fix the tokenizer's eos_token or chat template, or set data.check_eos=false"
                    )
                if all(label == IGNORE_INDEX for label in encoded["labels"]):
                    stats["dropped_no_target"] += 1
                    tmpl.reasons["no_trained_tokens_left"] += 1
                    continue
                out.append({**row, **encoded})
            splits[name] = out
    tmpl.kept = sum(len(v) for v in splits.values())
    tmpl.dropped = len(rows) - tmpl.kept
    tmpl.changed = stats["truncated"]
    steps.append(tmpl)
    if not splits["train"]:
        raise DataError("step 'template' removed the last training rows (every answer was cut by data.max_length?)")
    for name, part in splits.items():
        if name == "test" and not part:
            continue
        stats[f"rows_{name}"] = len(part)
        stats[f"tokens_{name}"] = sum(len(r["input_ids"]) for r in part)
        stats[f"target_tokens_{name}"] = sum(sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in part)
    contamination = []
    if data.contamination.eval_files:
        checked = check_contamination(splits["train"], list(data.contamination.eval_files),
                                      data.contamination.ngram, data.contamination.threshold)
        for result in checked:
            contamination.append({"file": str(result.path), "rows": result.total, "flagged": result.flagged,
                                  "decontaminated": f"decontaminated/{result.path.name}" if data.contamination.drop
                                  else None})
            if result.flagged:
                console.print(f"[yellow]contamination: {len(result.flagged)} of {result.total} rows of "
                              f"{result.path} overlap the training data[/yellow]")
        stats["contamination"] = [{k: v for k, v in c.items() if k != "flagged"} | {"flagged": len(c["flagged"])}
                                  for c in contamination]
    step_dicts = [s.to_dict() for s in steps]
    stats["steps"] = step_dicts
    train_lengths = [len(r["input_ids"]) for r in splits["train"]]
    stats["token_lengths"] = length_stats(train_lengths)
    packing = plan_packing(train_lengths, data.max_length)
    stats["packing"] = {k: v for k, v in packing.items() if k != "bins"}
    pii = next((s.details for s in steps if s.step == "pii"), None)
    if pii is not None:
        stats["pii_found"] = pii["found"]
        # answers whose value became a placeholder: the model would learn to answer `<PHONE>`
        stats["answers_with_placeholders"] = pii["answers_with_placeholders"]
        stats["answer_placeholder_types"] = pii["answer_placeholder_types"]

    config = {"data": data.model_dump(mode="json"), "model": model.model_dump(mode="json")}
    with create_artifact(output, "dataset", config=config) as writer:
        for name, part in splits.items():
            if name == "test" and not part:
                continue
            write_split(writer.path / f"{name}.parquet", part)
        if data.contamination.drop:
            (writer.path / "decontaminated").mkdir()
            for result in checked:
                with open(writer.path / "decontaminated" / result.path.name, "w", encoding="utf-8") as handle:
                    for row in result.clean_rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if contamination:
            (writer.path / "contamination.json").write_text(json.dumps(contamination, indent=2, ensure_ascii=False))
        (writer.path / "packing.json").write_text(json.dumps(packing) + "\n")
        markdown = render_markdown(step_dicts, stats, contamination)
        (writer.path / "report.md").write_text(markdown)
        images = write_charts(writer.path, step_dicts, [len(r["input_ids"]) for r in splits["train"]],
                              data.max_length)
        (writer.path / "report.html").write_text(render_html(markdown, images))
        writer.metrics.update(stats)
        writer.extra.update({"tokenizer": model.name, "tokenizer_hash": tokenizer_hash(tokenizer),
                             "chat_template_hash": template_hash(tokenizer), "sources": sources,
                             **({"added_tokens": added} if added else {})})
    return load_artifact(output, kind="dataset")


def read_split(dataset: Artifact, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a dataset artifact (empty for an absent test split)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    files = dataset.manifest["files"]
    for name in (f"{split}.parquet", f"{split}.jsonl"):
        if name in files:
            return read_split_file(dataset.file(name))
    if split == "test":
        return []
    raise DataError(f"{dataset.path}: dataset artifact has no {split} split")
