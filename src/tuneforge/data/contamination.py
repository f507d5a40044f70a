"""Contamination check: evaluation rows whose n-grams already appear in the training rows.

A held-out question that is (nearly) a training question measures memory, not generalisation.
Each evaluation row's word n-grams (a CJK character counts as a word) are looked up in the set of
all training n-grams; the share found is its overlap. Rows at or above the threshold are reported,
and dropped from the decontaminated copy when configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.core.config import ContaminationConfig, settings
from tuneforge.data.clean import _TOKEN, row_texts
from tuneforge.data.formats import read_jsonl


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of `text`; a text shorter than n gives its whole token tuple."""
    tokens = tuple(_TOKEN.findall(text.casefold()))
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tokens}
    return {tokens[i : i + n] for i in range(len(tokens) - n + 1)}


def eval_text(row: Any) -> str:
    """The text of an evaluation row that a model sees: question/prompt/instruction/messages."""
    if isinstance(row, dict):
        for key in ("question", "prompt", "instruction", "input", "text"):
            if isinstance(row.get(key), str):
                return row[key]
        if isinstance(row.get("messages"), list):
            return " ".join(m.get("content", "") for m in row["messages"] if m.get("role") != "assistant")
    return json.dumps(row, ensure_ascii=False)


@dataclass
class ContaminationResult:
    """Per evaluation file: which rows overlap the training data and how much."""

    path: Path
    total: int
    flagged: list[dict[str, Any]]  # {"line", "overlap", "text"}
    clean_rows: list[Any]


def check_contamination(train_rows: list[dict[str, Any]], eval_files: list[Path], n: int | None = None,
                        threshold: float | None = None) -> list[ContaminationResult]:
    """Overlap of each evaluation row with the training rows' n-grams (unset: `data.contamination`'s
    `ngram` and `threshold` defaults)."""
    opts = settings(ContaminationConfig, ngram=n, threshold=threshold)
    n, threshold = opts.ngram, opts.threshold
    seen: set[tuple[str, ...]] = set()
    short: set[tuple[str, ...]] = set()
    for row in train_rows:
        for text in row_texts(row):
            seen |= ngrams(text, n)
            short.add(tuple(_TOKEN.findall(text.casefold())))
    results = []
    for path in eval_files:
        flagged, clean = [], []
        total = 0
        for number, row in read_jsonl(path):
            total += 1
            text = eval_text(row)
            grams = ngrams(text, n)
            hits = sum(1 for g in grams if g in seen or (len(g) < n and g in short))
            overlap = hits / len(grams) if grams else 0.0
            if overlap >= threshold:
                flagged.append({"line": number, "overlap": round(overlap, 3), "text": text[:200]})
            else:
                clean.append(row)
        results.append(ContaminationResult(Path(path), total, flagged, clean))
    return results
