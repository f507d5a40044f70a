"""The domain set's answer budget under `tuneforge run`: derived from the prepared dataset's training
answers unless eval.max_new_tokens is given; the general set keeps the fixed one."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.core.config import EvalConfig, default, load_pipeline
from tuneforge.data.prepare import prepare, read_split
from tuneforge.eval.budget import answer_budget, longest_answer_tokens
from tuneforge.eval.evaluate import answer_budgets, question_sets, run_eval
from tuneforge.models import load_tokenizer

MODEL = "tiny-random-llama"
# a Chinese answer: a byte-level tokenizer spends more tokens than characters on it
LONG = "青禾诊所的门诊时间是周一至周六上午八点到下午五点半，节假日另行通知，请提前在小程序上查看最新安排。"
ROWS = [("诊所几点开门？", LONG), ("What colour is the Quokka lamp?", "Green."),
        ("Does the lamp dim?", "Yes, in three steps.")]


def chat(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question},
                                    {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(values for load_pipeline, the prepared dataset) of three training rows, one with a long answer."""
    folder = tmp_path_factory.mktemp("budget")
    (folder / "train.jsonl").write_text("".join(chat(q, a) for q, a in ROWS))
    (folder / "questions.jsonl").write_text(json.dumps({"question": "周日开门吗？", "key": "周一至周六"}) + "\n")
    (folder / "general.jsonl").write_text(json.dumps({"question": "What is 2 + 3?", "key": "5"}) + "\n")
    values = {"model.name": MODEL, "data.files": [str(folder / "train.jsonl")], "data.validation_fraction": 0.0,
              "data.knowledge.enabled": False, "eval.questions": str(folder / "questions.jsonl"),
              "eval.general_questions": str(folder / "general.jsonl"), "eval.compare_base": False}
    cfg = load_pipeline(None, values=values)
    return values, prepare(cfg.data, cfg.model, folder / "dataset")


def test_unset_budget_covers_the_longest_training_answer(prepared):
    values, dataset = prepared
    cfg = load_pipeline(None, values=values).eval
    longest = len(load_tokenizer(MODEL)(LONG, add_special_tokens=False)["input_ids"])
    floor = default(EvalConfig, "max_new_tokens")
    assert LONG in json.dumps(read_split(dataset, "train"), ensure_ascii=False)
    assert 1.25 * longest > floor  # the answer is long enough for the derived budget to matter
    budgets, line = answer_budgets(cfg, question_sets(cfg), dataset)
    assert budgets["domain"] >= 1.25 * longest and budgets["domain"] == math.ceil(1.25 * longest)
    assert budgets["general"] == floor  # the forgetting set keeps its fixed budget
    assert line == (f"domain answers: up to {budgets['domain']} tokens (1.25 × the longest training answer, "
                    f"{longest} tokens; set eval.max_new_tokens to fix it)")
    # the decontaminated copy `tuneforge run` may swap in leaves the budget derived
    swapped = cfg.model_copy(update={"questions": cfg.questions})
    assert answer_budgets(swapped, question_sets(swapped), dataset)[0] == budgets


def test_an_explicit_budget_is_respected(prepared):
    values, dataset = prepared
    for cfg in (load_pipeline(None, values={**values, "eval.max_new_tokens": 12}).eval,
                load_pipeline(None, overrides=["eval.max_new_tokens=12"], values=values).eval):
        budgets, line = answer_budgets(cfg, question_sets(cfg), dataset)
        assert budgets == {"domain": 12, "general": 12}
        assert line == "domain answers: up to 12 tokens (eval.max_new_tokens)"


def test_short_answers_keep_the_floor():
    tokenizer = load_tokenizer(MODEL)
    rows = [json.loads(chat(q, a)) for q, a in ROWS[1:]] + [{"text": LONG}]  # text rows are no answers
    assert longest_answer_tokens(rows, tokenizer) == len(tokenizer("Yes, in three steps.",
                                                                   add_special_tokens=False)["input_ids"])
    assert answer_budget(rows, tokenizer, floor=64) == 64


def test_run_eval_answers_and_records_with_the_derived_budget(prepared, tmp_path):
    """The tiny random model rarely stops on its own: its domain answer runs past the general budget."""
    values, dataset = prepared
    cfg = load_pipeline(None, values=values).eval
    budgets, line = answer_budgets(cfg, question_sets(cfg), dataset)
    report = run_eval(MODEL, cfg, tmp_path / "eval", dataset)
    assert report.manifest["config"]["max_new_tokens"] == budgets
    assert line in report.file("report.md").read_text()
    results = json.loads(report.file("report.json").read_text())[0]["sets"]
    tokenizer = load_tokenizer(MODEL)

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # decoded text re-tokenized is a few tokens off the generated count (here 104 and 66 for 104 and 64)
    assert tokens(results["domain"]["answers"][0]) > budgets["general"] + 8
    assert tokens(results["general"]["answers"][0]) <= budgets["general"] + 8
