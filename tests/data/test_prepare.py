import json
from pathlib import Path

import pytest

from tuneforge.core.config import DataConfig, ModelConfig
from tuneforge.core.errors import DataError
from tuneforge.data.formats import load_rows
from tuneforge.data.prepare import prepare, read_split, split_rows
from tuneforge.data.template import IGNORE_INDEX, tokenize_conversation

MODEL = ModelConfig(name="tiny-random-llama")


def test_dataset_artifact(tiny_dataset, tiny_config):
    m = tiny_dataset.metrics
    # the assets repeat 5 facts: 8 of the 20 rows are exact duplicates of earlier ones
    dedup = next(s for s in m["steps"] if s["step"] == "dedup")
    assert (dedup["rows_in"], dedup["kept"], dedup["reasons"]) == (20, 12, {"exact_duplicate": 8})
    assert (m["rows_in"], m["rows_train"], m["rows_validation"]) == (20, 10, 2)
    assert "| dedup | 20 | 12 | 0 | 8 | exact_duplicate 8 |" in tiny_dataset.file("report.md").read_text()
    assert tiny_dataset.manifest["parents"] == []
    assert tiny_dataset.manifest["config"]["data"]["seed"] == 0
    assert tiny_dataset.manifest["tokenizer"] == "tiny-random-llama"
    rows = read_split(tiny_dataset, "train")
    assert all(len(r["input_ids"]) == len(r["labels"]) for r in rows)


def test_loss_only_on_assistant_tokens(tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour of the lamp?"},
                {"role": "assistant", "content": "Teal."}, {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "Yes, 你好."}]
    out = tokenize_conversation(tiny.tokenizer, messages, 512)
    trained = [t for t, label in zip(out["input_ids"], out["labels"], strict=True) if label != IGNORE_INDEX]
    assert tiny.tokenizer.decode(trained) == "Teal.<|im_end|>\nYes, 你好.<|im_end|>\n"
    assert out["truncated"] is False
    short = tokenize_conversation(tiny.tokenizer, messages, 10)
    assert len(short["input_ids"]) == 10 and short["truncated"] is True


def test_instruction_input_is_appended(assets):
    rows = load_rows([assets / "instruct.jsonl"])
    first_user = rows[0]["messages"][0]
    assert first_user == {"role": "user", "content": "What color is the Quokka lamp?\n\nPlease answer briefly."}
    assert rows[0]["source"].endswith("instruct.jsonl:1")


@pytest.mark.parametrize("line, message", [
    ('{"instruction": "q"', "invalid JSON"),
    ('{"instruction": "q"}', "missing field 'output'"),
    ('{"instruction": "q", "output": 3}', "field 'output' must be a string"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"messages\[0\].role is 'robot'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no non-empty assistant message"),
    ('{"foo": "x"}', "cannot tell the row's format"),
    ('[1, 2]', "expected a JSON object"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl:3: .*{message}"):
        load_rows([path])


def test_prepare_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "q"}\n')
    with pytest.raises(DataError):
        prepare(DataConfig(files=[path]), MODEL, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_is_seeded():
    rows = [{"i": i} for i in range(50)]
    a = split_rows(rows, 0.2, seed=1)
    assert a == split_rows(rows, 0.2, seed=1)
    assert a != split_rows(rows, 0.2, seed=2)
    assert len(a["validation"]) == 10 and a["test"] == []
    assert sorted(r["i"] for r in a["train"] + a["validation"]) == list(range(50))
    with pytest.raises(DataError, match="leave no training rows"):
        split_rows([{"i": 1}], 0.9, seed=0)


def test_split_three_ways_stratified():
    rows = [{"i": i, "label": "a" if i < 40 else "b"} for i in range(60)]
    parts = split_rows(rows, 0.25, seed=3, test_fraction=0.25)
    count = {name: {lab: sum(r["label"] == lab for r in part) for lab in "ab"} for name, part in parts.items()}
    assert count == {"train": {"a": 20, "b": 10}, "validation": {"a": 10, "b": 5}, "test": {"a": 10, "b": 5}}
    assert sorted(r["i"] for p in parts.values() for r in p) == list(range(60))


def test_chat_file_roundtrip(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                              {"role": "assistant", "content": "b"}]}) + "\n")
    art = prepare(DataConfig(files=[path], validation_fraction=0.0), MODEL, tmp_path / "ds")
    assert art.metrics["rows_train"] == 1 and art.metrics["rows_validation"] == 0


