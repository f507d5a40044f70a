"""Sampling parameters and chat prompts, and batched chat generation with Hugging Face `generate`.

`SamplingParams` and `render_prompt` are what the serving engine and API share; `generate_chat` (HF
`generate`, no engine) answers evaluation questions, paraphrases for augmentation and the base
model's self-rehearsal rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneforge.models.chat_template import stop_strings
from tuneforge.models.loader import LoadedModel

GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class GuidedDecoding:
    """What a structured output must match, as plain data (vLLM's `GuidedDecodingParams` names): exactly one
    of a JSON schema (as JSON text), any JSON object, a regular expression, a choice of strings or a Lark
    grammar. The engine turns it into a token mask (`serve/engine/grammar.py`); a vLLM backend hands it on."""

    json: str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("json", "regex", "choice", "grammar") if getattr(self, name) is not None]
        if len(given) + self.json_object != 1:
            raise ValueError(f"a guided decoding names exactly one constraint, not {given or 'none'}")

    @property
    def kind(self) -> str:
        """Which constraint this is: json | json_object | regex | choice | grammar."""
        set_ = [name for name in ("json", "regex", "choice", "grammar") if getattr(self, name) is not None]
        return "json_object" if self.json_object else set_[0]


@dataclass
class SamplingParams:
    """Decoding controls; temperature 0 means greedy. Neutral defaults change nothing."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0  # HF/CTRL style: positive logits of seen tokens ÷ p, negative × p
    presence_penalty: float = 0.0  # OpenAI style, over generated tokens: − p if the token appeared
    frequency_penalty: float = 0.0  # − p × times the token appeared
    stop_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None  # None: none; k ≥ 0: the chosen token's logprob and the top k
    ignore_eos: bool = False  # keep generating past EOS (benchmarks with a fixed output length)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id → added to its logit (OpenAI's)
    guided: GuidedDecoding | None = None  # structured output: what the output must match

    @property
    def greedy(self) -> bool:
        """Temperature below 1e-5 (vLLM's sampling epsilon) is greedy: dividing by it would overflow."""
        return self.temperature < GREEDY_BELOW


@dataclass
class Generation:
    """One finished answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


def render_prompt(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    """The chat template applied to `messages`, ending with the assistant generation prompt."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def generate_kwargs(loaded: LoadedModel, params: SamplingParams) -> dict:
    """Keyword arguments for `model.generate` from sampling params."""
    tokenizer = loaded.tokenizer
    kwargs = {
        "max_new_tokens": params.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.stop_token_ids:
        kwargs["eos_token_id"] = [tokenizer.eos_token_id, *params.stop_token_ids]
    if not params.greedy:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    stops = [*stop_strings(tokenizer), *params.stop]
    if stops:
        kwargs.update(stop_strings=stops, tokenizer=tokenizer)
    return kwargs


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate_chat(
    loaded: LoadedModel, conversations: Sequence[Sequence[dict[str, str]]], params: SamplingParams
) -> list[Generation]:
    """Answer each conversation; all of them run as one left-padded batch."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    prompts = [render_prompt(tokenizer, conv) for conv in conversations]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    encoded = {k: v.to(device) for k, v in encoded.items()}
    if params.seed is not None:
        torch.manual_seed(params.seed)
    with torch.no_grad():
        output = model.generate(**encoded, **generate_kwargs(loaded, params))
    width = encoded["input_ids"].shape[1]
    results = []
    stops = [*stop_strings(tokenizer), *params.stop]
    for row, mask in zip(output, encoded["attention_mask"], strict=True):
        new = row[width:].tolist()
        ended = tokenizer.eos_token_id in new
        if ended:
            new = new[: new.index(tokenizer.eos_token_id) + 1]
        text, stopped = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), stops)
        finish = "stop" if ended or stopped or len(new) < params.max_new_tokens else "length"
        results.append(Generation(text, int(mask.sum()), len(new), finish))
    return results
