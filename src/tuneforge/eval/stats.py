"""Paired bootstrap confidence interval of a mean difference (tuned − base on the same questions)."""

from __future__ import annotations

import numpy as np

from tuneforge.core.config import EvalConfig, default


def paired_bootstrap(base: list[float], tuned: list[float], samples: int | None = None, seed: int | None = None,
                     confidence: float = 0.95) -> dict[str, float]:
    """Mean delta and its percentile CI from resampling question indices with replacement (unset: `eval`'s
    `bootstrap_samples` and `seed` defaults)."""
    samples = default(EvalConfig, "bootstrap_samples") if samples is None else samples
    seed = default(EvalConfig, "seed") if seed is None else seed
    if len(base) != len(tuned):
        raise ValueError(f"paired bootstrap needs equal lengths, got {len(base)} and {len(tuned)}")
    if not base:
        return {"delta": float("nan"), "low": float("nan"), "high": float("nan")}
    diff = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return {"delta": float(diff.mean()), "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail))}
