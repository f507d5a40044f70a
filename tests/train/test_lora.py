import json

import torch

from tuneforge.core.config import TrainConfig
from tuneforge.models import load
from tuneforge.models.lm import collate, summed_loss, target_tokens
from tuneforge.train.lora import lora_model, plan_steps


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


def test_accumulated_gradient_equals_full_batch(tiny_dataset):
    """Loss normalised by the step's target tokens: 2 micro-batches of 2 == 1 batch of 4."""
    from tuneforge.data.prepare import read_split

    rows = read_split(tiny_dataset, "train")[:4]
    cfg = TrainConfig(lora={"dropout": 0.0, "r": 4})

    def grads(groups):
        torch.manual_seed(0)
        model = lora_model(load("tiny-random-llama").model, cfg)
        batches = [collate(g, 2) for g in groups]
        n = sum(target_tokens(b["labels"]) for b in batches)
        for b in batches:
            (summed_loss(model, b) / n).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    torch.testing.assert_close(grads([rows]), grads([rows[:2], rows[2:]]), rtol=1e-4, atol=1e-6)
