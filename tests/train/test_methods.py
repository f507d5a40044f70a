"""Every method trains on the tiny model, and its artifact loads back to the same outputs."""

import pytest
import torch

from tuneforge.core.config import TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import load
from tuneforge.train.loop import train
from tuneforge.train.methods import linear_module_names, make_trainable

METHODS = {
    "lora": {"lr": 0.02},
    "dora": {"lr": 0.02},
    "qlora": {"lr": 0.02},
    "full": {"lr": 0.003},
    "adapter": {"lr": 0.01},
    "ia3": {"lr": 0.1},
    "prompt_tuning": {"lr": 0.1},
    "prefix_tuning": {"lr": 0.05},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_and_reloads(method, tiny_config, tiny_dataset, tmp_path):
    cfg = tiny_config.train.model_copy(update={"method": method, "epochs": 3, "eval_every": None, **METHODS[method]})
    artifact = train(tiny_dataset, tiny_config.model, cfg, tmp_path / method)
    m = artifact.metrics
    assert artifact.kind == ("model" if method == "full" else "adapter")
    assert artifact.manifest["method"] == method
    assert m["train_loss_last"] < m["train_loss_first"], m
    assert m["epochs"][-1]["val_loss"] < m["epochs"][0]["val_loss"] + 1e-6 or method == "ia3", m
    assert "loss_curve.png" in artifact.manifest["files"]
    reloaded = load(str(artifact.path))
    base = load("tiny-random-llama")
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 10, 20]])
    with torch.no_grad():
        tuned = reloaded.model(input_ids=ids).logits[:, -ids.shape[1]:]
        assert not torch.allclose(tuned, base.model(input_ids=ids).logits, atol=1e-5)


def test_unknown_target_module_lists_the_model_modules(tiny):
    cfg = TrainConfig(lora={"target_modules": ["q_proj", "query_key_value"]})
    with pytest.raises(ConfigError, match="query_key_value.*linear modules are: .*q_proj"):
        make_trainable(load("tiny-random-llama"), cfg)
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(
        linear_module_names(tiny.model))


@pytest.mark.parametrize("bad", [{"method": "lorax"}, {"lora": {"r": 0}}, {"lora": {"r": -4}},
                                 {"batch_size": 0}])
def test_bad_train_config_names_the_field(bad):
    from tuneforge.core.config import build_config

    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, bad, prefix="train.")
    field = next(iter(bad))
    assert field in str(info.value)


def test_targets_by_name(tiny_config, tiny_dataset, tmp_path):
    cfg = TrainConfig.model_validate({**tiny_config.train.model_dump(), "max_steps": 2,
                                      "lora": {"target_modules": ["q_proj", "v_proj"]}})
    artifact = train(tiny_dataset, tiny_config.model, cfg, tmp_path / "qv")
    assert artifact.metrics["trainable_parameters"] == 2 * 2 * 16 * (64 + 64) - 2 * 16 * 32


def test_qlora_gradients_survive_a_validation_pass(tiny_dataset):
    """bitsandbytes repacks 4-bit weights for CPU inference on the first eval forward; training must not care."""
    from tuneforge.core.config import ModelConfig
    from tuneforge.data.prepare import read_split
    from tuneforge.train.batching import batch_loss, evaluate_loss, pack
    from tuneforge.train.methods import load_base

    cfg = TrainConfig(method="qlora", lora={"dropout": 0.0, "r": 4})
    torch.manual_seed(0)
    model = make_trainable(load_base(ModelConfig(name="tiny-random-llama"), cfg), cfg)
    rows = read_split(tiny_dataset, "train")[:3]
    batch = pack(rows)

    def grads():
        model.zero_grad()
        model.train()
        batch_loss(model, batch).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    before = grads()
    evaluate_loss(model, rows, 2, 2, packed=True)
    torch.testing.assert_close(grads(), before)
