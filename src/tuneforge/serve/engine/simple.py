"""The simple engine: one request at a time through Hugging Face `generate`, streaming or not.

This is the foundation's engine; continuous batching replaces it behind the same two calls
(`complete`, `stream`). A lock serialises requests; a stream can be cancelled between tokens.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tuneforge.models.chat_template import stop_strings
from tuneforge.models.generate import (
    Generation,
    SamplingParams,
    cut_at_stop,
    generate_chat,
    generate_kwargs,
    render_prompt,
)
from tuneforge.models.loader import LoadedModel


@dataclass
class StreamDelta:
    """A piece of streamed text; the last one carries finish_reason and token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] | None = None


class _TokenQueue:
    """A `generate` streamer that hands generated token ids to the consuming thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._skipped_prompt = False

    def put(self, value) -> None:
        if not self._skipped_prompt:  # generate() first puts the prompt ids
            self._skipped_prompt = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class SimpleEngine:
    """Generation for one loaded model, serialised by a lock."""

    def __init__(self, loaded: LoadedModel, max_context: int | None = None) -> None:
        self.loaded = loaded
        self.lock = threading.Lock()
        config = getattr(loaded.model, "config", None)
        self.max_context: int = max_context or int(getattr(config, "max_position_embeddings", None) or 2048)

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        prompt = render_prompt(self.loaded.tokenizer, messages)
        return len(self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def complete(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> Generation:
        """The whole answer at once."""
        with self.lock:
            return generate_chat(self.loaded, [messages], params)[0]

    def stream(self, messages: Sequence[dict[str, str]], params: SamplingParams,
               cancelled: threading.Event | None = None,
               on_start: Callable[[], None] | None = None) -> Iterator[StreamDelta]:
        """A chat turn: the chat template applied, then `stream_ids`."""
        prompt = render_prompt(self.loaded.tokenizer, messages)
        ids = self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self.stream_ids(list(ids), params, cancelled, on_start)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a raw completion prompt (special tokens as the tokenizer adds them)."""
        if isinstance(prompt, list):
            return prompt
        return list(self.loaded.tokenizer(prompt)["input_ids"])

    def token_logprobs(self, ids: list[int], top: int) -> tuple[list[float | None], list[dict[str, float] | None]]:
        """Log-probability of each token given the ones before it (None for the first), and the top-k."""
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        with self.lock, torch.no_grad():
            device = next(model.parameters()).device
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()  # (T, V)
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen: list[float | None] = [None]
        tops: list[dict[str, float] | None] = [None]
        for position in range(1, len(ids)):
            row = logprobs[position - 1]  # predicts token `position`
            chosen.append(float(row[ids[position]]))
            if top > 0:
                values, indices = row.topk(top)
                tops.append({tokenizer.decode([int(i)]): float(v) for v, i in zip(values, indices, strict=True)})
            else:
                tops.append(None)
        return chosen, tops

    def stream_ids(self, prompt_ids: list[int], params: SamplingParams,
                   cancelled: threading.Event | None = None,
                   on_start: Callable[[], None] | None = None) -> Iterator[StreamDelta]:
        """Yield text as it is generated; stop strings are held back until they can be ruled out.

        `on_start` is called once the request holds the engine (its queue time ends there). The
        last delta carries `token_ids`: the generated ids, for callers that need logprobs.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancelled = cancelled or threading.Event()
        tokenizer, model = self.loaded.tokenizer, self.loaded.model

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        device = next(model.parameters()).device
        input_ids = torch.tensor([prompt_ids], device=device)
        encoded = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        prompt_tokens = int(encoded["input_ids"].shape[1])
        streamer = _TokenQueue()
        kwargs = generate_kwargs(self.loaded, params)
        stops = [*stop_strings(tokenizer), *params.stop]
        holdback = max((len(s) for s in stops), default=1) - 1
        errors: list[BaseException] = []

        def work() -> None:
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.no_grad():
                    model.generate(**encoded, **kwargs, streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([_Cancel()]))
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        with self.lock:
            if on_start is not None:
                on_start()
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            ids: list[int] = []
            sent = 0
            finish = None
            try:
                while True:
                    item = streamer.queue.get()
                    if item is None:
                        break
                    ids.extend(item)
                    if tokenizer.eos_token_id in ids:
                        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
                        finish = "stop"
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    text, hit = cut_at_stop(text, stops)
                    if hit:
                        finish = "stop"
                    safe = len(text) if finish else len(text) - holdback
                    if text.endswith("\ufffd") and not finish:  # an unfinished multi-byte character
                        safe = min(safe, len(text.rstrip("\ufffd")))
                    if safe > sent:
                        yield StreamDelta(text[sent:safe])
                        sent = safe
                    if finish:
                        cancelled.set()
                        break
            finally:
                cancelled.set()
                thread.join()
            if errors:
                raise errors[0]
            text, _ = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stops)
            if len(text) > sent:
                yield StreamDelta(text[sent:])
            if finish is None:
                finish = "length" if len(ids) >= params.max_new_tokens else "stop"
            yield StreamDelta("", finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=len(ids),
                              token_ids=list(ids))
