"""`tuneforge train --search`: Optuna (TPE) over lr, LoRA rank/alpha/dropout and epochs.

Each trial is a full `train()` run writing its own artifact under `OUTPUT/trials/`; every
validation is reported to Optuna and a median pruner stops trials that trail the others. The
search writes `results.md` and `results.csv` (one row per trial) and `best.yaml` (the `train:`
section of the best trial, ready for `-c best.yaml`).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from tuneforge.core.artifacts import Artifact
from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.core.progress import console
from tuneforge.train.loop import train
from tuneforge.train.methods import METHODS, method

# methods with a LoRA rank, alpha and dropout to search
LORA_FAMILY = tuple(name for name, m in METHODS.items() if m.low_rank)


def trial_config(base: TrainConfig, trial) -> TrainConfig:
    """The base config with this trial's suggested values; what the base leaves unset stays unset (the recipe
    still chooses warmup and anti-forgetting per trial, as a plain `train` of the base would)."""
    space = base.search
    data = base.model_dump(exclude_unset=True)
    data["lr"] = trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)
    data["epochs"] = trial.suggest_categorical("epochs", space.epochs)
    if method(base.method).low_rank:
        r = trial.suggest_categorical("r", space.r)
        ratio = trial.suggest_categorical("alpha_ratio", space.alpha_ratio)
        data["lora"] = {**data.get("lora", {}), "r": r, "alpha": ratio * r,
                        "dropout": trial.suggest_float("dropout", space.dropout[0], space.dropout[1])}
    data["checkpoint_every"] = None
    return TrainConfig.model_validate(data)


def search(dataset: Artifact, model_cfg: ModelConfig, base: TrainConfig, output: str | Path) -> dict[str, Any]:
    """Run `base.search.trials` trials; returns the best trial's number, value and params."""
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("--search needs Optuna: pip install optuna") from exc
    if not dataset.metrics.get("rows_validation"):
        raise ConfigError("--search needs a validation split: prepare the data with data.validation_fraction > 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    output = Path(output).absolute()
    (output / "trials").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.search.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    rows: list[dict[str, Any]] = []

    def objective(trial) -> float:
        cfg = trial_config(base, trial)
        started = time.perf_counter()
        row: dict[str, Any] = {"trial": trial.number, **trial.params}

        def report(step: int, val_loss: float) -> None:
            trial.report(val_loss, step)
            row["val_loss"] = val_loss
            if trial.should_prune():
                raise optuna.TrialPruned(f"val loss {val_loss:.4f} at step {step}")

        console.rule(f"trial {trial.number}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
        try:
            artifact = train(dataset, model_cfg, cfg, output / "trials" / f"trial-{trial.number:03d}", on_eval=report)
        except optuna.TrialPruned:
            row.update(state="pruned", seconds=round(time.perf_counter() - started, 1))
            rows.append(row)
            raise
        assert artifact is not None
        value = artifact.metrics.get("best_val_loss") or artifact.metrics["val_loss"]
        row.update(state="complete", val_loss=value, seconds=round(time.perf_counter() - started, 1),
                   artifact=str(artifact.path))
        rows.append(row)
        return float(value)

    study.optimize(objective, n_trials=base.search.trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError("no search trial completed; widen train.search ranges or add trials")
    best = study.best_trial
    best_cfg = trial_config(base, optuna.trial.FixedTrial(best.params))
    # only what the trial set: `-c best.yaml` reloads the same set fields, so the recipe chooses the same rest
    best_train = best_cfg.model_dump(mode="json", exclude_unset=True)
    (output / "best.yaml").write_text(yaml.safe_dump({"train": best_train}, sort_keys=False))
    _write_results(output, rows, best.number)
    return {"best_trial": best.number, "best_value": best.value, "best_params": best.params, "trials": rows}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _write_results(output: Path, rows: list[dict[str, Any]], best: int) -> None:
    keys = ["trial", "state", "lr", "r", "alpha_ratio", "dropout", "epochs", "val_loss", "seconds"]
    keys = [k for k in keys if any(k in r for r in rows)]
    with open(output / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*keys, "artifact"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    table = Table(*keys, title="hyperparameter search")
    for row in sorted(rows, key=lambda r: r["trial"]):
        cells = [_fmt(row.get(k, "")) + (" ★" if k == "trial" and row["trial"] == best else "") for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
        table.add_row(*cells)
    (output / "results.md").write_text(f"# Search results\n\nBest trial: {best} (★).\n\n" + "\n".join(lines) + "\n")
    console.print(table)
