"""Tokens added to a tokenizer (`model.add_tokens`) and the embedding rows they need.

A new token gets one new row in the input embeddings (and in the output head, which SmolLM2 ties to
them). The rows start at the mean of the existing rows — Hewitt's advice ("Initializing new word
embeddings for pretrained language models", 2021), also transformers' `mean_resizing`: a random row
can have a norm far off the others and dominate the logits; the mean keeps the model's outputs where
they were (the new token's logit is the average logit) until training moves it. transformers'
`mean_resizing` samples around the mean from the rows' covariance; here the rows are exactly the mean,
so that a loader can rebuild the same starting rows from the base alone — PEFT's trainable tokens
store the trained rows, and merging or serving them needs a base of the same shape.

Added tokens are *normal* added tokens (not special): the tokenizer matches them before its
pre-tokenizer and decodes them to their own content, so a token whose content is four spaces
(`<INDENT>` in the founding documents) decodes to real indentation and no serving code needs to know.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.errors import ConfigError

FIELD = "model.add_tokens"


def check_new_tokens(tokenizer: Any, tokens: list[str], field: str = FIELD) -> None:
    """Refuse tokens that are empty, repeated, already in the vocabulary or already one token."""
    seen: set[str] = set()
    vocab = tokenizer.get_vocab()
    for index, token in enumerate(tokens):
        where = f"{field}[{index}]"
        if not isinstance(token, str) or token == "":
            raise ConfigError(f"{where}: an added token must be a non-empty string, got {token!r}")
        if token in seen:
            raise ConfigError(f"{where}: {token!r} is listed twice")
        seen.add(token)
        if token in vocab:
            raise ConfigError(f"{where}: {token!r} is already in the tokenizer's vocabulary (id {vocab[token]})")
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and tokenizer.decode(ids) == token:
            raise ConfigError(f"{where}: {token!r} is already one token of the vocabulary (id {ids[0]}); adding it "
                              "would change nothing but the id")


def add_tokens(tokenizer: Any, tokens: list[str], field: str = FIELD) -> dict[str, int]:
    """Add `tokens` to `tokenizer` (checked first, in this order); returns token → its new id."""
    from tokenizers import AddedToken

    check_new_tokens(tokenizer, tokens, field)
    before = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False, single_word=False, lstrip=False,
                                     rstrip=False) for t in tokens])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    if sorted(ids.values()) != list(range(before, before + len(tokens))):
        raise ConfigError(f"{field}: the tokenizer gave the new tokens ids {sorted(ids.values())}, not the next "
                          f"{len(tokens)} after its {before} (a tokenizer whose ids have gaps?)")
    return ids


def resize_with_mean(model: Any, size: int, first_new: int) -> int:
    """Rows `first_new`..`size - 1` of the model's embeddings (and of an untied output head) set to the mean of
    the rows before `first_new` (the vocabulary's), the matrices grown to `size` rows when they have fewer:
    models whose embeddings are padded past their vocabulary (Qwen's 151,936 rows for 151,665 tokens) already
    hold the rows. Returns the row count before. Tied weights stay tied (one tensor)."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if first_new > old:
        raise ConfigError(f"{FIELD}: the tokenizer had {first_new} tokens before the new ones but the model only "
                          f"{old} embedding rows (a tokenizer of another model?)")
    if size > old:
        model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for matrix in _token_matrices(model):
            matrix[first_new:size] = matrix[:first_new].mean(dim=0, keepdim=True).to(matrix.dtype)
    return old


def _token_matrices(model: Any) -> list[Any]:
    """The input embedding and, when it is a separate tensor, the output head: a row per token each."""
    matrices = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(head.weight)
    return matrices


def extend_model(model: Any, tokenizer: Any, tokens: list[str], field: str = FIELD) -> dict[str, int]:
    """Add `tokens` to `tokenizer` and the rows they need to `model`; returns token → id."""
    before = len(tokenizer)
    ids = add_tokens(tokenizer, tokens, field)
    resize_with_mean(model, len(tokenizer), before)
    return ids
