"""Each metric against hand-computed values."""

import pytest

from tuneforge.eval.gates import check_gates, known_metrics
from tuneforge.eval.judge import parse_score
from tuneforge.eval.metrics import (
    corpus_bleu_chrf,
    exact_match,
    is_refusal,
    key_match,
    rouge_l,
    run_checks,
    token_f1,
)
from tuneforge.eval.stats import paired_bootstrap


def test_exact_match():
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("  ＰＡＲＩＳ ", "Paris") == 1.0  # full-width, case, spaces
    assert exact_match("It is Paris", "Paris") == 0.0
    assert exact_match("北京。", "北京") == 1.0


def test_token_f1_by_hand():
    # pred: the cat sat (3), gold: the cat sat down (4); common 3 → P=1, R=0.75, F1=6/7
    assert token_f1("The cat sat", "the cat sat down") == pytest.approx(6 / 7)
    assert token_f1("dog", "cat") == 0.0
    # CJK: each character a token: 北京市 vs 北京 → common 2, P=2/3, R=1 → 0.8
    assert token_f1("北京市", "北京") == pytest.approx(0.8)


def test_rouge_l_by_hand():
    # LCS("a b c d", "a c d e") = a c d = 3; P = 3/4, R = 3/4 → F = 0.75
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("x y", "a b") == 0.0


def test_bleu_chrf():
    perfect = corpus_bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    none = corpus_bleu_chrf(["zzz"], ["the cat sat on the mat"])
    assert none["bleu"] == pytest.approx(0.0) and none["chrf"] < 5


def test_key_fact_numbers_and_width():
    assert key_match("It holds 1.70 litres", ["1.7 litres"])
    assert key_match("价格是１２９欧元", ["129"])
    assert key_match("about 12,000 units", ["12000"])
    assert not key_match("It holds 17 litres", ["1.7 litres"])


def test_rubric_checks():
    schema = {"type": "object", "required": ["order"], "properties": {"order": {"type": "string"}}}
    answer = 'Here: ```json\n{"order": "QA-1"}\n```'
    assert run_checks(answer, {"json": True, "json_schema": schema, "regex": r"QA-\d+"}) == {
        "json": True, "json_schema": True, "regex": True}
    assert run_checks('{"order": 5}', {"json_schema": schema}) == {"json_schema": False}
    assert run_checks("not json", {"json": True}) == {"json": False}
    assert run_checks("Call 911 now", {"must_not_contain": ["911"], "must_contain": "call"}) == {
        "must_not_contain": False, "must_contain": True}


def test_refusal():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI language model, I cannot provide that.")
    assert is_refusal("抱歉，我无法回答这个问题。")
    assert not is_refusal("Sure! The return window is 45 days.")


def test_paired_bootstrap_seeded():
    base = [0, 0, 1, 0, 1, 0, 0, 1, 0, 0]
    tuned = [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]
    ci = paired_bootstrap(base, tuned, samples=2000, seed=0)
    assert ci["delta"] == pytest.approx(0.4)
    assert ci["low"] == pytest.approx(0.1) and ci["high"] == pytest.approx(0.7)
    assert paired_bootstrap(base, tuned, samples=2000, seed=0) == ci
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0}


def test_gates():
    metrics = {"domain_accuracy": 0.85, "general_accuracy_drop": 0.08}
    results = check_gates({"domain_accuracy": ">= 0.8", "general_accuracy_drop": "<= 0.05",
                           "domain_task_completion": ">= 0.95"}, metrics)
    assert [(r["gate"], r["passed"], r["value"]) for r in results] == [
        ("domain_accuracy", True, 0.85), ("general_accuracy_drop", False, 0.08),
        ("domain_task_completion", False, None)]  # not measured fails
    assert "general_accuracy_drop" in known_metrics()


def test_judge_score_parsing():
    assert parse_score("SCORE: 4 - mostly right") == 4
    assert parse_score("score:5") == 5
    assert parse_score("I think it is good") is None
