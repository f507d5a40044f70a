"""Packing plan: which training examples share one sequence of `capacity` tokens.

First-fit decreasing over the examples' token lengths. The plan only groups examples; the
training loop packs them with attention kept inside each example (position ids restart and no
token attends across a boundary), so packing changes speed, never the maths.
"""

from __future__ import annotations

from typing import Any


def plan_packing(lengths: list[int], capacity: int) -> dict[str, Any]:
    """Bins of example indices whose lengths sum to at most `capacity`, and how full they are."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[int] = []
    for index in order:
        size = min(lengths[index], capacity)
        for b, room in enumerate(free):
            if size <= room:
                bins[b].append(index)
                free[b] -= size
                break
        else:
            bins.append([index])
            free.append(capacity - size)
    used = sum(min(n, capacity) for n in lengths)
    return {
        "capacity": capacity,
        "examples": len(lengths),
        "sequences": len(bins),
        "efficiency": round(used / (len(bins) * capacity), 4) if bins else 0.0,
        "padding_efficiency_unpacked": round(used / (len(lengths) * capacity), 4) if lengths else 0.0,
        "bins": bins,
    }
