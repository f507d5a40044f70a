"""Apply the chat template and mask the loss to the assistant's tokens.

The conversation is rendered once; each assistant turn's character span is found by rendering the
prefix before it (with the generation prompt) and the prefix including it. Tokens whose characters
fall inside an assistant span are trained on (that includes the end-of-turn marker, so the model
learns to stop); every other token's label is -100.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.config import DataConfig, default
from tuneforge.core.errors import DataError
from tuneforge.models.lm import IGNORE_INDEX  # noqa: F401  (re-exported)


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the (start, end) character spans of every assistant turn."""
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(through) or not through.startswith(before):
            raise DataError(
                "the chat template does not render conversations incrementally (a prefix of the "
                "conversation is not a prefix of its text), so assistant tokens cannot be masked"
            )
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], max_length: int,
                          mask: str | None = None) -> dict[str, Any]:
    """input_ids and labels (-100 outside assistant turns unless mask='all'; unset: `data.mask`'s default),
    cut to max_length.

    `turns_without_eos` counts assistant turns whose trained tokens do not include the EOS token:
    a model trained on them never learns to stop (a classic template/tokenizer mismatch).
    """
    mask = mask or default(DataConfig, "mask")
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = []
    span_tokens: list[list[int]] = [[] for _ in spans]
    for token_id, (start, end) in zip(input_ids, encoded["offset_mapping"], strict=True):
        inside = None
        if end > start:
            inside = next((k for k, (s, e) in enumerate(spans) if s <= start < e), None)
        if inside is not None:
            span_tokens[inside].append(token_id)
        labels.append(token_id if inside is not None or mask == "all" else IGNORE_INDEX)
    truncated = len(input_ids) > max_length
    return {
        "input_ids": input_ids[:max_length],
        "labels": labels[:max_length],
        "truncated": truncated,
        "turns_without_eos": sum(tokenizer.eos_token_id not in tokens for tokens in span_tokens),
    }


def tokenize_text(tokenizer, text: str, max_length: int) -> dict[str, Any]:
    """A plain-text row (continued pre-training): every token is trained, EOS appended."""
    input_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    truncated = len(input_ids) > max_length
    input_ids = input_ids[:max_length]
    return {"input_ids": input_ids, "labels": list(input_ids), "truncated": truncated, "turns_without_eos": 0}


def tokenize_row(tokenizer, row: dict[str, Any], max_length: int, mask: str | None = None) -> dict[str, Any]:
    """Tokenize a chat row (assistant-only loss by default) or a text row (loss on every token)."""
    if "messages" in row:
        return tokenize_conversation(tokenizer, row["messages"], max_length, mask)
    return tokenize_text(tokenizer, row["text"], max_length)
