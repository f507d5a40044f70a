"""How many tokens a domain answer may take: derived from the training answers, in the model's tokens.

A fixed budget cuts answers that a byte-level tokenizer spends many tokens on: SmolLM2 takes ~1.8
tokens per Chinese character, so a 27-character answer needs ~50 tokens and a word-perfect answer
whose key came after the cut scored 0 (#23). The domain set's budget covers the longest training
answer with room for a short preamble; the general (forgetting) set keeps a fixed budget, so base and
tuned answers stay comparable across domains.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

ANSWER_BUDGET_FACTOR = 1.25  # room for a short preamble before the fact


def longest_answer_tokens(rows: Iterable[dict[str, Any]], tokenizer) -> int:
    """Tokens of the longest last assistant turn among chat `rows` (0 when none has one)."""
    longest = 0
    for row in rows:
        replies = [m.get("content") or "" for m in row.get("messages") or [] if m.get("role") == "assistant"]
        if replies:
            longest = max(longest, len(tokenizer(replies[-1], add_special_tokens=False)["input_ids"]))
    return longest


def budget_for(longest_tokens: int, floor: int) -> int:
    """1.25 × `longest_tokens`, at least `floor` (the general set's budget)."""
    return max(floor, math.ceil(ANSWER_BUDGET_FACTOR * longest_tokens))


def answer_budget(rows: Iterable[dict[str, Any]], tokenizer, floor: int) -> int:
    """Tokens the domain's answers need: 1.25 × the longest training answer of `rows` in `tokenizer`'s
    tokens, at least `floor` (the general set's budget)."""
    return budget_for(longest_answer_tokens(rows, tokenizer), floor)
