"""Gates: thresholds on evaluation metrics that block a bad model (`tuneforge eval --gate`)."""

from __future__ import annotations

import math
import operator
import re
from typing import Any

from tuneforge.core.errors import ConfigError

SETS = ("domain", "general")
PER_SET = ("accuracy", "exact_match", "f1", "rouge_l", "bleu", "chrf", "task_completion", "refusal_rate",
           "judge_score")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


def known_metrics() -> list[str]:
    """Every metric name a gate may use."""
    names = ["val_loss", "val_perplexity"]
    for s in SETS:
        for m in PER_SET:
            names += [f"{s}_{m}", f"base_{s}_{m}", f"{s}_{m}_delta"]
        names.append(f"{s}_accuracy_drop")
    return names


def parse_gate(name: str, rule: str) -> tuple[str, float]:
    """('>=', 0.8) from '>= 0.8', checking the metric name."""
    known = known_metrics()
    if name not in known and not re.fullmatch(r"(base_)?lm_eval_\w+", name):
        raise ConfigError(f"eval.gates.{name}: unknown metric; known: {', '.join(known)}")
    match = _GATE.match(str(rule))
    if not match:
        raise ConfigError(f"eval.gates.{name}: {rule!r} is not a comparison like '>= 0.8' or '<= 0.05'")
    return match.group(1), float(match.group(2))


def check_gates(gates: dict[str, str], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per gate: name, rule, value, passed. A metric that was not measured fails its gate."""
    results = []
    for name, rule in gates.items():
        op, threshold = parse_gate(name, rule)
        value = metrics.get(name)
        measured = isinstance(value, int | float) and not math.isnan(value)
        passed = bool(measured and OPS[op](value, threshold))
        results.append({"gate": name, "rule": f"{op} {threshold:g}", "value": value if measured else None,
                        "passed": passed})
    return results
