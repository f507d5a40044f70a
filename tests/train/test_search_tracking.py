"""Optuna search, MLflow and TensorBoard tracking, memory plan, anti-forgetting, DDP parity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuneforge.core.config import TrainConfig
from tuneforge.core.errors import TrainError

ASSETS = Path(__file__).parents[1] / "assets"


def test_search_writes_results_and_best_config(tiny_config, tiny_dataset, tmp_path):
    from tuneforge.train.search import search

    cfg = TrainConfig.model_validate({**tiny_config.train.model_dump(), "search": {
        "trials": 4, "lr": [1e-3, 5e-2], "r": [2, 4], "epochs": [1, 2]}})
    result = search(tiny_dataset, tiny_config.model, cfg, tmp_path / "search")
    assert len(result["trials"]) == 4
    values = [t["val_loss"] for t in result["trials"] if t["state"] == "complete"]
    assert result["best_value"] == min(values)
    best = yaml.safe_load((tmp_path / "search" / "best.yaml").read_text())["train"]
    assert best["lr"] == pytest.approx(result["best_params"]["lr"])
    assert best["lora"]["r"] == result["best_params"]["r"]
    TrainConfig.model_validate(best)
    table = (tmp_path / "search" / "results.md").read_text()
    assert table.count("\n| ") == 5 and "★" in table



def test_a_search_trial_sets_only_what_it_searches_and_what_the_base_set():
    """A trial's config is the base's set fields plus the trial's values, not a full dump: the recipe still
    chooses warmup and anti-forgetting for it, as for a plain `train` of the base (and of `-c best.yaml`)."""
    import optuna

    from tuneforge.train.recipe import DataShape, choose
    from tuneforge.train.search import trial_config

    base = TrainConfig.model_validate({"batch_size": 4, "lora": {"target_modules": ["q_proj", "v_proj"]}})
    trial = optuna.trial.FixedTrial({"lr": 1e-4, "epochs": 2, "r": 8, "alpha_ratio": 2.0, "dropout": 0.05})
    cfg = trial_config(base, trial)
    assert cfg.model_fields_set == {"batch_size", "lora", "lr", "epochs", "checkpoint_every"}
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (8, 16.0, ["q_proj", "v_proj"])
    _, record = choose(cfg, DataShape(rows=40, facts=10, tokens=4000, target_tokens=1000))
    assert set(record["chosen"]) == {"warmup_ratio", "forgetting.methods"}
    assert record["kept"] == ["epochs", "lora", "lr"]

def test_mlflow_and_tensorboard_receive_the_run(tiny_config, tiny_dataset, tmp_path, monkeypatch):
    from tuneforge.train.loop import train

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.model_validate({**tiny_config.train.model_dump(), "max_steps": 3,
                                      "tracking": {"mlflow": True, "tensorboard": True, "experiment": "t"}})
    train(tiny_dataset, tiny_config.model, cfg, tmp_path / "run")
    import mlflow

    runs = mlflow.search_runs(experiment_names=["t"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    history = mlflow.MlflowClient().get_metric_history(runs.iloc[0]["run_id"], "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    events = list((tmp_path / "run.tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_memory_plan_refuses_with_the_knobs_that_fit(tiny_config, tiny_dataset, tmp_path):
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"memory_limit_gb": 0.5, "batch_size": 4})
    with pytest.raises(TrainError, match="memory plan does not fit.*Options:.*qlora"):
        train(tiny_dataset, tiny_config.model, cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_memory_plan_auto_batch(tiny):
    from tuneforge.train.memory import GiB, plan_batch

    small = plan_batch(tiny.model, 1000, "auto", 128, 0.5, 2, False, "cpu", int(1.3 * GiB))
    large = plan_batch(tiny.model, 1000, "auto", 128, 0.5, 2, False, "cpu", 4 * GiB)
    assert 1 <= small.batch_size < large.batch_size == 64
    assert small.total <= 1.3 * GiB
    ckpt = plan_batch(tiny.model, 1000, 8, 2048, 0.5, 2, True, "cpu", 64 * GiB)
    full = plan_batch(tiny.model, 1000, 8, 2048, 0.5, 2, False, "cpu", 64 * GiB)
    assert ckpt.activations < full.activations


@pytest.mark.parametrize("methods", [["replay", "kl"], ["ewc"]])
def test_anti_forgetting_keeps_the_model_closer_to_base(methods, tiny_config, tiny_dataset, tmp_path):
    """On general data (the base's own answers) the guarded model's loss stays lower than the unguarded one's."""
    from tuneforge.data.prepare import read_split
    from tuneforge.models import load
    from tuneforge.train.batching import evaluate_loss
    from tuneforge.train.forgetting import general_rows
    from tuneforge.train.loop import train

    base = tiny_config.train.model_copy(update={"epochs": 4, "lr": 0.03})
    guarded = TrainConfig.model_validate({**base.model_dump(), "forgetting": {
        "methods": methods, "kl_weight": 2.0, "replay_ratio": 0.5, "max_rows": 16, "ewc_weight": 1e6}})
    plain = train(tiny_dataset, tiny_config.model, base, tmp_path / "plain")
    kept = train(tiny_dataset, tiny_config.model, guarded, tmp_path / "kept")
    general = general_rows(load("tiny-random-llama"), guarded.forgetting, 128)

    def general_loss(path):
        return evaluate_loss(load(str(path)).model, general, 2, 4, packed=True)["loss"]

    assert general_loss(kept.path) < general_loss(plain.path)
    if "replay" in methods:
        assert kept.metrics["tokens_seen"] > plain.metrics["tokens_seen"]  # replay rows were trained on
    domain = read_split(tiny_dataset, "validation")
    assert evaluate_loss(load(str(kept.path)).model, domain, 2, 4, True)["loss"] < 11.0


@pytest.mark.timeout(300)
def test_two_process_ddp_matches_single_process(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-c", str(ASSETS / "pipeline.yaml"), "--set", "train.grad_accum=2", "--set", "train.max_steps=5",
              "--set", "train.batch_size=2", "--set", "train.lora.dropout=0"]
    tf = [sys.executable, "-m", "tuneforge", "train", str(tiny_dataset.path)]
    subprocess.run([*tf, "-o", str(tmp_path / "one"), *common], check=True, env=env, capture_output=True)
    two = subprocess.run([*tf, "-o", str(tmp_path / "two"), "--nproc", "2", *common], env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]

    def losses(name):
        return [json.loads(line)["loss"] for line in (tmp_path / name / "history.jsonl").read_text().splitlines()]

    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["metrics"]["processes"] == 2
    assert losses("two") == pytest.approx(losses("one"), rel=1e-5)
