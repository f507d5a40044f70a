import pytest

from tuneforge.core.config import EvalConfig
from tuneforge.core.errors import DataError
from tuneforge.eval.evaluate import key_match, load_questions, normalize, render_table, run_eval


def test_normalize_and_key_match():
    assert normalize("  The ＡeroBrew\tK2  ") == "the aerobrew k2"
    assert key_match("Returns are accepted within 45  Days.", ["45 days"])
    assert key_match("It costs €129.", ["129 euro", "€129"])
    assert not key_match("Within 30 days.", ["45 days"])


def test_questions_validation(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "key": "b"}\n{"question": "c", "key": []}\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: 'key' must be"):
        load_questions(path)
    path.write_text('{"question": "", "key": "b"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: 'question'"):
        load_questions(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_questions(path)


def test_table_shows_delta():
    table = render_table([{"model": "b", "metrics": {"accuracy": 0.25, "val_loss": 2.0}},
                          {"model": "t", "metrics": {"accuracy": 0.75, "val_loss": 1.5}}])
    assert "| accuracy | 0.2500 | 0.7500 | +0.5000 |" in table
    assert "| val_loss | 2.0000 | 1.5000 | -0.5000 |" in table


def test_before_after_report(tiny_adapter, tiny_dataset, tiny_config, tmp_path):
    cfg = tiny_config.eval.model_copy(update={"max_new_tokens": 4})
    report = run_eval(str(tiny_adapter.path), cfg, tmp_path / "eval", tiny_dataset)
    m = report.metrics
    assert m["val_loss"] < m["base_val_loss"]
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["base_accuracy"] <= 1.0
    parents = {p["kind"] for p in report.manifest["parents"]}
    assert parents == {"adapter", "dataset"}
    assert "| metric | base | tuned | delta |" in report.file("report.md").read_text()
    import json

    results = json.loads(report.file("report.json").read_text())
    assert [r["model"] for r in results] == ["tiny-random-llama", str(tiny_adapter.path)]
    assert len(results[1]["answers"]) == 3


def test_nothing_to_evaluate(tmp_path):
    with pytest.raises(DataError, match="nothing to evaluate"):
        run_eval("tiny-random-llama", EvalConfig(), tmp_path / "e")
