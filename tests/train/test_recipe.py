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


def test_replay_is_chosen_unless_forgetting_methods_are_set(tmp_path):
    shape = DataShape(rows=72, facts=24, tokens=5000, target_tokens=1500)
    chosen, record = choose(TrainConfig(), shape)
    assert chosen.forgetting.methods == ["replay"] and record["chosen"]["forgetting.methods"] == "replay"
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  forgetting: {methods: []}\n")
    kept, record = choose(load_pipeline(path).train, shape)
    assert kept.forgetting.methods == [] and "forgetting.methods" in record["kept"]
    path.write_text("train:\n  forgetting: {replay_ratio: 0.5}\n")  # a ratio alone still means replay, at 0.5
    ratio, _ = choose(load_pipeline(path).train, shape)
    assert ratio.forgetting.methods == ["replay"] and ratio.forgetting.replay_ratio == 0.5
    assert choose(TrainConfig(recipe="fixed"), shape)[0].forgetting.methods == []


def test_bench_recipe_runs_a_cell_and_reuses_it(tmp_path):
    """`tuneforge bench recipe` on a two-fact domain with the tiny model: one cell trained, scored and tabled."""
    import json

    from tuneforge.bench.recipe import render, run_bench

    domain = tmp_path / "lamps"
    domain.mkdir()
    facts = {"What color is the Quokka lamp?": "The Quokka lamp is teal.",
             "Who founded Brindle Co?": "Brindle Co was founded by Ada Voss."}
    domain.joinpath("train.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in facts.items() for _ in range(4)))
    domain.joinpath("test.jsonl").write_text(
        json.dumps({"question": "Which colour does the Quokka lamp come in?", "key": "teal"}) + "\n"
        + json.dumps({"question": "Brindle Co: who started it?", "key": "Ada Voss"}) + "\n")
    out = tmp_path / "bench"
    [cell] = run_bench([domain], ["old-default"], out, "tiny-random-llama")
    assert cell["name"] == "lamps" and cell["recipe"] == "old-default" and cell["steps"] >= 1
    assert len(cell["domain"]["answers"]) == 2 and len(cell["general"]["answers"]) == 150
    assert cell["recipe_record"]["recipe"] == "fixed"
    assert cell["max_new_tokens"] == {"domain": 48, "general": 48}  # two short English answers: the floor
    table = (out / "results.md").read_text()
    assert "| lamps | old-default |" in table and table.strip() == render([cell])
    assert run_bench([domain], ["old-default"], out, "tiny-random-llama") == [cell]  # reused, not retrained


def test_bench_domain_budget_covers_the_longest_answer_in_tokens(tmp_path):
    """A Chinese answer costs a byte-level tokenizer more tokens than characters: the domain set's budget
    follows the training answers in the model's tokens, the general set's stays fixed."""
    import json

    from tuneforge.bench.recipe import GENERAL_MAX_NEW_TOKENS, _configs
    from tuneforge.data.formats import read_jsonl
    from tuneforge.eval.budget import answer_budget
    from tuneforge.models.loader import load_tokenizer

    def budget_of(path):
        return answer_budget((row for _, row in read_jsonl(path)), tokenizer, GENERAL_MAX_NEW_TOKENS)

    tokenizer = load_tokenizer("tiny-random-llama")
    long_answer = "青禾诊所的门诊时间是周一至周六上午八点到下午五点半，节假日另行通知，请提前在小程序上查看。" * 2
    domain = tmp_path / "clinic"
    domain.mkdir()
    rows = [("几点开门？", long_answer), ("Hours?", "Eight to five."), ("周六呢？", "周六上午开门。")]
    domain.joinpath("train.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                   ensure_ascii=False) + "\n" for q, a in rows))
    domain.joinpath("test.jsonl").write_text(json.dumps({"question": "关门时间？", "key": "五点半"}) + "\n")
    longest = len(tokenizer(long_answer, add_special_tokens=False)["input_ids"])
    assert longest > GENERAL_MAX_NEW_TOKENS
    budget = budget_of(domain / "train.jsonl")
    assert budget == -(-5 * longest // 4)  # ceil(1.25 × longest)
    cfg, general = _configs(domain, {}, "tiny-random-llama")
    assert cfg.eval.max_new_tokens == budget and general.max_new_tokens == GENERAL_MAX_NEW_TOKENS
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"messages": [{"role": "user", "content": "Hours?"},
                                              {"role": "assistant", "content": "Eight to five."}]}) + "\n")
    assert budget_of(short) == GENERAL_MAX_NEW_TOKENS  # short English answers: the fixed floor
