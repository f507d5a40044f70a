"""Tokens per code sample of this example's answers, with and without added tokens (the README's table).

Compares SmolLM2's own tokenizer with three ways of giving it an `<INDENT>` token, and with the tokens the
pipeline adds (`model.add_tokens` in pipeline.yaml):

- `<INDENT>` as a symbol: each leading four-space unit is written `<INDENT>` before tokenizing (and a
  server would have to map it back after decoding);
- `<INDENT>` as four spaces: the added token's content is the indentation itself, so it decodes to real code;
- the pipeline's tokens.

    python examples/code-assistant/measure_tokens.py
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import yaml

from tuneforge.models import load_tokenizer
from tuneforge.models.tokens import add_tokens

HERE = Path(__file__).parent
LEADING = re.compile(r"^((?:    )+)", re.M)


def answers() -> list[str]:
    """The assistant answers of train.jsonl that hold a code block: the code samples."""
    out = []
    for line in (HERE / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        turns = [m["content"] for m in row.get("messages", []) if m["role"] == "assistant"] or [row.get("output", "")]
        out.extend(t for t in turns if "```" in t)
    return sorted(set(out))


def symbolic(text: str) -> str:
    return LEADING.sub(lambda m: "<INDENT>" * (len(m[1]) // 4), text)


def count(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def main() -> None:
    samples = answers()
    pipeline_tokens = yaml.safe_load((HERE / "pipeline.yaml").read_text())["model"].get("add_tokens", [])
    base = load_tokenizer("smollm2-135m")
    rows = [("SmolLM2 tokenizer as shipped", count(base, samples))]
    for label, tokens, transform in [
        ("<INDENT> as a symbol (leading indentation rewritten)", ["<INDENT>"], symbolic),
        ("<INDENT> as four spaces (added token '    ')", ["    "], None),
        (f"the pipeline's add_tokens {pipeline_tokens}", pipeline_tokens, None),
    ]:
        tokenizer = load_tokenizer("smollm2-135m")
        try:
            add_tokens(tokenizer, tokens)
        except Exception as exc:  # a token the vocabulary already has: say so in the table
            rows.append((f"{label}: refused ({exc})", []))
            continue
        texts = [transform(s) for s in samples] if transform else samples
        rows.append((label, count(tokenizer, texts)))
    first = statistics.mean(rows[0][1])
    print(f"{len(samples)} code answers, {sum(s.count(chr(10) + '    ') for s in samples)} indented lines")
    print("| tokenizer | tokens per sample (mean) | total | vs shipped |")
    print("| --- | ---: | ---: | ---: |")
    for label, counts in rows:
        if counts:
            mean = statistics.mean(counts)
            print(f"| {label} | {mean:.1f} | {sum(counts)} | {100 * (mean / first - 1):+.1f} % |")
        else:
            print(f"| {label} | – | – | – |")


if __name__ == "__main__":
    main()
