"""The grounded-topic rule on crafted positives and negatives, with the packaged all-MiniLM-L6-v2: a dosing
question close to a known one passes, one on a medicine the data does not cover gets the rule's action, a
question off the topic is never judged; the known questions come from the rule, a JSONL of training rows or
a text file (relative to the config file)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tuneforge.core.safety_config import GroundedRule, SafetyConfig
from tuneforge.serve.safety import check_input
from tuneforge.serve.safety.grounded import check_grounded, closest_known, read_known

KNOWN = ["How much Linden Cough Syrup should an adult take?", "What is the adult dose of Linden Cough Syrup?",
         "How many Linden Allergy Tablets can I take?", "How often do I take Linden Allergy Tablets?"]
PHRASES = ["dose", "dosage", "mg", "ml", "tablet", "tablets", "can i take", "should i take"]
REFUSAL = "Please ask your pharmacist or doctor."


def _safety(**rule) -> SafetyConfig:
    grounded = {"name": "dosing", "phrases": PHRASES, "known": KNOWN, "threshold": 0.7, "answer": REFUSAL, **rule}
    return SafetyConfig.model_validate({"injection": {"classifier": False}, "topics": {"grounded": [grounded]}})


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_in_data_dosing_passes_out_of_data_gets_the_answer_and_off_topic_is_not_judged():
    cfg = _safety()
    covered = check_input(_user("For an adult, what dose of the Linden cough syrup is right?"), cfg)
    assert covered.answer is None and not covered.verdict.findings
    outside = check_input(_user("How many mg of ibuprofen can I take for a headache?"), cfg)
    assert outside.answer == REFUSAL
    [finding] = outside.verdict.findings
    assert finding.guard == "grounded" and finding.action == "log" and finding.score < 0.7
    assert "dosing question outside the route's data" in finding.reason
    assert not outside.verdict.flagged and not outside.verdict.blocked  # answered by the rule, safely
    ordinary = check_input(_user("When is the clinic open on Saturday?"), cfg)  # no dosing phrase
    assert ordinary.answer is None and not ordinary.verdict.findings


def test_the_similarity_separates_paraphrases_from_other_medicines():
    rule = _safety().topics.grounded[0]
    assert closest_known("What's the adult dosage for Linden Cough Syrup?", rule) > 0.8
    for other in ("What dose of warfarin do I need?", "How many paracetamol tablets can I take?",
                  "How much amoxicillin should my child take?"):
        assert closest_known(other, rule) < 0.7, other


def test_only_the_last_user_turn_is_judged():
    cfg = _safety()
    messages = [{"role": "user", "content": "What dose of warfarin do I need?"},
                {"role": "assistant", "content": REFUSAL},
                {"role": "user", "content": "How many Linden Allergy Tablets can I take in a day?"}]
    assert check_input(messages, cfg).answer is None
    check = check_input(messages[:1] + messages[1:2] + [{"role": "user", "content": "And what dose of "
                                                          "metformin is normal?"}], cfg)
    assert check.answer == REFUSAL and check.verdict.findings[0].message == 2


@pytest.mark.parametrize("action, blocked, flagged", [("block", True, True), ("flag", False, True),
                                                      ("log", False, False)])
def test_the_other_actions(action, blocked, flagged):
    check = check_input(_user("How much codeine should I take?"), _safety(action=action))
    assert check.answer is None
    assert (check.verdict.blocked, check.verdict.flagged) == (blocked, flagged)
    assert [f.guard for f in check.verdict.findings] == ["grounded"]


def test_known_questions_from_training_rows_or_a_text_file(tmp_path):
    rows = tmp_path / "train.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "What is the dose of Linden Throat Lozenges?", "output": "One every 3 hours."},
        {"messages": [{"role": "user", "content": "How many Linden Throat Lozenges a day?"},
                      {"role": "assistant", "content": "At most 8."}]},
        {"question": "Max Linden Throat Lozenges per day?", "key": "8"}]) + "\n")
    assert read_known(str(rows)) == ["What is the dose of Linden Throat Lozenges?",
                                     "How many Linden Throat Lozenges a day?", "Max Linden Throat Lozenges per day?"]
    text = tmp_path / "known.txt"
    text.write_text("How much Linden Arnica Gel should I apply?\n\n")
    assert read_known(str(text)) == ["How much Linden Arnica Gel should I apply?"]
    rule = GroundedRule.model_validate({"name": "dosing", "phrases": ["dose", "ml"], "known_file": str(rows),
                                        "threshold": 0.7})
    assert check_grounded("Which dose of Linden Throat Lozenges is allowed?", [rule]).findings == []
    assert check_grounded("What dose of metformin?", [rule]).answer == rule.answer
    assert "pharmacist" in rule.answer  # the default answer sends the caller to a professional


def test_rule_validation_and_relative_known_file(tmp_path):
    with pytest.raises(ValidationError, match="give the known questions"):
        GroundedRule.model_validate({"name": "dosing", "phrases": ["dose"]})
    with pytest.raises(ValidationError, match="phrases"):
        GroundedRule.model_validate({"name": "dosing", "phrases": [], "known": KNOWN})
    from tuneforge.gateway.config import load_gateway

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "known.txt").write_text("What is the dose of Linden Cough Syrup?\n")
    path = tmp_path / "cfg" / "gateway.yaml"
    path.write_text("routes:\n  clinic:\n    backends: [http://127.0.0.1:9/v1]\n    safety:\n      topics:\n"
                    "        grounded: [{name: dosing, phrases: [dose], known_file: known.txt}]\n")
    rule = load_gateway(path).routes["clinic"].safety.topics.grounded[0]
    assert rule.known_file == str(tmp_path / "cfg" / "known.txt")  # beside the config, not the cwd
