"""The dataset report: `report.md`, and `report.html` with a token-length histogram and a step funnel (PNG)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")


def render_markdown(steps: list[dict[str, Any]], metrics: dict[str, Any],
                    contamination: list[dict[str, Any]] | None = None) -> str:
    """Markdown: the step funnel, PII found (and the answers left holding a placeholder), contamination,
    and split/token statistics."""
    lines = ["# Dataset report", "", "| step | in | kept | changed | dropped | why |", "|---|---|---|---|---|---|"]
    for s in steps:
        why = ", ".join(f"{k} {v}" for k, v in s.get("reasons", {}).items())
        lines.append(f"| {s['step']} | {s['rows_in']} | {s['kept']} | {s['changed']} | {s['dropped']} | {why} |")
    pii = next((s.get("found") for s in steps if s["step"] == "pii"), None)
    if pii is not None:
        lines += ["", "## PII replaced", ""]
        lines += [f"- {kind}: {count}" for kind, count in pii.items()] or ["- none found"]
        note = placeholder_note(metrics)
        if note:
            lines += ["", note]
    for item in contamination or []:
        lines += ["", f"## Contamination: {item['file']}", "",
                  f"{len(item['flagged'])} of {item['rows']} evaluation rows overlap the training rows."]
        lines += [f"- line {f['line']} (overlap {f['overlap']:.2f}): {f['text']}" for f in item["flagged"][:20]]
    lines += ["", "## Splits", "", "| split | rows | tokens | trained tokens |", "|---|---|---|---|"]
    for name in SPLITS:
        if f"rows_{name}" in metrics:
            lines.append(f"| {name} | {metrics[f'rows_{name}']} | {metrics[f'tokens_{name}']} | "
                         f"{metrics[f'target_tokens_{name}']} |")
    packing = metrics.get("packing")
    if packing:
        lines += ["", "## Packing plan (train)", "",
                  f"{packing['examples']} examples fit in {packing['sequences']} sequences of {packing['capacity']} "
                  f"tokens: {packing['efficiency']:.0%} of packed tokens are real, against "
                  f"{packing['padding_efficiency_unpacked']:.0%} when each example is padded to the capacity."]
    lengths = metrics.get("token_lengths")
    if lengths:
        lines += ["", "## Token lengths (train)", "",
                  " | ".join(f"{k} {v}" for k, v in lengths.items())]
    return "\n".join(lines) + "\n"


def placeholder_note(metrics: dict[str, Any]) -> str | None:
    """A line when training answers hold a PII placeholder after cleaning (None when none does): such
    an answer teaches the model to answer `<PHONE>`, not the number."""
    count = int(metrics.get("answers_with_placeholders") or 0)
    if not count:
        return None
    named = ", ".join(f"<{kind}>" for kind in metrics.get("answer_placeholder_types") or {}) or "a placeholder"
    return (f"{count} distinct training answer(s) hold {named} after PII cleaning: the model learns to answer "
            f"the placeholder, not the value. If the value is public (a hotline, a support address), list it "
            f"in data.pii.allow; to keep a whole type, remove it from data.pii.types.")


def length_stats(lengths: list[int]) -> dict[str, int]:
    """min / median / p95 / max of token lengths."""
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {"min": ordered[0], "median": pct(0.5), "p95": pct(0.95), "max": ordered[-1]}


def save_figure(fig, folder: Path, name: str) -> str:
    """Lay out, save as PNG in `folder`, free the figure; returns the file name for the report."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)
    return name


def write_charts(folder: Path, steps: list[dict[str, Any]], lengths: list[int], max_length: int) -> list[str]:
    """token_lengths.png and funnel.png in `folder`; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#3b7dd8")
    ax.axvline(max_length, color="#d83b3b", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per training example")
    ax.set_ylabel("examples")
    ax.set_title("Token lengths (train split)")
    ax.legend()
    names.append(save_figure(fig, folder, "token_lengths.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [s["step"] for s in steps]
    kept = [s["kept"] for s in steps]
    ax.barh(labels[::-1], kept[::-1], color="#3bb273")
    for y, value in enumerate(kept[::-1]):
        ax.text(value, y, f" {value}", va="center")
    ax.set_xlabel("rows kept after the step")
    ax.set_title("Data funnel")
    names.append(save_figure(fig, folder, "funnel.png"))
    return names


def render_html(markdown: str, images: list[str], title: str = "Dataset report") -> str:
    """A self-contained page: the markdown's tables as HTML tables, then the charts."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                        + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    body += [f'<img src="{name}" alt="{name}">' for name in images]
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}img{display:block;margin:1em 0}")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"
