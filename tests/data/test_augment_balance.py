import random

import pytest

from tuneforge.core.config import AugmentConfig, BalanceConfig, DataConfig, ModelConfig, ParaphraseConfig
from tuneforge.core.errors import DataError
from tuneforge.data.augment import (
    acceptable_rewrite,
    augment_rows,
    entity_variant,
    paraphrase_rows,
    synonym_variant,
)
from tuneforge.data.balance import balance_rows
from tuneforge.data.prepare import prepare, read_split


def chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def test_synonyms_change_the_question_only():
    row = chat("How long does delivery take for a broken item?", "Delivery takes 3 days.")
    out = synonym_variant(row, {"delivery": ["shipping"], "broken": ["damaged"]}, random.Random(0))
    assert out["messages"][0]["content"] == "How long does shipping take for a damaged item?"
    assert out["messages"][1] == row["messages"][1]
    assert synonym_variant(chat("Hi", "Hello"), {"delivery": ["shipping"]}, random.Random(0)) is None


def test_synonyms_keep_capitalisation_and_handle_chinese():
    out = synonym_variant(chat("Refund please", "ok"), {"refund": ["reimbursement"]}, random.Random(0))
    assert out["messages"][0]["content"] == "Reimbursement please"
    out = synonym_variant(chat("我想退货", "好的"), {"退货": ["退回商品"]}, random.Random(0))
    assert out["messages"][0]["content"] == "我想退回商品"


def test_entity_swap_is_consistent_across_turns():
    row = chat("Does Alice live in Paris?", "Yes, Alice has lived in Paris since 2010.")
    out = entity_variant(row, [["Alice", "Bob"], ["Paris", "Lyon"]], random.Random(0))
    assert out["messages"][0]["content"] == "Does Bob live in Lyon?"
    assert out["messages"][1]["content"] == "Yes, Bob has lived in Lyon since 2010."


def test_augment_caps_and_marks_rows():
    rows = [chat(f"How long is delivery {i}?", "3 days.", source=f"f:{i}") for i in range(10)]
    cfg = AugmentConfig(enabled=True, max_new_rows=4, synonyms={"delivery": ["shipping"]})
    out, stats = augment_rows(rows, cfg, seed=0)
    new = out[10:]
    assert len(out) == 14 and stats.details["generated"] == 4
    assert all(r["meta"]["augmented"] == "synonym" for r in new)
    assert [r["meta"]["augmented_from"] for r in new] == ["f:0", "f:1", "f:2", "f:3"]
    assert all("shipping" in r["messages"][0]["content"] for r in new)


def test_paraphrase_keeps_only_usable_rewrites():
    rows = [chat("Where is my parcel?", "On its way."), chat("Can I pay by card?", "Yes.")]
    rewrites = iter(["Where's my package?", ""])
    pairs = paraphrase_rows(rows, lambda prompts: [next(rewrites) for _ in prompts], "paraphrase", "French",
                            "English")
    assert [(s["messages"][0]["content"], v["messages"][0]["content"]) for s, v in pairs] == [
        ("Where is my parcel?", "Where's my package?")]
    assert not acceptable_rewrite("Hello there", "hello there")
    assert not acceptable_rewrite("Hi", "x" * 200)
    assert not acceptable_rewrite("Is order 12 late?", "Is order 13 late?")  # numbers must survive
    assert not acceptable_rewrite("How long is the warranty?", "The warranty lasts two years.")  # an answer
    assert acceptable_rewrite("How long is the warranty?", '"For how long is the warranty valid?"')


def test_balance_caps_both_ways():
    rows = [chat("q", "a", label="big") for _ in range(10)] + [chat("q", "a", label="small") for _ in range(2)]
    out, stats = balance_rows(rows, max_per_label=6, min_per_label=6, max_oversample=2.5, seed=0)
    assert stats.details["per_label"] == {"big": 6, "small": 5}  # small capped at 2.5x its 2 rows
    assert sum(1 for r in out if r.get("meta", {}).get("oversampled")) == 3
    assert stats.reasons == {"undersampled:big": 4}
    with pytest.raises(ValueError, match="min_per_label"):
        BalanceConfig(enabled=True, max_per_label=5, min_per_label=6)
    with pytest.raises(DataError, match="no row has a label"):
        balance_rows([chat("q", "a")], 1, None, 3.0, 0)


def test_augment_touches_only_training_split(tmp_path):
    import json

    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": f"How long is delivery for order {i}?",
                                         "output": f"Order {i} arrives in {i} days."}) for i in range(20)) + "\n")
    cfg = DataConfig(files=[path], validation_fraction=0.2,
                     augment=AugmentConfig(enabled=True, synonyms={"delivery": ["shipping"]}),
                     knowledge={"enabled": False})
    art = prepare(cfg, ModelConfig(name="tiny-random-llama"), tmp_path / "ds")
    train, val = read_split(art, "train"), read_split(art, "validation")
    assert len(train) == 32 and len(val) == 4
    assert sum("augmented" in r.get("meta", {}) for r in train) == 16
    assert not any("augmented" in r.get("meta", {}) for r in val)
    held_out_sources = {r["source"] for r in val}
    assert not any(r["meta"]["augmented_from"] in held_out_sources for r in train if "meta" in r)


@pytest.mark.slow
def test_paraphrase_through_a_real_openai_endpoint(tmp_path):
    """Back-translation through `tuneforge serve smollm2-135m`, called with the openai SDK."""
    from tuneforge.core.config import ServeConfig
    from tuneforge.pipeline import start_server, stop_server

    rows = [chat("How long do I have to return my kettle?", "45 days.", source="f:1"),
            chat("Which countries do you ship to?", "EU, UK and Norway.", source="f:2")]
    process, url = start_server("smollm2-135m", ServeConfig(served_model_name="rewriter"))
    try:
        cfg = AugmentConfig(enabled=True, paraphrase=ParaphraseConfig(base_url=url, temperature=0.0))
        out, stats = augment_rows(rows, cfg, seed=0)
    finally:
        stop_server(process)
    new = out[2:]
    assert stats.details["generated"] == len(new) >= 1
    for row in new:
        assert row["meta"]["augmented"] == "paraphrase"
        source = next(r for r in rows if r["source"] == row["meta"]["augmented_from"])
        assert row["messages"][1] == source["messages"][1]  # the answer is untouched
        assert row["messages"][0]["content"] != source["messages"][0]["content"]
