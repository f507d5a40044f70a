"""Read instruction and chat JSONL files into plain chat rows, with errors that name file and line.

Instruction rows: `{"instruction": str, "input": str?, "output": str, "system": str?}`.
Chat rows (OpenAI spelling): `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
Both become `{"messages": [...], "source": "file:line"}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tuneforge.core.errors import DataError

Format = Literal["auto", "instruction", "chat"]
ROLES = ("system", "user", "assistant")


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


def row_to_messages(row: Any, where: str, fmt: Format = "auto") -> list[dict[str, str]]:
    """Validate one parsed JSON value and convert it to chat messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "chat" or (fmt == "auto" and "messages" in row):
        if "messages" not in row:
            raise DataError(f"{where}: missing field 'messages' (format is chat)")
        return check_messages(row["messages"], where)
    if fmt == "instruction" or (fmt == "auto" and ("instruction" in row or "output" in row)):
        return instruction_to_messages(row, where)
    raise DataError(
        f"{where}: cannot tell the row's format from its keys {sorted(row)}; expected "
        "'messages' (chat) or 'instruction'/'output' (instruction)"
    )


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for each non-blank line; bad JSON names file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def load_rows(files: list[Path], fmt: Format = "auto") -> list[dict[str, Any]]:
    """All rows of all files as `{"messages", "source"}`; the first malformed row raises DataError."""
    if not files:
        raise DataError("data.files: no input files given")
    rows = []
    for path in files:
        for number, value in read_jsonl(path):
            where = f"{path}:{number}"
            rows.append({"messages": row_to_messages(value, where, fmt), "source": where})
    if not rows:
        raise DataError(f"data.files: no rows found in {', '.join(map(str, files))}")
    return rows