def _no_eos_model(tiny, tmp_path):
    """A model folder whose chat template never emits the EOS token after an answer."""
    import copy

    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    folder = tmp_path / "no-eos-model"
    tiny.model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def test_missing_end_of_turn_is_caught(tiny, tmp_path):
    folder, tok = _no_eos_model(tiny, tmp_path)
    out = tokenize_conversation(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], 64)
    assert out["turns_without_eos"] == 1
    good = tokenize_conversation(tiny.tokenizer, [{"role": "user", "content": "q"},
                                                  {"role": "assistant", "content": "a"}], 64)
    assert good["turns_without_eos"] == 0
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: an assistant turn does not end with the EOS token"):
        prepare(DataConfig(files=[data], validation_fraction=0), ModelConfig(name=str(folder)), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    cfg = DataConfig(files=[data], validation_fraction=0, check_eos=False)
    assert prepare(cfg, ModelConfig(name=str(folder)), tmp_path / "ds").metrics["rows_train"] == 1


def test_mask_all_trains_the_prompt_too(tiny):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    out = tokenize_conversation(tiny.tokenizer, messages, 64, mask="all")
    assert out["labels"] == out["input_ids"]


def test_text_rows_train_every_token(tiny, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First document about kettles.\n\nSecond document, 第二段。\n")
    art = prepare(DataConfig(files=[path], validation_fraction=0), MODEL, tmp_path / "ds")
    rows = read_split(art, "train")
    assert len(rows) == 2
    for row in rows:
        assert row["labels"] == row["input_ids"] and row["input_ids"][-1] == tiny.tokenizer.eos_token_id


def test_preview_highlights_trained_tokens(tiny, tiny_dataset):
    from tuneforge.data.preview import TRAINED, render_sample, summary

    row = read_split(tiny_dataset, "train")[0]
    text = render_sample(tiny.tokenizer, row)
    trained = "".join(text.plain[s.start:s.end] for s in text.spans if s.style == TRAINED)
    assert trained.replace("↵", "") == row["messages"][-1]["content"] + "<|im_end|>\n"
    assert "trained tokens include EOS '<|im_end|>': yes" in summary(tiny.tokenizer, row)


def test_contamination_report_and_drop(tmp_path):
    from tuneforge.core.config import ContaminationConfig

    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"instruction": q, "output": "ok"}) for q in [
        "How long is the warranty on the AeroBrew K2 kettle?", "Where is the company based?",
        "退货政策是什么样的呢？"]) + "\n")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("\n".join(json.dumps({"question": q, "key": "x"}) for q in [
        "How long is the warranty on the AeroBrew K2 kettle?",      # verbatim: contaminated
        "What guarantee period does the K2 come with?",               # paraphrase: clean
        "退货政策是什么样的？",                                          # near-verbatim Chinese
    ]) + "\n")
    cfg = DataConfig(files=[train], validation_fraction=0, contamination=ContaminationConfig(
        eval_files=[heldout], ngram=4, threshold=0.5, drop=True))
    art = prepare(cfg, MODEL, tmp_path / "ds")
    item = art.metrics["contamination"][0]
    assert (item["rows"], item["flagged"]) == (3, 2)
    flagged = json.loads(art.file("contamination.json").read_text())[0]["flagged"]
    assert [f["line"] for f in flagged] == [1, 3]
    clean = [json.loads(line) for line in art.file("decontaminated/heldout.jsonl").read_text().splitlines()]
    assert [r["question"] for r in clean] == ["What guarantee period does the K2 come with?"]
    assert "2 of 3 evaluation rows overlap" in art.file("report.md").read_text()

    from tuneforge.pipeline import decontaminated

    assert decontaminated(art, heldout) == art.path / "decontaminated" / "heldout.jsonl"


