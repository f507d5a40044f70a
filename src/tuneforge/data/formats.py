"""Read raw sources into plain rows, with errors that name the file and the line (or row).

Row shapes accepted (per line of JSONL/JSON, per row of CSV/TSV/Parquet/`datasets`):

- instruction: `{"instruction": str, "input": str?, "output": str, "system": str?}`;
- chat, OpenAI spelling: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`;
- chat, ShareGPT spelling: `{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}`;
- text (continued pre-training): `{"text": str}`, or a plain `.txt` file, one document per blank-line block.

Each becomes `{"messages": [...]}` or `{"text": str}`, plus `source` ("file:line") and `label`
(when the source maps a label column). A source's `columns` maps canonical field names to the
file's own column names, e.g. `{instruction: question, output: answer, label: category}`.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tuneforge.core.config import DataConfig, default
from tuneforge.core.errors import DataError

Format = Literal["auto", "instruction", "chat", "sharegpt", "text"]
FileFormat = Literal["auto", "instruction", "chat", "sharegpt", "text", "jsonl", "json", "csv", "tsv", "parquet", "hf"]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant", "model": "assistant"}
CANONICAL = ("instruction", "input", "output", "system", "messages", "conversations", "text", "label")


def _text(row: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def instruction_to_messages(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    """An instruction row as chat messages; `input` is appended to the instruction."""
    instruction = _text(row, "instruction", where)
    extra = _text(row, "input", where, required=False)
    output = _text(row, "output", where)
    system = _text(row, "system", where, required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def sharegpt_to_messages(turns: Any, where: str) -> list[dict[str, str]]:
    """ShareGPT `conversations` as OpenAI-style messages."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: 'conversations' must be a non-empty list")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: conversations[{i}] must be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(f"{where}: conversations[{i}].from is {turn['from']!r}; expected one of "
                            f"{', '.join(sorted(SHAREGPT_ROLES))}")
        messages.append({"role": role, "content": turn["value"]})
    return check_messages(messages, where)


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Validate an OpenAI-style message list; return it with only role/content kept."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    clean = []
    for i, message in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{at} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{at}.role is {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{at}.content must be a string, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise DataError(f"{at}: a system message may only come first")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in clean):
        raise DataError(f"{where}: no non-empty assistant message to learn from")
    return clean


def convert_row(row: Any, where: str, fmt: Format = "auto") -> dict[str, Any]:
    """One raw row as `{"messages": ...}` or `{"text": ...}` (plus `label` when present)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "chat" or (fmt == "auto" and "messages" in row):
        if "messages" not in row:
            raise DataError(f"{where}: missing field 'messages' (format is chat)")
        out: dict[str, Any] = {"messages": check_messages(row["messages"], where)}
    elif fmt == "sharegpt" or (fmt == "auto" and "conversations" in row):
        out = {"messages": sharegpt_to_messages(row.get("conversations"), where)}
    elif fmt == "instruction" or (fmt == "auto" and ("instruction" in row or "output" in row)):
        out = {"messages": instruction_to_messages(row, where)}
    elif fmt == "text" or (fmt == "auto" and "text" in row):
        out = {"text": _text(row, "text", where)}
    else:
        raise DataError(
            f"{where}: cannot tell the row's format from its keys {sorted(row)}; expected 'messages' "
            "(chat), 'conversations' (ShareGPT), 'instruction'/'output' (instruction) or 'text'"
        )
    label = row.get("label")
    if label is not None:
        out["label"] = str(label)
    return out


def read_text_file(path: Path) -> str:
    """Decode a file as UTF-8 (a BOM is accepted and dropped); bad bytes name their offset."""
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: file is UTF-16; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: not valid UTF-8 at byte offset {exc.start} (line {line}, {exc.reason}); "
                        "convert the file to UTF-8") from None


def read_jsonl(path: str | Path, errors: list[str] | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for each non-blank line; bad JSON names file and line.

    With an `errors` list, a bad line is recorded there and skipped instead of raising.
    """
    path = Path(path)
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})"
            if errors is None:
                raise DataError(message) from None
            errors.append(message)
            continue
        yield number, value


