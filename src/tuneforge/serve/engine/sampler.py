"""Next-token choice for a batch of sequences, each with its own sampling parameters.

Order of operations (as vLLM and HF): `logit_bias` added to the raw logits and the structured-output
mask (one bitmask row per constrained sequence, applied to the whole batch at once; see `grammar.py`),
then penalties, then temperature, top-k, top-p, then a draw. Greedy rows take the argmax of the
penalised logits. A request with a `seed` draws from its own generator, so its output does not depend
on what else shares the batch; requests without one share the engine's generator. Logprobs are those
of the model's raw distribution (before bias and mask).

Every row is sampled on its own and may fail on its own: a row whose logits are not finite (a broken
adapter or quantized model) or whose draw raises becomes a `RowFailure` for that request alone; the
other rows of the batch are sampled as usual. Extreme but valid parameters cannot make a row fail:
the nucleus always keeps the most likely token (a `top_p` of 5e-324 is 0 in float32), and scores
pushed to ±inf by a penalty are clamped to the float range before the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.models.generate import SamplingParams


@dataclass
class SampleState:
    """Per-sequence sampling state: its parameters and, when seeded, its own random generator."""

    params: SamplingParams
    generator: Any = None
    bias: Any = None  # (token ids, biases) tensors of params.logit_bias, when it has any
    matcher: Any = None  # the grammar matcher of a structured output (grammar.GrammarCache.matcher)

    @classmethod
    def create(cls, params: SamplingParams, device: Any = "cpu", matcher: Any = None) -> SampleState:
        import torch

        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=device)
            generator.manual_seed(params.seed)
        bias = None
        if params.logit_bias:
            bias = (torch.tensor(list(params.logit_bias), dtype=torch.long, device=device),
                    torch.tensor(list(params.logit_bias.values()), dtype=torch.float32, device=device))
        return cls(params, generator, bias, matcher)


LOGPROB_FLOOR = -9999.0  # what a logprob of -inf is reported as (JSON has no infinity; vLLM's value)


@dataclass
class RowFailure:
    """One row that could not be sampled; its request ends with this error (500: a model fault)."""

    message: str
    status: int = 500


@dataclass
class Sampled:
    token: int
    logprob: float | None = None
    top: dict[int, float] = field(default_factory=dict)  # token id → logprob


def apply_penalties(logits, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]) -> None:
    """In place, one row: repetition (prompt + output tokens), then presence and frequency (output)."""
    import torch

    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
        chosen = logits[seen]
        logits[seen] = torch.where(chosen > 0, chosen / params.repetition_penalty, chosen * params.repetition_penalty)
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        counts = torch.bincount(torch.tensor(output_ids, device=logits.device), minlength=logits.shape[-1])
        counts = counts[: logits.shape[-1]].to(logits.dtype)
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(logits.dtype)


def filter_top_k_top_p(logits, top_k: int, top_p: float):
    """One row of temperature-scaled logits with everything outside top-k / nucleus set to -inf."""
    import torch

    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, index = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[0] = False  # and always the most likely token (a top_p below float32's range is 0 here)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, index, drop), float("-inf"))
    return logits


def apply_bias_and_masks(logits, states: list[SampleState], grammars: Any = None):
    """`logits` with each row's `logit_bias` added and, for rows with a grammar matcher, the tokens their
    grammar forbids at -inf (one bitmask for the batch). Returns `logits` itself when no row has either."""
    import torch

    biased = [(row, s.bias) for row, s in enumerate(states) if s.bias is not None]
    constrained = any(s.matcher is not None for s in states)
    if not biased and not constrained:
        return logits
    if biased:
        logits = logits.clone()
        rows = torch.cat([torch.full_like(ids, row) for row, (ids, _) in biased])
        cols = torch.cat([ids for _, (ids, _) in biased])
        logits.index_put_((rows, cols), torch.cat([values for _, (_, values) in biased]), accumulate=True)
    if constrained:
        from tuneforge.serve.engine.grammar import allocate_bitmask, apply_bitmask

        bitmask = allocate_bitmask(len(states), logits.shape[-1])
        grammars.fill_bitmask([s.matcher for s in states], bitmask)
        logits = apply_bitmask(logits, bitmask)
    return logits


def sample(logits, states: list[SampleState], histories: list[tuple[list[int], list[int]]],
           generator: Any = None, grammars: Any = None) -> list[Sampled | RowFailure]:
    """One token per row of `logits` (float32, (rows, vocab)); histories are (prompt ids, output ids).
    `grammars` (a `grammar.GrammarCache`) fills the bitmask of rows whose state has a matcher.

    A row that cannot be sampled gives a `RowFailure` in its place; the others are unaffected."""
    import torch

    finite = torch.isfinite(logits).all(dim=-1).tolist()
    want_logprobs = any(s.params.logprobs is not None for s in states)
    raw = torch.log_softmax(logits, dim=-1) if want_logprobs else None
    logits = apply_bias_and_masks(logits, states, grammars)
    allowed = (logits > float("-inf")).any(dim=-1).tolist() if grammars is not None else [True] * len(states)
    results: list[Sampled | RowFailure] = []
    for row, (state, history) in enumerate(zip(states, histories, strict=True)):
        if not finite[row]:
            results.append(RowFailure("the model produced non-finite logits (NaN or inf) for this request"))
            continue
        if not allowed[row]:
            results.append(RowFailure("the structured output's grammar allows no further token"))
            continue
        try:
            results.append(_sample_row(logits[row], None if raw is None else raw[row], state, history, generator))
        except (RuntimeError, ValueError, IndexError) as exc:  # this row's failure, not the batch's
            results.append(RowFailure(f"sampling failed: {type(exc).__name__}: {exc}"))
    return results


def _in_range(scores):
    """Scores a penalty or a small temperature pushed past the float range, brought back into it (NaN → -inf)."""
    import torch

    big = torch.finfo(scores.dtype).max
    return scores.nan_to_num(nan=float("-inf")).clamp(-big, big)


def _sample_row(scores, raw, state: SampleState, history: tuple[list[int], list[int]], generator: Any) -> Sampled:
    import torch

    p = state.params
    prompt_ids, output_ids = history
    if p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        scores = scores.clone()
        apply_penalties(scores, p, prompt_ids, output_ids)
    if p.greedy:
        token = int(scores.nan_to_num(nan=float("-inf")).argmax())
    else:
        scores = filter_top_k_top_p(_in_range(scores / p.temperature), p.top_k, p.top_p)
        probs = scores.softmax(-1)
        token = int(torch.multinomial(probs, 1, generator=state.generator or generator))
    out = Sampled(token)
    if raw is not None and p.logprobs is not None:
        out.logprob = max(float(raw[token]), LOGPROB_FLOOR)
        if p.logprobs > 0:
            values, indices = raw.topk(min(p.logprobs, raw.shape[-1]))
            out.top = {int(i): max(float(v), LOGPROB_FLOOR) for v, i in zip(values, indices, strict=True)}
    return out
