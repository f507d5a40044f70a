"""Packing: per-sample logits and the loss equal the unpacked (padded) batch; no cross-sample targets."""

import pytest
import torch

from tuneforge.core.config import TrainConfig
from tuneforge.data.prepare import read_split
from tuneforge.models import load
from tuneforge.models.lm import IGNORE_INDEX
from tuneforge.train.batching import (
    batch_loss,
    count_targets,
    epoch_order,
    evaluate_loss,
    forward_logits,
    micro_batches,
    pack,
    pad,
    shifted_targets,
)
from tuneforge.train.methods import make_trainable


@pytest.fixture(scope="module")
def model():
    return load("tiny-random-llama").model.eval()


@pytest.fixture(scope="module")
def rows(tiny_dataset):
    return read_split(tiny_dataset, "train")[:5]


def test_packed_logits_equal_unpacked_per_sample(model, rows):
    packed = pack(rows)
    with torch.no_grad():
        full = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        start = 0
        for row in rows:
            n = len(row["input_ids"])
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(full[start : start + n], alone, rtol=1e-4, atol=1e-4)
            start += n
    # Without restarting positions (naive concatenation) the second sample's logits differ.
    with torch.no_grad():
        naive = model(input_ids=packed["input_ids"], use_cache=False).logits[0]
        n0 = len(rows[0]["input_ids"])
        alone = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits[0]
        assert not torch.allclose(naive[n0 : n0 + len(rows[1]["input_ids"])], alone, atol=1e-3)


def test_packed_loss_equals_padded_loss(model, rows):
    with torch.no_grad():
        packed, padded = pack(rows), pad(rows, 2)
        assert count_targets(packed) == count_targets(padded)
        torch.testing.assert_close(batch_loss(model, packed), batch_loss(model, padded), rtol=1e-4, atol=1e-3)


def test_targets_never_cross_a_sample_boundary(rows):
    packed = pack([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert packed["targets"].tolist() == [[6, 7, IGNORE_INDEX, 9, IGNORE_INDEX]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert shifted_targets([IGNORE_INDEX, 4, 5]) == [4, 5, IGNORE_INDEX]


def test_logits_only_at_target_positions(model, rows):
    packed = pack(rows)
    with torch.no_grad():
        logits = forward_logits(model, packed)
    assert logits.shape[0] == count_targets(packed) < packed["input_ids"].shape[1]


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    assert epoch_order(50, 3, 1) == epoch_order(50, 3, 1)
    assert epoch_order(50, 3, 1) != epoch_order(50, 3, 2)
    assert sorted(epoch_order(50, 3, 1)) == list(range(50))
    assert [len(b) for b in micro_batches(list(range(10)), range(10), 4)] == [4, 4, 2]


def test_accumulated_gradient_equals_full_batch(tiny_dataset):
    """Loss normalised by the step's target tokens: 2 packed micro-batches of 2 == 1 batch of 4."""
    rows = read_split(tiny_dataset, "train")[:4]
    cfg = TrainConfig(lora={"dropout": 0.0, "r": 4})

    def grads(groups):
        torch.manual_seed(0)
        trained = make_trainable(load("tiny-random-llama"), cfg)
        batches = [pack(g) for g in groups]
        n = sum(count_targets(b) for b in batches)
        for b in batches:
            (batch_loss(trained, b) / n).backward()
        return torch.cat([p.grad.flatten() for p in trained.parameters() if p.requires_grad])

    torch.testing.assert_close(grads([rows]), grads([rows[:2], rows[2:]]), rtol=1e-4, atol=1e-6)


def test_evaluate_loss_matches_between_packed_and_padded(model, rows):
    a = evaluate_loss(model, rows, 2, 2, packed=True)
    b = evaluate_loss(model, rows, 2, 2, packed=False)
    assert a["tokens"] == b["tokens"] > 0
    assert abs(a["loss"] - b["loss"]) < 1e-4
