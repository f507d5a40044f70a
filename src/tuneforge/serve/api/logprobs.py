"""The `logprobs` blocks of chat and text completions, from the engine's sampled tokens."""

from __future__ import annotations

from typing import Any

from tuneforge.serve.engine.sampler import Sampled


def chat_logprobs(tokenizer, picks: list[Sampled]) -> dict[str, Any]:
    """Chat's `{"content": [{token, logprob, bytes, top_logprobs}]}`."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**entry(p.token, p.logprob or 0.0),
                         "top_logprobs": [entry(t, v) for t, v in p.top.items()]} for p in picks]}


def completion_logprobs(tokenizer, tokens: list[int], logprobs: list[float | None],
                        tops: list[dict[int, float] | None], start_offset: int = 0) -> dict[str, Any]:
    """Text completions' `{tokens, token_logprobs, top_logprobs, text_offset}`."""
    texts = [tokenizer.decode([t]) for t in tokens]
    offsets, position = [], start_offset
    for text in texts:
        offsets.append(position)
        position += len(text)
    return {"tokens": texts, "token_logprobs": logprobs,
            "top_logprobs": [None if top is None else {tokenizer.decode([t]): v for t, v in top.items()}
                             for top in tops],
            "text_offset": offsets}


def of_picks(tokenizer, picks: list[Sampled], start_offset: int = 0) -> dict[str, Any]:
    """Text completions' block for sampled tokens."""
    return completion_logprobs(tokenizer, [p.token for p in picks], [p.logprob for p in picks],
                               [p.top for p in picks], start_offset)
