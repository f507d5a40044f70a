"""Distill: the KD loss (golden values), layer-dropping students, and a real run through the training loop."""

import pytest
import torch

from tuneforge.compress.distill import distill, fewer_layers
from tuneforge.compress.merge import merge
from tuneforge.core.config import CompressConfig, ParityConfig
from tuneforge.core.errors import CompressError
from tuneforge.models import load
from tuneforge.train.distill import distill_loss

LOOSE = ParityConfig(max_prompts=3, max_new_tokens=4, min_agreement=0.0, max_mean_logit_diff=100.0)


@pytest.fixture(scope="module")
def teacher(tiny_adapter, tmp_path_factory):
    return merge(tiny_adapter.path, tmp_path_factory.mktemp("dt") / "teacher", CompressConfig(parity=LOOSE))


def test_distill_loss_golden_values():
    student = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    teacher = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    targets = torch.tensor([[0, -100]])  # the second position is not a target
    objective, ce = distill_loss(student, teacher, targets, temperature=2.0, alpha=0.25)
    s, t = torch.log_softmax(student[0, 0] / 2, -1), torch.log_softmax(teacher[0, 0] / 2, -1)
    kl = float((t.exp() * (t - s)).sum())
    want_ce = float(-torch.log_softmax(student[0, 0], -1)[0])
    assert ce.item() == pytest.approx(want_ce, rel=1e-6)
    assert objective.item() == pytest.approx(0.75 * want_ce + 0.25 * 4 * kl, rel=1e-6)
    same, ce_same = distill_loss(student, student, targets, 2.0, 0.25)
    assert same.item() == pytest.approx(0.75 * ce_same.item(), rel=1e-6)  # KL of a model to itself is 0


def test_fewer_layers_copies_the_teachers_layers(teacher):
    loaded = load(str(teacher.path))
    student = fewer_layers(loaded, 1)
    assert student.model.config.num_hidden_layers == 1 and len(student.model.model.layers) == 1
    for (name, got), (_, want) in zip(student.model.model.layers[0].named_parameters(),
                                      loaded.model.model.layers[0].named_parameters(), strict=True):
        assert torch.equal(got, want), name
    assert torch.equal(student.model.model.embed_tokens.weight, loaded.model.model.embed_tokens.weight)
    with pytest.raises(CompressError, match="between 1 and 1"):
        fewer_layers(loaded, 2)


def test_distill_trains_a_smaller_student_towards_the_teacher(teacher, tiny_config, tiny_dataset, tmp_path):
    """With alpha = 1 (the KL term alone) the student after distillation is closer to the teacher (KL on the
    training data) than the layer-dropped student it started from; the artifact records what was done."""
    from tuneforge.core.config import DistillConfig
    from tuneforge.data.prepare import read_split
    from tuneforge.train.batching import make_batch

    cfg = tiny_config.model_copy(deep=True)
    cfg.compress = CompressConfig(parity=LOOSE, student_layers=1)
    cfg.train = cfg.train.model_copy(update={"epochs": 4, "lr": 0.003,
                                             "distill": DistillConfig(teacher="set by distill", temperature=1.0,
                                                                      alpha=1.0)})
    artifact = distill(teacher.path, tiny_dataset.path, tmp_path / "student", cfg)
    spec = artifact.manifest["compression"]
    assert spec["operation"] == "distill" and spec["method"] == "kd" and spec["layers_kept"] == 1
    assert spec["parameters_after"] < spec["parameters_before"]
    assert spec["parent"] == teacher.content_hash and spec["dataset"] == tiny_dataset.content_hash
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # scratch removed

    t, start, end = load(str(teacher.path)), fewer_layers(load(str(teacher.path)), 1), load(str(artifact.path))
    rows = read_split(tiny_dataset, "train")[:16]
    batch = make_batch(rows, t.tokenizer.pad_token_id, False)
    keep = batch["targets"] != -100

    def kl(model):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[keep]
            ref = t.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[keep]
        return float(torch.nn.functional.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                                reduction="batchmean"))

    assert kl(end.model) < 0.7 * kl(start.model)


def test_distill_refuses_bad_input(teacher, tiny_adapter, tiny_config, tiny_dataset, tmp_path):
    cfg = tiny_config.model_copy(deep=True)
    cfg.compress = CompressConfig(parity=LOOSE)
    with pytest.raises(CompressError, match="exactly one of"):
        distill(teacher.path, tiny_dataset.path, tmp_path / "s", cfg)
    cfg.compress = CompressConfig(parity=LOOSE, student_layers=1)
    with pytest.raises(CompressError, match="compress merge` first"):
        distill(tiny_adapter.path, tiny_dataset.path, tmp_path / "s", cfg)
    assert not (tmp_path / "s").exists()
