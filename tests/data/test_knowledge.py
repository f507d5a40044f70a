"""Knowledge augmentation by rule: variants of each fact, marked, deduplicated, labels left alone."""

from __future__ import annotations

from tuneforge.core.config import KnowledgeConfig
from tuneforge.data.knowledge import cloze_question, facts_of, keyword_rewrite, knowledge_rows


def chat(question: str, answer: str, i: int) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "source": f"t.jsonl:{i}"}


DRONE = "The Kestrel X4 flies for up to 38 minutes on one battery."
CLINIC = "青禾诊所的预约小程序叫“青禾健康”，可提前七天预约。"
ROWS = [chat("What is the flight time of the Kestrel X4?", DRONE, 1),
        chat("How long can the X4 stay in the air?", DRONE, 2),
        chat("青禾诊所用什么预约？", CLINIC, 3)]


def test_cloze_replaces_the_fact_by_a_question_word():
    assert cloze_question(DRONE, ["What is the flight time of the Kestrel X4?"]) == \
        "The Kestrel X4 flies for up to what on one battery?"
    assert cloze_question("The remote is called Falcon Link.", ["Which remote comes with it?"]) == \
        "The remote is called what?"
    zh = cloze_question(CLINIC, ["青禾诊所用什么预约？"])
    assert zh is not None and "七天" not in zh and "青禾健康" not in zh and zh.endswith("？")
    assert cloze_question("Yes, you can always ask us.", ["Can I ask?"]) is None  # nothing fact-like to hide


def test_keyword_form_keeps_the_content_words():
    assert keyword_rewrite("What is the flight time of the Kestrel X4?") == "flight time Kestrel X4?"
    assert keyword_rewrite("Kestrel X4 weight?") is None  # nothing to cut


def test_rows_grow_per_lever_and_are_marked():
    out, stats = knowledge_rows(ROWS, KnowledgeConfig(), seed=0)
    assert out[:3] == ROWS
    new = out[3:]
    levers = {r["meta"]["augmented"] for r in new}
    assert {"template", "keywords", "cloze", "statement"} <= levers
    assert stats.details == {"generated": len(new), "facts": 2}
    statements = [r for r in new if "text" in r]
    assert sorted(r["text"] for r in statements) == sorted([DRONE, CLINIC])
    for row in new:  # answers are never rewritten; every question is new
        if "messages" in row:
            assert row["messages"][1]["content"] in (DRONE, CLINIC)
    questions = [r["messages"][0]["content"].casefold() for r in out if "messages" in r]
    assert len(questions) == len(set(questions))


def test_levers_switch_off_and_labels_are_not_facts():
    off = KnowledgeConfig(rewrites=0, cloze=0, statements=False)
    assert knowledge_rows(ROWS, off, seed=0)[0] == ROWS
    labels = [chat(f"review {i}: great stuff", "positive", i) for i in range(30)]
    assert facts_of(labels) == {}  # a one-word label shared by 30 rows is not a fact
    capped, _ = knowledge_rows(ROWS, KnowledgeConfig(max_new_rows=2), seed=0)
    assert len(capped) == len(ROWS) + 2
