import json

import torch

from tuneforge.core.config import TrainConfig
from tuneforge.models import load
from tuneforge.train.loop import plan_steps


def test_loss_falls_and_adapter_loads(tiny_adapter, tiny_dataset):
    m = tiny_adapter.metrics
    assert m["train_loss_last"] < m["train_loss_first"] - 1.5
    assert m["epochs"][-1]["val_loss"] < m["epochs"][0]["val_loss"]
    assert tiny_adapter.manifest["base_model"] == "tiny-random-llama"
    assert tiny_adapter.manifest["parents"][0]["content_hash"] == tiny_dataset.content_hash
    assert {"adapter_model.safetensors", "adapter_config.json", "history.jsonl"} <= set(tiny_adapter.manifest["files"])
    history = [json.loads(line) for line in tiny_adapter.file("history.jsonl").read_text().splitlines()]
    assert len(history) == m["steps"]
    lrs = [h["lr"] for h in history]
    assert max(lrs) > lrs[-1]  # cosine decays
    tuned = load(str(tiny_adapter.path))
    base = load("tiny-random-llama")
    assert tuned.source == "artifact-adapter"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(input_ids=ids).logits, base.model(input_ids=ids).logits)


def test_plan_steps():
    assert plan_steps(16, TrainConfig(batch_size=4, epochs=2)) == (4, 8)
    assert plan_steps(16, TrainConfig(batch_size=4, grad_accum=3, epochs=2)) == (2, 4)
    assert plan_steps(16, TrainConfig(batch_size=4, epochs=2, max_steps=3)) == (4, 3)


def test_same_seed_same_curve_and_each_epoch_reshuffles(tiny_config, tiny_dataset, tmp_path, monkeypatch):
    import tuneforge.train.loop as loop

    seen = []
    real = loop.make_batch

    def spy(rows, *args):
        seen.append(tuple(r["source"] for r in rows))
        return real(rows, *args)

    monkeypatch.setattr(loop, "make_batch", spy)
    cfg = tiny_config.train.model_copy(update={"epochs": 2, "batch_size": 2})
    a = loop.train(tiny_dataset, tiny_config.model, cfg, tmp_path / "a")
    first = [s for s in seen if len(s) == 2]
    b = loop.train(tiny_dataset, tiny_config.model, cfg, tmp_path / "b")
    assert a.file("history.jsonl").read_text() == b.file("history.jsonl").read_text().replace(
        str(tmp_path / "b"), str(tmp_path / "a"))
    per_epoch = len(first) // 2
    assert first[:per_epoch] != first[per_epoch : 2 * per_epoch]  # a new order each epoch


def test_early_stopping_keeps_the_best_weights(tiny_config, tiny_dataset, tmp_path):
    """A learning rate that first helps then overshoots: training stops and the best validation's weights are saved."""
    from tuneforge.core.config import TrainConfig
    from tuneforge.data.prepare import read_split
    from tuneforge.train.batching import evaluate_loss
    from tuneforge.train.loop import train

    cfg = TrainConfig.model_validate({**tiny_config.train.model_dump(), "epochs": 40, "lr": 0.3,
                                      "schedule": "constant", "warmup_ratio": 0.0, "batch_size": 2,
                                      "eval_every": 1, "early_stopping_patience": 2})
    artifact = train(tiny_dataset, tiny_config.model, cfg, tmp_path / "es")
    m = artifact.metrics
    assert m["stopped_early"] and m["steps"] < 40 * 5
    vals = [e["val_loss"] for e in m["epochs"]]
    assert m["best_val_loss"] == min(vals) and m["val_loss"] == min(vals)
    assert vals[-1] > min(vals) and m["best_step"] < m["steps"]
    # The saved adapter is the best one, not the last.
    got = evaluate_loss(load(str(artifact.path)).model, read_split(tiny_dataset, "validation"), 2, 2, packed=True)
    assert abs(got["loss"] - min(vals)) < 0.05
