"""The automatic recipe: lengths from exposures per fact, config values kept, choices recorded."""

from __future__ import annotations

from tuneforge.core.config import TrainConfig, load_pipeline
from tuneforge.train.recipe import DataShape, choose, data_shape, describe


def test_length_follows_rows_per_fact():
    few, _ = choose(TrainConfig(), DataShape(rows=72, facts=24, tokens=5000, target_tokens=1500))
    many, _ = choose(TrainConfig(), DataShape(rows=720, facts=24, tokens=50000, target_tokens=15000))
    auto = TrainConfig().auto
    assert few.epochs * 72 / 24 >= auto.exposures and many.epochs < few.epochs
    assert many.epochs * 720 // 8 >= auto.min_steps
    assert few.lr == auto.lr and few.lora.r == auto.rank and few.lora.alpha == 2 * auto.rank
    big, _ = choose(TrainConfig(), DataShape(rows=2000, facts=1000, tokens=100_000, target_tokens=30000))
    assert big.lora.r > auto.rank
    capped, record = choose(TrainConfig(), DataShape(rows=40, facts=40, tokens=140_000, target_tokens=9000))
    assert capped.epochs == 1 and record["total_steps"] == 5  # the token budget wins over exposures


def test_values_given_in_the_config_are_kept(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr: 5.0e-4\n  lora: {r: 8}\n")
    cfg = load_pipeline(path).train
    chosen, record = choose(cfg, DataShape(rows=72, facts=24, tokens=5000, target_tokens=1500))
    assert chosen.lr == 5e-4 and chosen.lora.r == 8 and chosen.epochs != cfg.epochs
    assert record["kept"] == ["lora", "lr"] and "lr" not in record["chosen"]
    assert "kept from the config: lora, lr" in describe(record)
    fixed = TrainConfig(recipe="fixed")
    assert choose(fixed, DataShape(rows=72, facts=24, tokens=5000, target_tokens=1500))[0] == fixed


def test_data_shape_counts_facts():
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
             "input_ids": [1, 2, 3], "labels": [-100, 2, 3]} for q, a in (("a?", "A."), ("b?", "A."), ("c?", "C."))]
    rows.append({"text": "C.", "input_ids": [1, 2], "labels": [1, 2]})
    assert data_shape(rows) == DataShape(rows=4, facts=2, tokens=11, target_tokens=8)
