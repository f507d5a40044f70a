"""Loaders: every container and row shape, column mappings, encodings, weights and on_error."""

import json
import random

import pytest

from tuneforge.core.errors import DataError
from tuneforge.data.formats import load_source, weighted

CHAT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_sharegpt_and_labels(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                                "label": "billing"}) + "\n")
    assert load_source(path) == [{"messages": CHAT, "label": "billing", "source": f"{path}:1"}]
    path.write_text(json.dumps({"conversations": [{"from": "alien", "value": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"s.jsonl:1: conversations\[0\].from is 'alien'"):
        load_source(path)


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer,topic\nq,a,billing\n\"multi, comma\",b,shipping\n")
    rows = load_source(path, columns={"instruction": "question", "output": "answer", "label": "topic"})
    assert rows[0] == {"messages": CHAT, "label": "billing", "source": f"{path}:2"}
    assert rows[1]["messages"][0]["content"] == "multi, comma"
    with pytest.raises(DataError, match=r"mapped column\(s\) not in the file: output→reply; "
                                        r"columns found: question, answer, topic"):
        load_source(path, columns={"instruction": "question", "output": "reply"})


def test_tsv_parquet_json_and_hf_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    (tmp_path / "a.tsv").write_text("instruction\toutput\nq\ta\n")
    pq.write_table(pa.table({"prompt": ["q"], "completion": ["a"]}), tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(json.dumps([{"messages": CHAT}]))
    Dataset.from_list([{"instruction": "q", "output": "a"}]).save_to_disk(tmp_path / "hf")
    mapping = {"instruction": "prompt", "output": "completion"}
    for path, columns in ((tmp_path / "a.tsv", {}), (tmp_path / "a.parquet", mapping),
                          (tmp_path / "a.json", {}), (tmp_path / "hf", {})):
        rows = load_source(path, columns=columns)
        assert [r["messages"] for r in rows] == [CHAT], path


def test_encodings(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"instruction": "q", "output": "a"}).encode() + b"\n")
    assert load_source(path)[0]["messages"] == CHAT
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"instruction": "caf\xe9", "output": "a"}\n')
    with pytest.raises(DataError, match=r"not valid UTF-8 at byte offset 20 \(line 1,"):
        load_source(bad)
    utf16 = tmp_path / "u16.jsonl"
    utf16.write_bytes('{"instruction": "q", "output": "a"}'.encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        load_source(utf16)


def test_empty_file_and_skip(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows found"):
        load_source(empty)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q"}\nnot json\n')
    with pytest.raises(DataError, match="mixed.jsonl:2: missing field 'output'"):
        load_source(mixed)
    errors: list[str] = []
    rows = load_source(mixed, on_error="skip", errors=errors)
    assert len(rows) == 1
    assert errors == [f"{mixed}:2: missing field 'output'", f"{mixed}:3: invalid JSON (Expecting value at column 1)"]


def test_weights():
    rows = [{"i": i} for i in range(10)]
    rng = random.Random(0)
    assert len(weighted(rows, 2.0, rng)) == 20
    assert len(weighted(rows, 0.5, rng)) == 5
    assert len(weighted(rows, 1.5, rng)) == 15
