import json

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