def _mapped(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    if not columns:
        return record
    out = {k: v for k, v in record.items() if k not in columns.values()}
    for canonical, column in columns.items():
        if column in record:
            out[canonical] = record[column]
    return out


def _check_columns(path: Path, found: list[str], columns: dict[str, str]) -> None:
    unknown = sorted(set(columns) - set(CANONICAL))
    if unknown:
        raise DataError(f"{path}: columns maps unknown field(s) {unknown}; known: {', '.join(CANONICAL)}")
    missing = [f"{k}→{v}" for k, v in columns.items() if v not in found]
    if missing:
        raise DataError(f"{path}: mapped column(s) not in the file: {', '.join(missing)}; "
                        f"columns found: {', '.join(found)}")


def _records(path: Path, file_format: str, columns: dict[str, str],
             errors: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, raw record) for every record of a file, with the column mapping applied."""
    if file_format in ("csv", "tsv"):
        text = read_text_file(path)
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if file_format == "tsv" else ",")
        _check_columns(path, list(reader.fieldnames or []), columns)
        for record in reader:
            yield f"{path}:{reader.line_num}", _mapped({k: v for k, v in record.items() if v != ""}, columns)
    elif file_format == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _check_columns(path, table.column_names, columns)
        for i, record in enumerate(table.to_pylist(), start=1):
            yield f"{path}:row {i}", _mapped(record, columns)
    elif file_format == "hf":
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys"):  # a DatasetDict: take its train split, else the first
            dataset = dataset["train"] if "train" in dataset else dataset[next(iter(dataset.keys()))]
        _check_columns(path, list(dataset.column_names), columns)
        for i, record in enumerate(dataset, start=1):
            yield f"{path}:row {i}", _mapped(dict(record), columns)
    elif file_format == "text":
        blocks = [b.strip() for b in read_text_file(path).split("\n\n")]
        for i, block in enumerate(b for b in blocks if b):
            yield f"{path}:block {i + 1}", {"text": block}
    elif file_format == "json":
        try:
            data = json.loads(read_text_file(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json source must hold a list of rows")
        for i, record in enumerate(data, start=1):
            yield f"{path}:row {i}", _mapped(record, columns) if isinstance(record, dict) else record
    else:
        for number, record in read_jsonl(path, errors):
            yield f"{path}:{number}", _mapped(record, columns) if isinstance(record, dict) else record


def file_format_of(path: Path, declared: str) -> str:
    """The container format: from the declaration when it names one, else from the suffix."""
    if declared in ("jsonl", "json", "csv", "tsv", "parquet", "hf"):
        return declared
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".txt": "text", ".md": "text",
            ".json": "json"}.get(suffix, "jsonl")


def load_source(path: Path, declared: str = "auto", columns: dict[str, str] | None = None,
                on_error: str | None = None, errors: list[str] | None = None) -> list[dict[str, Any]]:
    """All valid rows of one source; with on_error='skip' bad rows are listed in `errors` instead
    (unset: `data.on_error`'s default)."""
    on_error = on_error or default(DataConfig, "on_error")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    container = file_format_of(path, declared)
    row_format = declared if declared in ("instruction", "chat", "sharegpt", "text") else "auto"
    rows = []
    skipping = errors if on_error == "skip" else None
    for where, record in _records(path, container, columns or {}, skipping):
        try:
            row = convert_row(record, where, row_format)  # type: ignore[arg-type]
        except DataError as exc:
            if on_error == "skip" and errors is not None:
                errors.append(str(exc))
                continue
            raise
        rows.append({**row, "source": where})
    if not rows:
        raise DataError(f"{path}: no rows found (the file is empty or every row was invalid)")
    return rows


def weighted(rows: list[dict[str, Any]], weight: float, rng: random.Random) -> list[dict[str, Any]]:
    """Rows repeated floor(weight) times plus a seeded sample for the fractional part."""
    whole, fraction = int(weight), weight - int(weight)
    out = [row for _ in range(whole) for row in rows]
    if fraction > 0:
        out += rng.sample(rows, round(len(rows) * fraction))
    return out


def load_rows(files: list[Path], fmt: Format = "auto") -> list[dict[str, Any]]:
    """All rows of all files (chat/instruction/text JSONL and the other containers); fail on the first bad row."""
    if not files:
        raise DataError("data.files: no input files given")
    rows = []
    for path in files:
        rows.extend(load_source(Path(path), fmt))
    return rows
