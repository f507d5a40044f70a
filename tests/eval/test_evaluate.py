import pytest

from tuneforge.core.config import EvalConfig
from tuneforge.core.errors import DataError
from tuneforge.eval.evaluate import key_match, load_questions, normalize, run_eval
from tuneforge.eval.report import render_table


def test_normalize_and_key_match():
    assert normalize("  The ＡeroBrew\tK2  ") == "the aerobrew k2"
    assert normalize("Costs 1,299.00 EUR") == "costs 1299 eur"
    assert key_match("about 1,000 units", ["1000"])
    assert key_match("Returns are accepted within 45  Days.", ["45 days"])
    assert key_match("It costs €129.", ["129 euro", "€129"])
    assert not key_match("Within 30 days.", ["45 days"])


def test_questions_validation(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "key": "b"}\n{"question": "c", "key": []}\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: 'key' must be"):
        load_questions(path)
    path.write_text('{"question": "a"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: the row has no 'key', 'reference' or 'checks'"):
        load_questions(path)
    path.write_text('{"question": "a", "checks": {"regex": "("}}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: checks.regex is not a valid regular expression"):
        load_questions(path)
    path.write_text('{"question": "a", "checks": {"spelling": true}}\n')
    with pytest.raises(DataError, match=r"unknown check\(s\) \['spelling'\]"):
        load_questions(path)
    path.write_text('{"question": "", "key": "b"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: 'question'"):
        load_questions(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_questions(path)


def test_table_shows_delta_and_ci():
    metrics = {"domain_accuracy": 0.75, "base_domain_accuracy": 0.25, "domain_accuracy_delta": 0.5,
               "domain_accuracy_ci": [0.2, 0.8], "val_loss": 1.5, "base_val_loss": 2.0}
    table = render_table(metrics, ["domain"], has_base=True)
    assert "| domain_accuracy | 0.2500 | 0.7500 | +0.5000 | [+0.200, +0.800] |" in table
    assert "| val_loss | 2.0000 | 1.5000 | -0.5000 | - |" in table


def test_before_after_report(tiny_adapter, tiny_dataset, tiny_config, tmp_path):
    import json
    from html.parser import HTMLParser

    cfg = tiny_config.eval.model_copy(update={"max_new_tokens": 4, "general": False,
                                              "gates": {"domain_accuracy": ">= 0.9", "val_loss": "<= 50"}})
    report = run_eval(str(tiny_adapter.path), cfg, tmp_path / "eval", tiny_dataset)
    m = report.metrics
    assert m["val_loss"] < m["base_val_loss"]
    results = json.loads(report.file("report.json").read_text())
    assert [r["model"] for r in results] == ["tiny-random-llama", str(tiny_adapter.path)]
    answers = results[1]["sets"]["domain"]["answers"]
    assert len(answers) == 3
    # the report's number is the mean of the per-answer scores, recomputed here from the answers
    assert m["domain_accuracy"] == sum(key_match(a, q["keys"]) for a, q in
                                       zip(answers, load_questions(cfg.questions), strict=True)) / 3
    assert {p["kind"] for p in report.manifest["parents"]} == {"adapter", "dataset"}
    assert [(g["gate"], g["passed"]) for g in m["gates"]] == [("domain_accuracy", False), ("val_loss", True)]
    text = report.file("report.md").read_text()
    assert "| metric | base | tuned | delta | 95% CI |" in text and "| domain_accuracy | FAIL" not in text
    assert "| domain_accuracy | >= 0.9 |" in text

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags = []
            self.images = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "img":
                self.images.append(dict(attrs)["src"])

    page = Page()
    page.feed(report.file("report.html").read_text())
    assert "table" in page.tags
    assert page.images == ["metrics.png", "loss_curve.png"]
    for name in page.images:
        assert report.file(name).read_bytes()[:4] == b"\x89PNG"
    side = [json.loads(x) for x in report.file("answers.jsonl").read_text().splitlines()]
    assert [s["tuned"] for s in side] == answers


def test_nothing_to_evaluate(tmp_path):
    with pytest.raises(DataError, match="nothing to evaluate"):
        run_eval("tiny-random-llama", EvalConfig(general=False), tmp_path / "e")


def test_unknown_gate_lists_known_metrics(tmp_path):
    from tuneforge.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval.gates.domain_acc: unknown metric; known: val_loss, .*domain_accuracy"):
        run_eval("tiny-random-llama", EvalConfig(gates={"domain_acc": ">= 1"}), tmp_path / "e")
    with pytest.raises(ConfigError, match=r"'at least 0.8' is not a comparison"):
        run_eval("tiny-random-llama", EvalConfig(gates={"domain_accuracy": "at least 0.8"}), tmp_path / "e")


def test_general_set_shipped():
    from tuneforge.eval.evaluate import general_set_path

    rows = load_questions(general_set_path())
    assert len(rows) >= 150
    cats = {r["category"] for r in rows}
    assert cats == {"facts", "instructions", "chinese", "arithmetic"}
    assert sum(r["category"] == "chinese" for r in rows) >= 30


def test_judge_through_a_real_endpoint(tiny_config, tmp_path):
    """The judge is any OpenAI-compatible server; here `tuneforge serve` itself. Prompts and raw verdicts are kept."""
    import json

    from tuneforge.core.config import JudgeConfig, ServeConfig
    from tuneforge.pipeline import start_server, stop_server

    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="judge"))
    try:
        cfg = tiny_config.eval.model_copy(update={"max_new_tokens": 2, "general": False, "compare_base": False,
                                                  "judge": JudgeConfig(base_url=url, max_tokens=8)})
        report = run_eval("tiny-random-llama", cfg, tmp_path / "eval")
    finally:
        stop_server(process)
    verdicts = [json.loads(x) for x in report.file("judge.jsonl").read_text().splitlines()]
    assert len(verdicts) == 3
    assert all("QUESTION: " in v["prompt"] and "SCORE: <1-5>" in v["prompt"] for v in verdicts)
    assert all(isinstance(v["verdict"], str) for v in verdicts)
    # a random model does not follow the format: its verdicts stay unparsed, and no score is invented
    assert all(v["score"] is None for v in verdicts)
    assert "domain_judge_score" not in report.metrics


def test_lm_eval_harness_for_real(tiny_adapter, tiny_config, tmp_path):
    """lm_eval's simple_evaluate runs the shipped local task on the tiny model and its base; folded into the report."""
    cfg = tiny_config.eval.model_copy(update={"questions": None, "general": False,
                                              "lm_eval_tasks": ["tuneforge_general_mc"], "lm_eval_limit": 8})
    report = run_eval(str(tiny_adapter.path), cfg, tmp_path / "eval")
    m = report.metrics
    for key in ("lm_eval_tuneforge_general_mc_acc", "base_lm_eval_tuneforge_general_mc_acc"):
        assert 0.0 <= m[key] <= 1.0 and (m[key] * 8) == round(m[key] * 8)  # 8 examples: a multiple of 1/8
    assert m["lm_eval_tuneforge_general_mc_acc_delta"] == (m["lm_eval_tuneforge_general_mc_acc"]
                                                           - m["base_lm_eval_tuneforge_general_mc_acc"])
    assert "lm_eval_tuneforge_general_mc_acc" in report.file("report.md").read_text()


def test_lm_eval_unknown_task(tmp_path):
    from tuneforge.core.errors import ConfigError

    cfg = EvalConfig(general=False, lm_eval_tasks=["no_such_task"])
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['no_such_task'\]; shipped: tuneforge_general_mc"):
        run_eval("tiny-random-llama", cfg, tmp_path / "e")
