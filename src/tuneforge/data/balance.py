"""Balance the training rows by label: under-sample big labels, over-sample small ones, both capped."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from tuneforge.core.errors import DataError
from tuneforge.data.clean import StepStats

Row = dict[str, Any]


def balance_rows(rows: list[Row], max_per_label: int | None, min_per_label: int | None,
                 max_oversample: float, seed: int) -> tuple[list[Row], StepStats]:
    """Each label keeps at most `max_per_label` rows and is repeated up to `min_per_label` rows, but
    never beyond `max_oversample` times its own size. Rows without a label form the group '(none)'."""
    if not any("label" in r for r in rows):
        raise DataError("data.balance: no row has a label; map one with data.sources[].columns.label")
    stats = StepStats("balance", rows_in=len(rows))
    rng = random.Random(seed)
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row.get("label", "(none)"))].append(row)
    out: list[Row] = []
    sizes = {}
    for label in sorted(groups):
        group = list(groups[label])
        if max_per_label is not None and len(group) > max_per_label:
            stats.reasons[f"undersampled:{label}"] = len(group) - max_per_label
            group = rng.sample(group, max_per_label)
        if min_per_label is not None and len(group) < min_per_label:
            target = min(min_per_label, int(len(group) * max_oversample))
            picks = [rng.choice(group) for _ in range(max(0, target - len(group)))]
            extra = [{**row, "meta": {**row.get("meta", {}), "oversampled": True}} for row in picks]
            stats.changed += len(extra)
            group = group + extra
        sizes[label] = len(group)
        out.extend(group)
    rng.shuffle(out)
    stats.kept = len(out)
    stats.dropped = max(0, len(rows) - len(out) + stats.changed)
    stats.details["per_label"] = sizes
    return out, stats
