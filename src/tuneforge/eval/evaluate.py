"""`tuneforge eval`: the tuned model and its base, on the domain set and the general (forgetting) set.

Every run answers the same questions with both models and the same greedy decoding, scores each
answer with the metrics its row supports (see `metrics.py`), reports deltas with a paired
bootstrap CI, the general-set drop, optional judge scores, and checks the configured gates.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, ParentRef, create_artifact, is_artifact, load_artifact
from tuneforge.core.config import EvalConfig, ModelConfig, default
from tuneforge.core.errors import DataError
from tuneforge.core.progress import console, progress_bar
from tuneforge.data.formats import read_jsonl
from tuneforge.data.prepare import read_split
from tuneforge.eval.budget import ANSWER_BUDGET_FACTOR, budget_for, longest_answer_tokens
from tuneforge.eval.gates import check_gates, parse_gate
from tuneforge.eval.metrics import (
    corpus_bleu_chrf,
    exact_match,
    is_refusal,
    key_match,
    normalize,
    rouge_l,
    run_checks,
    token_f1,
    validate_checks,
)
from tuneforge.eval.stats import paired_bootstrap
from tuneforge.models import load, load_tokenizer
from tuneforge.models.generate import SamplingParams, generate_chat
from tuneforge.models.lm import batches, mean_loss

__all__ = ["key_match", "normalize", "load_questions", "run_eval", "general_set_path"]

# Per-answer scores that are averaged, and the row field each needs.
ROW_METRICS = {"accuracy": "keys", "exact_match": "reference", "f1": "reference", "rouge_l": "reference",
               "task_completion": "checks"}


def general_set_path() -> Path:
    """The general-knowledge set shipped with tuneforge (150 questions, English and Chinese)."""
    return Path(str(resources.files("tuneforge.eval") / "data" / "general.jsonl"))


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """Evaluation rows; each needs a question and at least one of key, reference, checks (file:line on error)."""
    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with 'question' and 'key', 'reference' or 'checks'")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        out: dict[str, Any] = {"question": question, "source": where, "category": str(row.get("category", ""))}
        if "key" in row:
            keys = [row["key"]] if isinstance(row["key"], str) else row["key"]
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
                raise DataError(f"{where}: 'key' must be a non-empty string or a list of them")
            out["keys"] = keys
        if "reference" in row:
            if not isinstance(row["reference"], str) or not row["reference"].strip():
                raise DataError(f"{where}: 'reference' must be a non-empty string")
            out["reference"] = row["reference"]
        if "checks" in row:
            out["checks"] = validate_checks(row["checks"], where)
        if not {"keys", "reference", "checks"} & set(out):
            raise DataError(f"{where}: the row has no 'key', 'reference' or 'checks' to score an answer against")
        rows.append(out)
    if not rows:
        raise DataError(f"{path}: the evaluation set is empty")
    return rows


def score_answer(row: dict[str, Any], answer: str) -> dict[str, Any]:
    """Every metric this row supports, for one answer."""
    scores: dict[str, Any] = {"refusal": float(is_refusal(answer))}
    if "keys" in row:
        scores["accuracy"] = float(key_match(answer, row["keys"]))
    if "reference" in row:
        scores["exact_match"] = exact_match(answer, row["reference"])
        scores["f1"] = token_f1(answer, row["reference"])
        scores["rouge_l"] = rouge_l(answer, row["reference"])
    if "checks" in row:
        checks = run_checks(answer, row["checks"])
        scores["checks"] = checks
        scores["task_completion"] = float(all(checks.values()))
    return scores


def aggregate(rows: list[dict[str, Any]], answers: list[str], scores: list[dict[str, Any]]) -> dict[str, float]:
    """Set-level metrics: means of per-answer scores, corpus BLEU/chrF, refusal rate."""
    out: dict[str, float] = {"refusal_rate": sum(s["refusal"] for s in scores) / len(scores)}
    for metric in ROW_METRICS:
        values = [s[metric] for s in scores if metric in s]
        if values:
            out[metric] = sum(values) / len(values)
    with_ref = [(a, r["reference"]) for a, r in zip(answers, rows, strict=True) if "reference" in r]
    if with_ref:
        out.update(corpus_bleu_chrf([a for a, _ in with_ref], [r for _, r in with_ref]))
    return out


def answer_questions(loaded, rows: list[dict[str, Any]], cfg: EvalConfig, label: str,
                     max_new_tokens: int | None = None) -> list[str]:
    """Greedy answers, batched, with a progress bar; at most `max_new_tokens` each (default eval.max_new_tokens)."""
    params = SamplingParams(max_new_tokens=max_new_tokens or cfg.max_new_tokens)
    answers: list[str] = []
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(rows), info="")
        for chunk in batches(rows, cfg.batch_size):
            convs = [[{"role": "user", "content": q["question"]}] for q in chunk]
            answers += [g.text.strip() for g in generate_chat(loaded, convs, params)]
            bar.advance(task, len(chunk))
    return answers


def evaluate_model(ref: str, cfg: EvalConfig, sets: dict[str, list[dict[str, Any]]],
                   validation: list[dict[str, Any]], dtype: str | None = None,
                   budgets: dict[str, int] | None = None) -> dict[str, Any]:
    """Answers, per-answer scores and set metrics of one model (loaded in `dtype`, default `model.dtype`'s);
    `budgets` maps a set's name to its answers' token limit (default eval.max_new_tokens)."""
    dtype = dtype or default(ModelConfig, "dtype")
    from tuneforge.core.errors import ModelLoadError, TuneforgeError

    try:
        loaded = load(ref, dtype=dtype)
    except TuneforgeError:
        raise
    except Exception as exc:  # a broken folder fails in many ways inside transformers
        raise ModelLoadError(f"eval: cannot load model {ref!r}: {type(exc).__name__}: {exc}") from exc
    return evaluate_loaded(loaded, ref, cfg, sets, validation, budgets)


def evaluate_loaded(loaded, ref: str, cfg: EvalConfig, sets: dict[str, list[dict[str, Any]]],
                    validation: list[dict[str, Any]], budgets: dict[str, int] | None = None) -> dict[str, Any]:
    """`evaluate_model` for a model already in memory (a compression step's parent and child)."""
    result: dict[str, Any] = {"model": ref, "metrics": {}, "sets": {}}
    short = Path(ref).name or ref
    vocab = loaded.model.get_input_embeddings().weight.shape[0] if validation else 0
    if validation and max(max(r["input_ids"], default=0) for r in validation) >= vocab:
        # the split was tokenized with tokens added after this model (model.add_tokens): the base has no such rows
        console.print(f"{short}: no validation loss, the validation split holds token ids past its {vocab} rows "
                      "(tokens added by model.add_tokens)")
    elif validation:
        lm = mean_loss(loaded.model, validation, loaded.tokenizer.pad_token_id, cfg.batch_size)
        result["metrics"].update({"val_loss": lm["loss"], "val_perplexity": lm["perplexity"]})
    if cfg.lm_eval_tasks:
        from tuneforge.eval.harness import run_harness

        console.print(f"lm-eval: {', '.join(cfg.lm_eval_tasks)} on {short}")
        harness = run_harness(loaded, cfg.lm_eval_tasks, list(cfg.lm_eval_include), cfg.lm_eval_limit)
        result["lm_eval"] = harness
        for task, values in harness.items():
            result["metrics"].update({f"lm_eval_{task}_{k}": v for k, v in values.items()})
    for name, rows in sets.items():
        answers = answer_questions(loaded, rows, cfg, f"{name} set ({short})", (budgets or {}).get(name))
        scores = [score_answer(r, a) for r, a in zip(rows, answers, strict=True)]
        result["sets"][name] = {"answers": answers, "scores": scores}
        result["metrics"].update({f"{name}_{k}": v for k, v in aggregate(rows, answers, scores).items()})
    return result


def compare(base: dict[str, Any] | None, tuned: dict[str, Any], sets: dict[str, list[dict[str, Any]]],
            cfg: EvalConfig) -> dict[str, Any]:
    """Flat metrics: tuned values, base_ values, deltas with paired-bootstrap CIs, general-set drop."""
    metrics: dict[str, Any] = dict(tuned["metrics"])
    if base is None:
        return metrics
    for key, value in base["metrics"].items():
        metrics[f"base_{key}"] = value
    for name in sets:
        for metric in ROW_METRICS:
            b = [s.get(metric) for s in base["sets"][name]["scores"]]
            t = [s.get(metric) for s in tuned["sets"][name]["scores"]]
            pairs = [(x, y) for x, y in zip(b, t, strict=True) if x is not None and y is not None]
            if not pairs:
                continue
            ci = paired_bootstrap([x for x, _ in pairs], [y for _, y in pairs], cfg.bootstrap_samples, cfg.seed)
            metrics[f"{name}_{metric}_delta"] = ci["delta"]
            metrics[f"{name}_{metric}_ci"] = [ci["low"], ci["high"]]
        for metric in ("bleu", "chrf", "refusal_rate", "judge_score"):
            if f"{name}_{metric}" in metrics and f"base_{name}_{metric}" in metrics:
                metrics[f"{name}_{metric}_delta"] = metrics[f"{name}_{metric}"] - metrics[f"base_{name}_{metric}"]
        if f"{name}_accuracy" in metrics:
            metrics[f"{name}_accuracy_drop"] = metrics[f"base_{name}_accuracy"] - metrics[f"{name}_accuracy"]
    for key in [k for k in tuned["metrics"] if k.startswith("lm_eval_")]:
        if f"base_{key}" in metrics:
            metrics[f"{key}_delta"] = metrics[key] - metrics[f"base_{key}"]
    return metrics


def _judge(results: list[dict[str, Any]], sets: dict[str, list[dict[str, Any]]], cfg: EvalConfig) -> list[dict]:
    from tuneforge.eval.judge import DEFAULT_RUBRIC, judge_answers

    assert cfg.judge is not None
    records = []
    for result in results:
        for name, rows in sets.items():
            verdicts = judge_answers(rows, result["sets"][name]["answers"], cfg.judge.base_url, cfg.judge.model,
                                     cfg.judge.api_key_env, cfg.judge.rubric or DEFAULT_RUBRIC, cfg.judge.max_tokens)
            scores = [v["score"] for v in verdicts if v["score"] is not None]
            if scores:
                result["metrics"][f"{name}_judge_score"] = sum(scores) / len(scores)
            records += [{"model": result["model"], "set": name, **v} for v in verdicts]
    return records


def question_sets(cfg: EvalConfig) -> dict[str, list[dict[str, Any]]]:
    """The configured question sets by name: `domain` (eval.questions) and `general` (shipped or given)."""
    sets: dict[str, list[dict[str, Any]]] = {}
    if cfg.questions:
        sets["domain"] = load_questions(cfg.questions)
    if cfg.general:
        sets["general"] = load_questions(cfg.general_questions or general_set_path())
    return sets


def answer_budgets(cfg: EvalConfig, sets: dict[str, list[dict[str, Any]]],
                   dataset: Artifact | None) -> tuple[dict[str, int], str | None]:
    """Tokens each set's answers may take, and a line saying where the domain set's came from.

    Every set gets eval.max_new_tokens, except the domain set when that field is left unset and a
    dataset is given: 1.25 × the longest answer of its train split in its tokenizer's tokens, at least
    eval.max_new_tokens (the general set's fixed budget)."""
    budgets = {name: cfg.max_new_tokens for name in sets}
    if "domain" not in sets:
        return budgets, None
    tokenizer_name = dataset.manifest.get("tokenizer") if dataset is not None else None
    if "max_new_tokens" in cfg.model_fields_set or dataset is None or tokenizer_name is None:
        return budgets, f"domain answers: up to {cfg.max_new_tokens} tokens (eval.max_new_tokens)"
    longest = longest_answer_tokens(read_split(dataset, "train"), load_tokenizer(tokenizer_name))
    budgets["domain"] = budget_for(longest, cfg.max_new_tokens)
    if budgets["domain"] > cfg.max_new_tokens:
        why = f"{ANSWER_BUDGET_FACTOR:g} × the longest training answer, {longest} tokens"
    else:
        why = (f"eval.max_new_tokens, at least {ANSWER_BUDGET_FACTOR:g} × the longest training answer "
               f"of {longest} tokens")
    return budgets, f"domain answers: up to {budgets['domain']} tokens ({why}; set eval.max_new_tokens to fix it)"


def run_eval(model_ref: str, cfg: EvalConfig, output: str | Path, dataset: Artifact | None = None,
             dtype: str | None = None) -> Artifact:
    """Evaluate `model_ref` (and its base) and write an eval-report artifact."""
    from tuneforge.eval.report import write_report

    for name, rule in cfg.gates.items():  # fail on a bad gate before spending minutes generating
        parse_gate(name, rule)
    sets = question_sets(cfg)
    validation = read_split(dataset, "validation") if dataset is not None else []
    if not sets and not validation and not cfg.lm_eval_tasks:
        raise DataError("eval: nothing to evaluate; set eval.questions, eval.general, eval.lm_eval_tasks "
                        "or pass a dataset")
    # Each artifact is verified (every file re-hashed) once here, not again for parents and history.
    artifacts = {model_ref: load_artifact(model_ref)} if is_artifact(model_ref) else {}
    # An adapter, or a fully fine-tuned model artifact: both name their base model in the manifest.
    adapter = artifacts.get(model_ref)
    if adapter is not None and (adapter.kind not in ("adapter", "model") or "base_model" not in adapter.manifest):
        adapter = None
    refs = [model_ref]
    base = str(adapter.manifest["base_model"]) if adapter is not None and cfg.compare_base else None
    if base:
        refs.insert(0, base)
        if is_artifact(base):
            artifacts[base] = load_artifact(base)
    budgets, budget_line = answer_budgets(cfg, sets, dataset)
    if budget_line:
        console.print(budget_line, highlight=False)
    results = [evaluate_model(ref, cfg, sets, validation, dtype, budgets) for ref in refs]
    verdicts = _judge(results, sets, cfg) if cfg.judge else []
    metrics = compare(results[0] if base else None, results[-1], sets, cfg)
    gate_results = check_gates(cfg.gates, metrics)
    metrics["gates"] = gate_results
    parents: list[ParentRef] = [artifacts[r].ref() for r in refs if r in artifacts]
    if dataset is not None:
        parents.append(dataset.ref())
    history = None
    if adapter is not None and "history.jsonl" in adapter.manifest["files"]:
        history = [json.loads(line) for line in adapter.file("history.jsonl").read_text().splitlines()]
    config = {"eval": cfg.model_dump(mode="json"), "models": refs, "max_new_tokens": budgets}
    with create_artifact(output, "eval-report", config=config, parents=parents) as writer:
        table = write_report(writer.path, results, sets, metrics, gate_results, verdicts, history, bool(base),
                             [budget_line] if budget_line else [])
        writer.metrics.update(metrics)
    console.print(table)
    for gate in gate_results:
        mark = "[green]pass[/green]" if gate["passed"] else "[red]FAIL[/red]"
        value = "not measured" if gate["value"] is None else f"{gate['value']:.4f}"
        console.print(f"gate {gate['gate']} {gate['rule']}: {value} {mark}")
    return load_artifact(output, kind="eval-report")


def failed_gates(report: Artifact) -> list[dict[str, Any]]:
    """The gates of an eval report that did not pass."""
    return [g for g in report.metrics.get("gates", []) if not g["passed"]]

