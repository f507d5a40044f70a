"""Two (or more) variants of a route side by side: traffic, errors, latency, tokens and feedback, each with
a 95 % interval — Wilson's for rates, a bootstrap of the median for latencies — from the request log."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from tuneforge.gateway.store import feedback, request_log

Z95 = 1.959964


def wilson(successes: int, n: int) -> tuple[float, float, float]:
    """(rate, low, high): Wilson's score interval, sound for small n and rates near 0 or 1."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def median_ci(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): a percentile bootstrap of the median."""
    if not values:
        return math.nan, math.nan, math.nan
    data = np.asarray(values)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(draws, len(data)), replace=True), axis=1)
    return float(np.median(data)), float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


@dataclass
class VariantStats:
    variant: str
    requests: int
    errors: tuple[float, float, float]
    latency_ms: tuple[float, float, float]
    ttft_ms: tuple[float, float, float]
    completion_tokens: float
    votes: int
    thumbs_up: tuple[float, float, float]


def compare(engine: sa.Engine, route: str, since: float = 0.0) -> list[VariantStats]:
    """Per-variant statistics of `route` from requests logged since `since` (unix time)."""
    with engine.connect() as db:
        rows = db.execute(sa.select(request_log).where(request_log.c.route == route, request_log.c.ts >= since)
                          ).mappings().all()
        votes = db.execute(sa.select(request_log.c.variant, feedback.c.score)
                           .join(feedback, feedback.c.response_id == request_log.c.response_id)
                           .where(request_log.c.route == route, request_log.c.ts >= since)).all()
    out = []
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        served = [r for r in mine if r["status"] < 400 and r["cache"] != "hit"]
        scores = [s for v, s in votes if v == variant]
        out.append(VariantStats(
            variant, len(mine), wilson(sum(r["status"] >= 500 for r in mine), len(mine)),
            median_ci([r["latency_ms"] for r in served]), median_ci([r["ttft_ms"] for r in served if r["ttft_ms"]]),
            float(np.mean([r["completion_tokens"] for r in served])) if served else math.nan,
            len(scores), wilson(sum(s > 0 for s in scores), len(scores))))
    return out


def render(route: str, stats: list[VariantStats]) -> str:
    def ci(t: tuple[float, float, float], pct: bool = False, digits: int = 1) -> str:
        if math.isnan(t[0]):
            return "–"
        k = 100 if pct else 1
        unit = " %" if pct else ""
        return f"{t[0] * k:.{digits}f}{unit} [{t[1] * k:.{digits}f}, {t[2] * k:.{digits}f}]"

    lines = [f"route {route}: per variant, 95 % intervals in brackets", "",
             "| variant | requests | 5xx rate | latency p50 ms | upstream TTFT p50 ms | completion tokens | votes "
             "| thumbs up |", "|---|---|---|---|---|---|---|---|"]
    for s in stats:
        lines.append(f"| {s.variant} | {s.requests} | {ci(s.errors, True)} | {ci(s.latency_ms)} | {ci(s.ttft_ms)} | "
                     f"{s.completion_tokens:.1f} | {s.votes} | {ci(s.thumbs_up, True)} |")
    if len(stats) == 2 and stats[0].votes and stats[1].votes:
        a, b = stats
        overlap = a.thumbs_up[1] <= b.thumbs_up[2] and b.thumbs_up[1] <= a.thumbs_up[2]
        lines += ["", "thumbs-up intervals overlap: no significant difference yet" if overlap
                  else f"thumbs-up differs: {a.variant} {a.thumbs_up[0]:.0%} vs {b.variant} {b.thumbs_up[0]:.0%}"]
    return "\n".join(lines)
