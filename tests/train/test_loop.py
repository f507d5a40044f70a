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
