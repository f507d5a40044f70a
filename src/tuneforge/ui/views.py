"""What the pages show, read from artifacts and the stages' own report functions (no stage logic here)."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, is_artifact, load_artifact
from tuneforge.core.errors import TuneforgeError


def find_artifacts(roots: list[Path]) -> list[dict[str, Any]]:
    """Artifact folders directly under `roots` (the UI's own and the pipeline's run folder), newest first."""
    found: dict[Path, dict[str, Any]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.iterdir():
            if path.is_dir() and is_artifact(path) and path.resolve() not in found:
                try:
                    manifest = json.loads((path / "manifest.json").read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                found[path.resolve()] = {"path": str(path.resolve()), "name": f"{root.name}/{path.name}",
                                         "kind": manifest.get("kind", "?"),
                                         "created_at": manifest.get("created_at", ""),
                                         "content_hash": manifest.get("content_hash", "")}
    return sorted(found.values(), key=lambda a: a["created_at"], reverse=True)


def pick(artifacts: list[dict[str, Any]], path: str | None, kinds: tuple[str, ...], field: str) -> Artifact:
    """The listed artifact at `path`, of one of `kinds`; an error that names the form field otherwise."""
    if not path:
        raise FieldError(field, f"pick a {' or '.join(kinds)} artifact")
    resolved = str(Path(path).resolve())
    match = next((a for a in artifacts if a["path"] == resolved), None)
    if match is None:
        raise FieldError(field, f"{path} is not one of the artifacts this UI lists")
    if match["kind"] not in kinds:
        raise FieldError(field, f"{path} is a {match['kind']} artifact; expected {' or '.join(kinds)}")
    return load_artifact(resolved, verify=False)


class FieldError(TuneforgeError):
    """Bad input in one named form field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def funnel(dataset: Artifact) -> list[dict[str, Any]]:
    """The prepare steps (rows in, kept, changed, dropped and why), as `data prepare` recorded them."""
    return list(dataset.metrics.get("steps", []))


def near_duplicates(dataset: Artifact) -> dict[str, int]:
    """Rows the dedup step dropped, by reason (exact / near)."""
    step = next((s for s in funnel(dataset) if s["step"] == "dedup"), None)
    return dict(step.get("reasons", {})) if step else {}


def contamination(dataset: Artifact) -> list[dict[str, Any]]:
    """Per evaluation file: its rows, and the flagged ones (line, overlap, text)."""
    if "contamination.json" not in dataset.manifest["files"]:
        return []
    return json.loads(dataset.file("contamination.json").read_text())


@lru_cache(maxsize=4)
def _tokenizer(ref: str):
    from tuneforge.models import load_tokenizer

    return load_tokenizer(ref)


def preview(dataset: Artifact, split: str, n: int) -> list[dict[str, str]]:
    """`tuneforge data preview` as HTML: its summary line and its token rendering (trained tokens highlighted)."""
    from rich.console import Console

    from tuneforge.data.prepare import read_split
    from tuneforge.data.preview import render_sample, summary

    tokenizer = _tokenizer(dataset.manifest["tokenizer"])
    samples = []
    for row in read_split(dataset, split)[:n]:
        console = Console(record=True, width=110, file=io.StringIO(), color_system="truecolor")
        console.print(render_sample(tokenizer, row))
        html = console.export_html(inline_styles=True, code_format="{code}")
        samples.append({"summary": summary(tokenizer, row), "html": html})
    return samples


def eval_view(report: Artifact) -> dict[str, Any]:
    """The before/after table, gates, and worst regressions / best improvements of an eval report."""
    from tuneforge.eval.report import changes, metric_rows

    metrics = report.metrics
    sets = [s for s in ("domain", "general") if any(k.startswith(f"{s}_") for k in metrics)]
    has_base = any(k.startswith("base_") for k in metrics)
    rows = []
    for name in metric_rows(metrics, sets):
        base, tuned = metrics.get(f"base_{name}"), metrics.get(name)
        delta = metrics.get(f"{name}_delta")
        if delta is None and isinstance(base, float) and isinstance(tuned, float):
            delta = tuned - base
        rows.append({"metric": name, "base": base, "tuned": tuned, "delta": delta, "ci": metrics.get(f"{name}_ci")})
    side: dict[str, list[dict[str, Any]]] = {"worst": [], "best": []}
    if has_base and "report.json" in report.manifest["files"]:
        results = json.loads(report.file("report.json").read_text())
        answers = ([json.loads(line) for line in report.file("answers.jsonl").read_text().splitlines()]
                   if "answers.jsonl" in report.manifest["files"] else [])
        for name in sets:
            questions = [{"question": a["question"], "keys": a["expected"]} for a in answers if a["set"] == name]
            base, tuned = results[0]["sets"].get(name), results[-1]["sets"].get(name)
            if not questions or base is None or tuned is None:
                continue
            for worst, key in ((True, "worst"), (False, "best")):
                side[key] += [{**c, "set": name} for c in changes(questions, base, tuned, worst)]
    charts = [n for n in ("metrics.png", "loss_curve.png") if n in report.manifest["files"]]
    return {"rows": rows, "has_base": has_base, "gates": metrics.get("gates", []), "worst": side["worst"],
            "best": side["best"], "charts": charts, "models": report.config.get("models", [])}
