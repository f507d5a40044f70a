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
    target_logits,
)
from tuneforge.train.methods import make_trainable


@pytest.fixture(scope="module")
def model():
    return load("tiny-random-llama").model.eval()


@pytest.fixture(scope="module")
def rows(tiny_dataset):
    return read_split(tiny_dataset, "train")[:5]


def _segments(packed):
    """(row, start, length) of each segment, found where position ids restart."""
    out = []
    for r, pos in enumerate(packed["position_ids"].tolist()):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        out += [(r, a, b - a) for a, b in zip(starts, starts[1:], strict=False)]
    return out


@pytest.mark.parametrize("attention", ["sdpa", "eager", "segments"])
@pytest.mark.parametrize("capacity", [None, 1])
def test_packed_logits_equal_unpacked_per_sample(model, rows, capacity, attention):
    from tuneforge.train.attention import register

    model.set_attn_implementation(register() if attention == "segments" else attention)
    packed = pack(rows, capacity)
    longest = max(len(r["input_ids"]) for r in rows)
    if capacity:  # rows bounded by the longest example
        assert packed["input_ids"].shape[1] == longest and packed["input_ids"].shape[0] > 1
    else:
        assert packed["input_ids"].shape[0] == 1
    by_ids = {tuple(r["input_ids"]): r for r in rows}
    matched = 0
    with torch.no_grad():
        full = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        for r, start, n in _segments(packed):
            ids = tuple(packed["input_ids"][r, start : start + n].tolist())
            if ids not in by_ids:
                continue  # the padding tail
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(full[r, start : start + n], alone, rtol=1e-4, atol=1e-4)
            matched += 1
    assert matched == len(rows)
    # Without restarting positions (naive concatenation) a later sample's logits differ.
    one = pack(rows)
    with torch.no_grad():
        naive = model(input_ids=one["input_ids"], use_cache=False).logits[0]
        r, start, n = _segments(one)[1]
        alone = model(input_ids=one["input_ids"][:, start : start + n]).logits[0]
        assert not torch.allclose(naive[start : start + n], alone, atol=1e-3)


def test_packed_loss_equals_padded_loss(model, rows):
    with torch.no_grad():
        packed, padded = pack(rows), pad(rows, 2)
        assert count_targets(packed) == count_targets(padded)
        torch.testing.assert_close(batch_loss(model, packed), batch_loss(model, padded), rtol=1e-4, atol=1e-3)


def test_targets_never_cross_a_sample_boundary(rows):
    packed = pack([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}], 5)
    assert packed["targets"].tolist() == [[6, 7, IGNORE_INDEX, 9, IGNORE_INDEX]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert shifted_targets([IGNORE_INDEX, 4, 5]) == [4, 5, IGNORE_INDEX]


def test_logits_only_at_target_positions(model, rows):
    packed = pack(rows)
    with torch.no_grad():
        logits = forward_logits(model, packed)
        assert logits.shape[1] == count_targets(packed) < packed["input_ids"].shape[1]
        assert target_logits(model, pack(rows, 1)).shape[0] == count_targets(packed)


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


def test_segment_attention_gradients_equal_masked_attention(rows):
    """Same loss and same gradients as the dense block-diagonal mask, packed rows of several lengths."""
    from tuneforge.train.attention import register

    cfg = TrainConfig(lora={"r": 4})
    grads, losses = [], []
    for attention in ("eager", register()):
        torch.manual_seed(0)
        loaded = load("tiny-random-llama")
        loaded.model.set_attn_implementation(attention)
        trained = make_trainable(loaded, cfg)
        for p in trained.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)  # B starts at zero; make every path matter
        torch.manual_seed(1)
        for p in trained.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.05)
        loss = batch_loss(trained, pack(rows, 150))
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in trained.parameters() if p.requires_grad]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
