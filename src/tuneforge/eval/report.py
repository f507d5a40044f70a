"""The eval report: report.md, report.html, charts (PNG), answers side by side, judge verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuneforge.data.report import render_html, save_figure

ORDER = ("accuracy", "exact_match", "f1", "rouge_l", "bleu", "chrf", "task_completion", "refusal_rate",
         "judge_score")
PER_ROW = ("accuracy", "task_completion", "f1")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def metric_rows(metrics: dict[str, Any], sets: list[str]) -> list[str]:
    names = [n for n in ("val_loss", "val_perplexity") if n in metrics]
    names += [f"{s}_{m}" for s in sets for m in ORDER if f"{s}_{m}" in metrics]
    names += sorted(k for k in metrics if k.startswith("lm_eval_") and not k.endswith("_delta"))
    return names


def render_table(metrics: dict[str, Any], sets: list[str], has_base: bool) -> str:
    """Markdown table: metric | base | tuned | delta | 95% CI (paired bootstrap)."""
    if not has_base:
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {n} | {_fmt(metrics[n])} |" for n in metric_rows(metrics, sets)]
        return "\n".join(lines)
    lines = ["| metric | base | tuned | delta | 95% CI |", "|---|---|---|---|---|"]
    for name in metric_rows(metrics, sets):
        base, tuned = metrics.get(f"base_{name}"), metrics[name]
        delta = metrics.get(f"{name}_delta")
        if delta is None and isinstance(base, float) and isinstance(tuned, float):
            delta = tuned - base
        ci = metrics.get(f"{name}_ci")
        ci_text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
        delta_text = "-" if delta is None else f"{delta:+.4f}"
        lines.append(f"| {name} | {_fmt(base)} | {_fmt(tuned)} | {delta_text} | {ci_text} |")
    return "\n".join(lines)


def changes(rows: list[dict[str, Any]], base: dict[str, Any], tuned: dict[str, Any], worst: bool,
            limit: int = 5) -> list[dict[str, Any]]:
    """Questions whose per-answer score fell (worst=True) or rose most, with both answers."""
    metric = next((m for m in PER_ROW if any(m in s for s in tuned["scores"])), None)
    if metric is None:
        return []
    items = []
    for i, row in enumerate(rows):
        b, t = base["scores"][i].get(metric), tuned["scores"][i].get(metric)
        if b is None or t is None or b == t or (t < b) != worst:
            continue
        items.append({"question": row["question"], "expected": row.get("keys") or row.get("reference"),
                      "base": base["answers"][i], "tuned": tuned["answers"][i], "metric": metric,
                      "change": t - b})
    items.sort(key=lambda x: x["change"], reverse=not worst)
    return items[:limit]


def write_charts(folder: Path, metrics: dict[str, Any], sets: list[str], history: list[dict] | None,
                 has_base: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    bars = [f"{s}_{m}" for s in sets for m in ("accuracy", "f1", "task_completion", "rouge_l")
            if isinstance(metrics.get(f"{s}_{m}"), float)]
    if bars:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(bars)), 3.5))
        xs = range(len(bars))
        width = 0.38 if has_base else 0.6
        if has_base:
            ax.bar([x - width / 2 for x in xs], [metrics.get(f"base_{b}", 0) for b in bars], width, label="base",
                   color="#9aa5b1")
        ax.bar([x + (width / 2 if has_base else 0) for x in xs], [metrics[b] for b in bars], width, label="tuned",
               color="#3b7dd8")
        ax.set_xticks(list(xs), bars, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title("Before / after")
        ax.legend()
        images.append(save_figure(fig, folder, "metrics.png"))
    if history:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], color="#d8703b")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title("Training loss")
        images.append(save_figure(fig, folder, "loss_curve.png"))
    return images


def write_report(folder: Path, results: list[dict[str, Any]], sets: dict[str, list[dict[str, Any]]],
                 metrics: dict[str, Any], gates: list[dict[str, Any]], verdicts: list[dict[str, Any]],
                 history: list[dict] | None, has_base: bool, notes: list[str] | None = None) -> str:
    """Write every report file into `folder`; return the markdown metric table. `notes`: lines on how the
    answers were made (the domain set's token budget), printed under the models."""
    names = list(sets)
    table = render_table(metrics, names, has_base)
    lines = ["# Evaluation", "", f"Models: {', '.join(r['model'] for r in results)}", "",
             *(line for note in notes or [] for line in (note, "")), table]
    if gates:
        lines += ["", "## Gates", "", "| gate | rule | value | result |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {g['rule']} | {_fmt(g['value'])} | {'pass' if g['passed'] else 'FAIL'} |"
                  for g in gates]
    side_by_side = []
    if has_base:
        base, tuned = results
        for name, rows in sets.items():
            for worst, title in ((True, "Worst regressions"), (False, "Best improvements")):
                items = changes(rows, base["sets"][name], tuned["sets"][name], worst)
                if not items:
                    continue
                lines += ["", f"## {title} ({name} set)", "", "| question | expected | base answer | tuned answer |",
                          "|---|---|---|---|"]
                for it in items:
                    cells = [it["question"], json.dumps(it["expected"], ensure_ascii=False), it["base"], it["tuned"]]
                    lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
            for i, row in enumerate(rows):
                side_by_side.append({"set": name, "question": row["question"], "source": row["source"],
                                     "expected": row.get("keys") or row.get("reference"),
                                     "base": base["sets"][name]["answers"][i],
                                     "tuned": tuned["sets"][name]["answers"][i],
                                     "base_scores": base["sets"][name]["scores"][i],
                                     "tuned_scores": tuned["sets"][name]["scores"][i]})
    if verdicts:
        lines += ["", "## Judge", "", f"{len(verdicts)} verdicts; prompts and raw replies in judge.jsonl."]
        with open(folder / "judge.jsonl", "w", encoding="utf-8") as handle:
            for v in verdicts:
                handle.write(json.dumps(v, ensure_ascii=False) + "\n")
    images = write_charts(folder, metrics, names, history, has_base)
    markdown = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(markdown)
    (folder / "report.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    if side_by_side:
        with open(folder / "answers.jsonl", "w", encoding="utf-8") as handle:
            for item in side_by_side:
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    (folder / "report.html").write_text(render_html(markdown, images, title="Evaluation report"))
    return table


