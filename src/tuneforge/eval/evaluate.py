"""`tuneforge eval`: validation loss/perplexity and key accuracy, for the tuned model and its base.

A question row is `{"question": str, "key": str | [str, ...]}`; an answer is correct when it
contains any key, compared after Unicode NFKC, case folding and whitespace collapsing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, ParentRef, create_artifact, is_artifact, load_artifact
from tuneforge.core.config import EvalConfig
from tuneforge.core.errors import DataError
from tuneforge.core.progress import console, progress_bar
from tuneforge.data.formats import read_jsonl
from tuneforge.data.prepare import read_split
from tuneforge.models import load
from tuneforge.models.generate import SamplingParams, generate_chat
from tuneforge.models.lm import batches, mean_loss


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form answers and keys are compared in."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def key_match(answer: str, keys: list[str]) -> bool:
    """True when the answer contains any of the keys."""
    norm = normalize(answer)
    return any(normalize(key) in norm for key in keys)


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """Question rows with `keys` as a list; a bad row names file and line."""
    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with 'question' and 'key'")
        question, key = row.get("question"), row.get("key")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        keys = [key] if isinstance(key, str) else key
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise DataError(f"{where}: 'key' must be a non-empty string or a list of them")
        rows.append({"question": question, "keys": keys, "source": where})
    if not rows:
        raise DataError(f"{path}: the question set is empty")
    return rows


def evaluate_model(ref: str, cfg: EvalConfig, questions: list[dict[str, Any]],
                   validation: list[dict[str, Any]], dtype: str = "float32") -> dict[str, Any]:
    """Metrics and answers of one model reference."""
    loaded = load(ref, dtype=dtype)
    result: dict[str, Any] = {"model": ref, "metrics": {}, "answers": []}
    if validation:
        lm = mean_loss(loaded.model, validation, loaded.tokenizer.pad_token_id, cfg.batch_size)
        result["metrics"].update({"val_loss": lm["loss"], "val_perplexity": lm["perplexity"]})
    if questions:
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens)
        answers = []
        with progress_bar() as bar:
            task = bar.add_task(f"answering ({Path(ref).name or ref})", total=len(questions), info="")
            for chunk in batches(questions, cfg.batch_size):
                convs = [[{"role": "user", "content": q["question"]}] for q in chunk]
                for q, gen in zip(chunk, generate_chat(loaded, convs, params), strict=True):
                    answers.append({"question": q["question"], "keys": q["keys"], "answer": gen.text.strip(),
                                    "correct": key_match(gen.text, q["keys"])})
                bar.advance(task, len(chunk))
        result["answers"] = answers
        result["metrics"]["accuracy"] = sum(a["correct"] for a in answers) / len(answers)
    return result


def base_of(ref: str) -> str | None:
    """The base model of an adapter artifact, else None."""
    if is_artifact(ref):
        artifact = load_artifact(ref)
        if artifact.kind == "adapter":
            return str(artifact.manifest["base_model"])
    return None


def render_table(results: list[dict[str, Any]]) -> str:
    """Markdown table: one column per model, one row per metric, plus the delta when two models."""
    names = ["base" if i == 0 and len(results) == 2 else Path(r["model"]).name for i, r in enumerate(results)]
    if len(results) == 2:
        names[1] = "tuned"
    metrics = [m for m in ("accuracy", "val_loss", "val_perplexity") if m in results[-1]["metrics"]]
    header = "| metric | " + " | ".join(names) + (" | delta |" if len(results) == 2 else " |")
    lines = [header, "|" + "---|" * (len(names) + 1 + (len(results) == 2))]
    for metric in metrics:
        values = [r["metrics"].get(metric) for r in results]
        cells = [f"{v:.4f}" if isinstance(v, float) else "-" for v in values]
        if len(results) == 2 and all(isinstance(v, float) for v in values):
            cells.append(f"{values[1] - values[0]:+.4f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_eval(model_ref: str, cfg: EvalConfig, output: str | Path, dataset: Artifact | None = None,
             dtype: str = "float32") -> Artifact:
    """Evaluate `model_ref` (and its base when configured) and write an eval-report artifact."""
    questions = load_questions(cfg.questions) if cfg.questions else []
    validation = read_split(dataset, "validation") if dataset is not None else []
    if not questions and not validation:
        raise DataError("eval: nothing to evaluate; set eval.questions or pass a dataset")
    refs = [model_ref]
    base = base_of(model_ref) if cfg.compare_base else None
    if base:
        refs.insert(0, base)
    results = [evaluate_model(ref, cfg, questions, validation, dtype) for ref in refs]
    table = render_table(results)
    parents: list[ParentRef] = [load_artifact(r).ref() for r in refs if is_artifact(r)]
    if dataset is not None:
        parents.append(dataset.ref())
    metrics = {("base_" if base and i == 0 else "") + k: v
               for i, r in enumerate(results) for k, v in r["metrics"].items()}
    with create_artifact(output, "eval-report", config={"eval": cfg.model_dump(mode="json"), "models": refs},
                         parents=parents) as writer:
        (writer.path / "report.md").write_text(f"# Evaluation\n\n{table}\n")
        (writer.path / "report.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        writer.metrics.update(metrics)
    console.print(table)
    return load_artifact(output, kind="eval-report")
