"""Measures the gateway's grounded dosing rule (gateway.yaml) on questions written apart from the training rows.

1. Calibration, on training-side questions only: the similarity of each known dosing question to its closest
   other known question, against that of each training refusal question (a medicine the leaflets do not
   cover) to its closest known question; prints the threshold that separates them best, and a `flag_below`
   (the 20th percentile of the known questions' similarities: under it, a match is loose).
2. The test (`guard_test.jsonl`, written separately): in-data dosing questions answered, out-of-data dosing
   questions refused, ordinary questions answered (a refusal there is a false refusal), each through the
   route's whole input check (`serve.safety.check_input`, as the gateway runs it); `held`: answered by the
   model but flagged, so the route's review holds it (on_flag).

    python examples/medical-qa/measure_guard.py [--out runs/medical-qa/guard.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tuneforge.gateway.config import load_gateway
from tuneforge.serve.safety import check_input
from tuneforge.serve.safety.grounded import encoder, read_known

HERE = Path(__file__).parent
ROUTE = "linden-vale"


def calibrate(known: list[str], refused: list[str]) -> dict:
    """The threshold between known questions (leave-one-out) and out-of-data ones, from training data only."""
    enc = encoder()
    k, r = enc.encode(known), enc.encode(refused)
    within = k @ k.T
    np.fill_diagonal(within, -1.0)
    known_best, refused_best = within.max(1), (r @ k.T).max(1)
    candidates = np.unique(np.concatenate([known_best, refused_best]))
    accuracy = [((known_best >= t).sum() + (refused_best < t).sum()) / (len(known) + len(refused))
                for t in candidates]
    best = int(np.argmax(accuracy))
    # the midpoint between the chosen value and the next one below: a margin on both sides
    below = candidates[best - 1] if best > 0 else candidates[best]
    return {"threshold": round(float((candidates[best] + below) / 2), 3), "train_accuracy": float(accuracy[best]),
            # the review band's top: a fifth of the known questions are this loosely matched by their siblings
            "flag_below": round(float(np.percentile(known_best, 20)), 3),
            "known_min": float(known_best.min()), "known_median": float(np.median(known_best)),
            "refused_median": float(np.median(refused_best)), "refused_max": float(refused_best.max())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    cfg = load_gateway(HERE / "gateway.yaml").routes[ROUTE].safety
    assert cfg is not None and cfg.topics.grounded
    rule = cfg.topics.grounded[0]
    rows = [json.loads(line) for line in (HERE / "train.jsonl").read_text().splitlines()]
    refused = [r["instruction"] for r in rows if "pharmacist" in r.get("output", "")]
    report: dict = {"calibration": calibrate(read_known(rule.known_file or ""), refused),
                    "threshold_used": rule.threshold, "flag_below_used": rule.flag_below}

    per_kind: dict[str, dict] = {}
    for row in map(json.loads, (HERE / "guard_test.jsonl").read_text().splitlines()):
        check = check_input([{"role": "user", "content": row["question"]}], cfg)
        refused_now = check.answer is not None or check.verdict.blocked
        held = not refused_now and check.verdict.flagged  # answered by the model, held for a person first
        stats = per_kind.setdefault(row["kind"], {"n": 0, "refused": 0, "held": 0, "wrong": [], "held_q": []})
        stats["n"] += 1
        stats["refused"] += refused_now
        stats["held"] += held
        if held:
            stats["held_q"].append(row["question"])
        if refused_now != (row["expect"] == "refuse"):
            stats["wrong"].append(row["question"])
    for stats in per_kind.values():
        stats["refusal_rate"] = round(stats["refused"] / stats["n"], 3)
        stats["held_rate"] = round(stats["held"] / stats["n"], 3)
        # out of data: refused, or at least never released before a person saw it
        stats["refused_or_held_rate"] = round((stats["refused"] + stats["held"]) / stats["n"], 3)
    report["test"] = per_kind
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
