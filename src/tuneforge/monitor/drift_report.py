"""drift.html: the signals' table and plots (matplotlib, inlined as PNG), one self-contained file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.monitor.drift import DriftReport, Features

REFERENCE_COLOUR, TRAFFIC_COLOUR = "#4C72B0", "#DD8452"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _p_values(report: DriftReport) -> str:
    import matplotlib.pyplot as plt

    tested = report.tested
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(tested) + 1.2))
    names = [s.name for s in tested]
    values = [max(s.adjusted_p_value or 0.0, 1e-6) for s in tested]
    colours = ["#C44E52" if s.detected else "#55A868" for s in tested]
    ax.barh(names, values, color=colours)
    ax.axvline(report.alpha, color="black", linestyle="--", label=f"alpha = {report.alpha:g}")
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1.5)
    ax.set_xlabel("Holm-adjusted p-value (red: drift)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    return _png(fig)


def _histogram(reference: np.ndarray, traffic: np.ndarray, label: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    top = float(np.percentile(np.concatenate([reference, traffic]), 99)) or 1.0
    bins = np.linspace(0, top, 30).tolist()
    ax.hist(np.clip(reference, 0, top), bins, density=True, alpha=0.55, color=REFERENCE_COLOUR, label="reference")
    ax.hist(np.clip(traffic, 0, top), bins, density=True, alpha=0.55, color=TRAFFIC_COLOUR, label="traffic")
    ax.set_xlabel(label)
    ax.set_ylabel("density")
    ax.legend()
    return _png(fig)


def _languages(reference: np.ndarray, traffic: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    codes = sorted(set(reference) | set(traffic), key=lambda c: -(np.sum(reference == c) + np.sum(traffic == c)))[:12]
    x = np.arange(len(codes))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(x - 0.2, [np.mean(reference == c) for c in codes], 0.4, color=REFERENCE_COLOUR, label="reference")
    ax.bar(x + 0.2, [np.mean(traffic == c) for c in codes], 0.4, color=TRAFFIC_COLOUR, label="traffic")
    ax.set_xticks(x, codes)
    ax.set_ylabel("share of prompts")
    ax.legend()
    return _png(fig)


def _embeddings(reference: np.ndarray, traffic: np.ndarray) -> str:
    """Both samples on the reference's first two principal axes."""
    import matplotlib.pyplot as plt

    centre = reference.mean(0)
    _, _, axes = np.linalg.svd(reference - centre, full_matrices=False)
    ref2, live2 = (reference - centre) @ axes[:2].T, (traffic - centre) @ axes[:2].T
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(ref2[:, 0], ref2[:, 1], s=8, alpha=0.5, color=REFERENCE_COLOUR, label="reference")
    ax.scatter(live2[:, 0], live2[:, 1], s=8, alpha=0.5, color=TRAFFIC_COLOUR, label="traffic")
    ax.set_xlabel("PC 1 (of the reference)")
    ax.set_ylabel("PC 2")
    ax.legend()
    return _png(fig)


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return ", ".join(f"{k} {share:.0%}" for k, share in list(v.items())[:4])
    return f"{v:.4g}"


def write_html(report: DriftReport, reference: Features, traffic: Features, path: Path) -> None:
    """The report: verdict, the signals' table, then one plot per signal family."""
    import matplotlib

    matplotlib.use("Agg")
    rows = []
    for s in report.signals:
        if s.skipped:
            rows.append(f"<tr><td>{s.name}</td><td>{html.escape(s.test)}</td><td colspan=5><i>skipped: "
                        f"{html.escape(s.skipped)}</i></td></tr>")
            continue
        verdict = "<b style='color:#C44E52'>drift</b>" if s.detected else "ok"
        rows.append(f"<tr><td>{s.name}</td><td>{html.escape(s.test)}</td><td>{html.escape(_value(s.reference))}</td>"
                    f"<td>{html.escape(_value(s.traffic))}</td><td>{s.p_value:.3g}</td>"
                    f"<td>{s.adjusted_p_value:.3g}</td><td>{verdict}</td></tr>")
    plots = [("Holm-adjusted p-values", _p_values(report)),
             ("Prompt embeddings (all-MiniLM-L6-v2), reference principal axes",
              _embeddings(reference.embeddings, traffic.embeddings)),
             ("Prompt length", _histogram(reference.prompt_chars, traffic.prompt_chars, "characters per prompt")),
             ("Prompt language", _languages(reference.languages, traffic.languages))]
    if reference.answer_chars is not None and traffic.answer_chars is not None:
        plots.append(("Answer length", _histogram(reference.answer_chars, traffic.answer_chars,
                                                  "characters per answer")))
    verdict = ("<p style='color:#C44E52'><b>Drift detected</b> on " +
               ", ".join(s.name for s in report.signals if s.detected) + "</p>") if report.drift else \
        "<p style='color:#55A868'><b>No drift detected</b></p>"
    figures = "\n".join(f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{png}'>" for title, png in plots)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tuneforge drift report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} td,th{{padding:.2em .6em;text-align:left}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Drift report</h1>
<p>reference <code>{html.escape(report.reference)}</code> ({report.n_reference} prompts) vs traffic
<code>{html.escape(report.traffic)}</code> ({report.n_traffic} prompts); family-wise alpha {report.alpha:g},
{report.correction} correction over {len(report.tested)} signals.</p>
{verdict}
<table><tr><th>signal</th><th>test</th><th>reference</th><th>traffic</th><th>p</th><th>adjusted p</th>
<th></th></tr>
{"".join(rows)}
</table>
{figures}
</body></html>
""", encoding="utf-8")