def test_html_report_renders_tables_and_charts(tiny_dataset):
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.images, self.cells = 0, [], []

        def handle_starttag(self, tag, attrs):
            self.tables += tag == "table"
            if tag == "img":
                self.images.append(dict(attrs)["src"])

        def handle_data(self, data):
            self.cells.append(data)

    page = Collect()
    page.feed(tiny_dataset.file("report.html").read_text())
    assert page.tables == 2  # funnel and splits
    assert page.images == ["token_lengths.png", "funnel.png"]
    for name in page.images:
        assert tiny_dataset.file(name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "exact_duplicate 8" in page.cells
    assert set(tiny_dataset.metrics["token_lengths"]) == {"min", "median", "p95", "max"}


def test_packing_plan():
    from tuneforge.data.packing import plan_packing

    plan = plan_packing([6, 5, 4, 3, 2, 12], capacity=10)
    assert plan["bins"] == [[5], [0, 2], [1, 3, 4]]  # 12 is cut to 10 and fills a bin alone
    assert plan["sequences"] == 3 and plan["efficiency"] == 1.0
    assert plan["padding_efficiency_unpacked"] == round(30 / 60, 4)
    for bin_ in plan_packing([7, 7, 7], 10)["bins"]:
        assert len(bin_) == 1


def test_packing_plan_in_artifact(tiny_dataset):
    plan = json.loads(tiny_dataset.file("packing.json").read_text())
    assert sorted(i for b in plan["bins"] for i in b) == list(range(tiny_dataset.metrics["rows_train"]))
    assert "## Packing plan (train)" in tiny_dataset.file("report.md").read_text()


def test_messy_sources_end_to_end(tmp_path):
    """Mixed formats, duplicates, near-duplicates, PII, HTML and malformed lines: the report's counts."""
    from tuneforge.core.config import SourceConfig

    messy = Path(__file__).parents[1] / "assets" / "messy"
    cfg = DataConfig(
        sources=[SourceConfig(path=messy / "support.jsonl"), SourceConfig(path=messy / "chat.jsonl"),
                 SourceConfig(path=messy / "faq.csv", columns={"instruction": "question", "output": "answer",
                                                               "label": "topic"})],
        on_error="skip", validation_fraction=0.0, normalize={"strip_html": True}, dedup={"threshold": 0.7},
        knowledge={"enabled": False},  # the cleaning steps' counts, not the augmentation's
    )
    art = prepare(cfg, MODEL, tmp_path / "ds")
    steps = {s["step"]: s for s in art.metrics["steps"]}
    # 12 support lines (no output, empty output, broken JSON are malformed) + 3 chat + 3 CSV rows
    assert (steps["load"]["rows_in"], steps["load"]["kept"], steps["load"]["reasons"]) == (18, 15, {"malformed": 3})
    assert steps["normalize"]["changed"] == 3  # two HTML rows, one whitespace row
    assert steps["dedup"]["reasons"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert steps["filter"]["reasons"] == {"empty_answer": 1}  # the answer was only HTML
    assert art.metrics["pii_found"] == {"CREDIT_CARD": 1, "EMAIL": 2, "IP_ADDRESS": 2, "PHONE": 1, "SECRET": 1}
    assert steps["pii"]["changed"] == 4
    assert art.metrics["rows_train"] == 11
    texts = json.dumps(read_split(art, "train"), ensure_ascii=False)
    for secret in ("jane.roe@example.org", "4111 1111", "13812345678", "10.0.0.12", "sk-proj-"):
        assert secret not in texts
    for kept in ("QA-00001234", "€258.00", "2024-05-17", "€129", "<EMAIL>", "Yes, PayPal is accepted."):
        assert kept in texts
    report = art.file("report.md").read_text()
    assert "| load | 18 | 15 | 0 | 3 | malformed 3 |" in report
    assert "- EMAIL: 2" in report


def test_everything_filtered_names_the_step(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "q", "output": "spam spam spam spam spam spam spam spam spam spam"}\n')
    with pytest.raises(DataError, match=r"step 'filter' removed the last rows \(repetitive: 1\)"):
        prepare(DataConfig(files=[path], validation_fraction=0), MODEL, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_the_report_names_answers_left_holding_a_placeholder(tmp_path):
    """A public hotline scrubbed to <PHONE> in an answer teaches the model to answer <PHONE>: the dataset
    report and `tuneforge run`'s prepare summary count such answers and name data.pii.allow."""
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.core.config import load_pipeline
    from tuneforge.core.progress import console
    from tuneforge.pipeline import run_pipeline

    hotline = "Call the fraud line at +44 20 7946 0958, day or night."
    rows = [("Fraud line number?", hotline), ("Who do I call about fraud?", hotline),
            ("My mail is jane.roe@example.org, what is the fee?", "The fee is 2 EUR."),  # PII in the question only
            ("What colour is the card?", "The card is dark green.")]
    path = tmp_path / "bank.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in rows))
    values = {"model.name": MODEL.name, "data.files": [str(path)], "data.validation_fraction": 0.0,
              "data.knowledge.enabled": False, "stages": ["prepare"], "output_dir": str(tmp_path / "runs")}
    with console.capture() as captured:
        run = run_pipeline(load_pipeline(None, values=values))
    dataset = load_artifact(run.artifacts["dataset"])
    assert dataset.metrics["answers_with_placeholders"] == 1  # the hotline's answer, counted once
    assert dataset.metrics["answer_placeholder_types"] == {"PHONE": 1}
    note = ("1 distinct training answer(s) hold <PHONE> after PII cleaning: the model learns to answer the "
            "placeholder, not the value. If the value is public (a hotline, a support address), list it in "
            "data.pii.allow")
    assert note in dataset.file("report.md").read_text()
    assert note in " ".join(captured.get().split())  # the console wraps long lines

    allowed = prepare(DataConfig(files=[path], validation_fraction=0.0, knowledge={"enabled": False},
                                 pii={"allow": ["+44 20 7946 0958"]}), MODEL, tmp_path / "allowed")
    assert allowed.metrics["answers_with_placeholders"] == 0 and allowed.metrics["pii_found"] == {"EMAIL": 1}
    assert "data.pii.allow" not in allowed.file("report.md").read_text()
