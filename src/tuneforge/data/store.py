"""Dataset splits on disk as Parquet: one row per example, read back as the same plain dicts.

`messages` is a list of {role, content} structs, `input_ids`/`labels` are int32 lists, and `meta`
(free-form: augmentation marks and the like) is stored as a JSON string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = ("source", "label", "messages", "text", "input_ids", "labels", "meta")


def write_split(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to a Parquet file (zstd)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([
        ("source", pa.string()), ("label", pa.string()), ("messages", pa.list_(message)), ("text", pa.string()),
        ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("meta", pa.string()),
    ])
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            value = row.get(name)
            columns[name].append(json.dumps(value, ensure_ascii=False) if name == "meta" and value else value)
    pq.write_table(pa.table(columns, schema=schema), path, compression="zstd")


def read_split_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a split file (Parquet, or JSONL from older artifacts), without empty columns."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    import pyarrow.parquet as pq

    rows = []
    for record in pq.read_table(path).to_pylist():
        row = {k: v for k, v in record.items() if v is not None}
        if "meta" in row:
            row["meta"] = json.loads(row["meta"])
        rows.append(row)
    return rows
