"""`tuneforge bench recipe`: does a recipe teach a new domain? Domains × recipes, unseen phrasings.

A domain is a folder with `train.jsonl` (chat rows) and `test.jsonl` (or `heldout.jsonl`:
{question, key} rows phrased differently from any training row). A recipe is a set of dotted
config overrides on top of the current defaults; `new-default` is no override at all, `old-default`
pins the recipe tuneforge shipped before #23. Each cell prepares the domain's data, trains, and
answers the domain's test questions and the shipped 150 general questions; the base model is
evaluated once per domain (the general set once for all). Printed per cell: domain accuracy,
general accuracy, its change against the base with a paired-bootstrap 95 % CI, the training time.

The domain set is answered with a token budget that covers the domain's answers (`eval/budget.py`):
a fixed 48 tokens holds an English answer of ~35 words but cuts a 27-character Chinese one, which
SmolLM2's byte-level tokenizer spends ~1.8 tokens per character on (qinghe-clinic: the longest answer
is 57 tokens, its key ends at token 49, so a word-perfect answer scored 0). The general set keeps the
fixed budget, so its base and tuned answers stay comparable across domains.

Every finished cell is written to OUTPUT/cells/DOMAIN__RECIPE.json and reused by the next run, so
the comparison can be run one cell at a time (`--recipes`, `--domains`) and assembled at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.errors import ConfigError

if TYPE_CHECKING:  # the stages are imported when a cell runs, so `bench recipe --help` stays quick
    from tuneforge.core.config import EvalConfig, PipelineConfig

_FIXED_OFF = {"data.knowledge.enabled": False, "train.recipe": "fixed", "train.forgetting.methods": []}

RECIPES: dict[str, dict[str, Any]] = {
    # What tuneforge shipped before #23 (and the demo's hand-tuned train block), pinned.
    "old-default": {**_FIXED_OFF, "train.lr": 2e-4, "train.epochs": 3, "train.warmup_ratio": 0.05,
                    "train.lora.r": 16, "train.lora.alpha": 32},
    "demo-block": {**_FIXED_OFF, "train.lr": 2e-3, "train.epochs": 3, "train.warmup_ratio": 0.05,
                   "train.lora.r": 16, "train.lora.alpha": 32},
    # The automatic recipe with each lever alone, then together.
    "auto": {"data.knowledge.enabled": False, "train.forgetting.methods": []},
    "auto+rewrites": {"data.knowledge.cloze": 0, "data.knowledge.statements": False,
                      "train.forgetting.methods": []},
    "auto+cloze": {"data.knowledge.rewrites": 0, "data.knowledge.statements": False,
                   "train.forgetting.methods": []},
    "auto+statements": {"data.knowledge.rewrites": 0, "data.knowledge.cloze": 0, "train.forgetting.methods": []},
    "auto+knowledge": {"train.forgetting.methods": []},
    "auto+knowledge+replay": {"train.forgetting.methods": ["replay"]},
    "auto+knowledge+kl": {"train.forgetting.methods": ["kl"]},
    "new-default": {},
}


def domain_files(folder: Path) -> tuple[Path, Path]:
    """(training rows, test questions) of a domain folder."""
    train = folder / "train.jsonl"
    test = next((folder / n for n in ("test.jsonl", "heldout.jsonl") if (folder / n).is_file()), None)
    if not train.is_file() or test is None:
        raise ConfigError(f"domain {folder}: needs train.jsonl and test.jsonl (or heldout.jsonl)")
    return train, test


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    tmp.replace(path)


GENERAL_MAX_NEW_TOKENS = 48  # the general set's budget (and the domain set's floor)


def _pipeline(train: Path, test: Path, overrides: dict[str, Any], model: str,
              max_new_tokens: int) -> PipelineConfig:
    from tuneforge.core.config import load_pipeline

    values = {"model.name": model, "data.files": [str(train.absolute())],
              "data.contamination.eval_files": [str(test.absolute())], "data.contamination.ngram": 4,
              "eval.questions": str(test.absolute()), "eval.general": True, "eval.max_new_tokens": max_new_tokens,
              "eval.batch_size": 36, **overrides}
    return load_pipeline(None, values=values)


def _configs(folder: Path, overrides: dict[str, Any], model: str) -> tuple[PipelineConfig, EvalConfig]:
    """(the cell's pipeline config with the domain's answer budget, its eval config with the general budget).

    The domain budget is derived from the training answers as `tuneforge run` derives it (at least the
    general set's budget), then pinned, so the cell's cache knows what its answers were made under."""
    from tuneforge.data.formats import read_jsonl
    from tuneforge.eval.budget import answer_budget
    from tuneforge.models.loader import load_tokenizer

    train, test = domain_files(folder)
    budget = answer_budget((row for _, row in read_jsonl(train)), load_tokenizer(model), GENERAL_MAX_NEW_TOKENS)
    cfg = _pipeline(train, test, overrides, model, budget)
    return cfg, cfg.eval.model_copy(update={"max_new_tokens": GENERAL_MAX_NEW_TOKENS})


def _scores(result: dict[str, Any], name: str) -> list[float]:
    return [float(s.get("accuracy", 0.0)) for s in result["sets"][name]["scores"]]


def _evaluate(ref: str, cfg: PipelineConfig, general_eval: EvalConfig,
              names: tuple[str, ...] = ("domain", "general")) -> dict[str, Any]:
    """The sets `names` answered by the model at `ref`: the domain set with `cfg.eval`'s budget, the
    general set with `general_eval`'s (the model is loaded once)."""
    from tuneforge.eval.evaluate import evaluate_loaded, question_sets
    from tuneforge.models import load

    loaded = load(ref, dtype=cfg.model.dtype)
    sets = question_sets(cfg.eval)
    result: dict[str, Any] = {"sets": {}}
    for name in names:
        part = evaluate_loaded(loaded, ref, cfg.eval if name == "domain" else general_eval, {name: sets[name]}, [])
        result["sets"][name] = part["sets"][name]
    return result


def base_scores(folder: Path, output: Path, model: str) -> dict[str, dict[str, Any]]:
    """The base model's answers to the domain's test set and to the general set (each computed once)."""
    cfg, general_eval = _configs(folder, {}, model)
    out = {}
    for name, path in (("domain", output / "cells" / f"{folder.name}__base.json"),
                       ("general", output / "cells" / "general__base.json")):
        budget = (cfg.eval if name == "domain" else general_eval).max_new_tokens
        cached = _read(path)
        if cached is None or cached.get("max_new_tokens", GENERAL_MAX_NEW_TOKENS) != budget:
            result = _evaluate(model, cfg, general_eval, (name,))
            cached = {"answers": result["sets"][name]["answers"], "scores": _scores(result, name),
                      "max_new_tokens": budget}
            _write(path, cached)
        out[name] = cached
    return out


def run_cell(folder: Path, recipe: str, output: Path, model: str) -> dict[str, Any]:
    """Prepare, train and evaluate one domain under one recipe (reused from OUTPUT/cells when done)."""
    from tuneforge.data.prepare import prepare
    from tuneforge.eval.stats import paired_bootstrap
    from tuneforge.train.loop import train as train_model

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    cfg, general_eval = _configs(folder, RECIPES[recipe], model)
    path = output / "cells" / f"{folder.name}__{recipe}.json"
    cached = _read(path)
    # a cell answered under another domain budget (cells from before the derived budget had 48) is redone
    if cached is not None and (cached.get("max_new_tokens") or {}).get("domain", GENERAL_MAX_NEW_TOKENS) == \
            cfg.eval.max_new_tokens:
        return cached
    base = base_scores(folder, output, model)
    work = output / "runs" / folder.name / recipe
    dataset = prepare(cfg.data, cfg.model, work / "dataset")
    started = time.perf_counter()
    adapter = train_model(dataset, cfg.model, cfg.train, work / "adapter")
    assert adapter is not None  # None only in the other ranks of a distributed run; the bench runs one process
    seconds = time.perf_counter() - started
    result = _evaluate(str(adapter.path), cfg, general_eval)
    cell: dict[str, Any] = {"name": folder.name, "recipe": recipe, "overrides": RECIPES[recipe],
                            "max_new_tokens": {"domain": cfg.eval.max_new_tokens,
                                               "general": general_eval.max_new_tokens},
                            "rows_train": dataset.metrics["rows_train"], "train_seconds": round(seconds, 1),
                            "train_loop_seconds": adapter.metrics.get("train_seconds"),
                            "steps": adapter.metrics.get("steps"), "recipe_record": adapter.manifest.get("recipe")}
    for name in ("domain", "general"):
        tuned = _scores(result, name)
        ci = paired_bootstrap(base[name]["scores"], tuned)
        cell[name] = {"base": sum(base[name]["scores"]) / len(tuned), "tuned": sum(tuned) / len(tuned),
                      "delta": ci["delta"], "ci": [ci["low"], ci["high"]],
                      "answers": result["sets"][name]["answers"]}
    _write(path, cell)
    return cell


def render(cells: list[dict[str, Any]]) -> str:
    """Markdown: one row per domain × recipe."""
    lines = ["| domain | recipe | train rows | steps | domain acc (base → tuned) | general acc (base → tuned) "
             "| general Δ [95 % CI] | train time |", "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        d, g = c["domain"], c["general"]
        lines.append(f"| {c['name']} | {c['recipe']} | {c['rows_train']} | {c['steps']} | "
                     f"{d['base']:.3f} → **{d['tuned']:.3f}** | {g['base']:.3f} → {g['tuned']:.3f} | "
                     f"{g['delta']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] | {c['train_seconds']:.0f} s |")
    return "\n".join(lines)


def run_bench(domains: list[Path], recipes: list[str], output: Path, model: str) -> list[dict[str, Any]]:
    """Every domain × recipe cell (finished ones reused); the table goes to OUTPUT/results.md."""
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ConfigError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    for folder in domains:
        domain_files(folder)
    cells = [run_cell(folder, recipe, output, model) for folder in domains for recipe in recipes]
    read = (_read(p) for p in (output / "cells").glob("*__*.json") if not p.name.endswith("__base.json"))
    finished = sorted((c for c in read if c), key=lambda c: (c["name"], c["recipe"]))
    (output / "results.md").write_text(render(finished) + "\n")
    return cells
