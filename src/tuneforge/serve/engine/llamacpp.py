"""The `llamacpp` backend: a GGUF file run by llama.cpp (through llama-cpp-python) under tuneforge's engine.

llama.cpp computes the logits; everything else is the native engine's: scheduling, sampling
(penalties, seeds, logprobs), stop strings, deadlines, cancellation, metrics, the API. Its
high-level binding keeps one sequence's cache, so this backend runs one sequence at a time
(`max_num_seqs` is forced to 1; the others wait) — the backend for edge and small-CPU deployments
that already have a GGUF (`tuneforge compress export --format gguf`, or any llama.cpp model).
Install: `pip install llama-cpp-python` (builds llama.cpp; a few minutes on 2 cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.errors import TuneforgeError
from tuneforge.models.loader import LoadedModel, _prepare_tokenizer
from tuneforge.serve.engine.protocol import Capabilities
from tuneforge.serve.engine.scheduler import SchedulerOutput


def gguf_file(model_ref: str) -> Path:
    """The GGUF a reference names: a .gguf file, a folder holding exactly one, or the built-in smollm2-135m."""
    from tuneforge.models.loader import SMOLLM2, smollm2_gguf_path

    if model_ref == SMOLLM2:
        return smollm2_gguf_path()
    path = Path(model_ref)
    if path.is_file() and path.suffix == ".gguf":
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise TuneforgeError(f"backend llamacpp serves a GGUF file: {model_ref!r} is not a .gguf file or a folder with "
                         f"exactly one (found {len(found)})")


def load_gguf_tokenizer(gguf: Path):
    """The Hugging Face tokenizer (with chat template) stored in a GGUF; cached for the built-in model."""
    from transformers import AutoTokenizer

    from tuneforge.models.loader import smollm2_gguf_path, smollm2_tokenizer_dir

    if gguf.resolve() == smollm2_gguf_path().resolve():
        return _prepare_tokenizer(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()))
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))


@dataclass
class _NoCache:
    nbytes: int = 0


@dataclass
class _NoLoRA:
    names: list[str] = field(default_factory=list)

    def load(self, *_: Any) -> None:
        raise ValueError("multi-LoRA needs backend native (llama.cpp adapters are merged at export time)")

    def unload(self, name: str) -> None:
        raise ValueError(f"no adapter {name!r}")


class LlamaCppRunner:
    """`forward(plan)` over llama.cpp: one sequence at a time, its cache kept between steps."""

    def __init__(self, gguf: Path, max_model_len: int, threads: int | None = None, prefix_cache: bool = True) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise TuneforgeError("backend llamacpp needs llama-cpp-python: pip install llama-cpp-python") from None
        import torch

        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=max_model_len, n_batch=512, logits_all=False,
                                   verbose=False, n_threads=threads or os.cpu_count())
        self.n_vocab = self.llm.n_vocab()
        self.device = torch.device("cpu")
        self.dtype = "gguf"
        self.cache = _NoCache()
        self.lora = _NoLoRA()
        self.context = self.llm.n_ctx()
        # llama-cpp-python's high-level binding keeps one sequence's cache; its adapters are merged at export
        self.capabilities = Capabilities(prompt_logprobs=False, multi_lora=False, max_num_seqs=1)
        # A new sequence keeps the cached positions it shares with the last one (the chat template's system
        # prompt, a few-shot preamble), as llama-server's prompt cache does; recurrent and hybrid models
        # cannot drop a cache suffix, so they start from scratch. The price: llama.cpp's kernels differ with
        # the batch size, so logits after a reused prefix can differ in the last bits from a cold run.
        model = self.llm.model
        self.reuses_prefix = prefix_cache and not (llama_cpp.llama_model_is_recurrent(model) or
                                                   getattr(llama_cpp, "llama_model_is_hybrid", lambda _: False)(model))
        self.reused_tokens = 0  # prompt tokens not evaluated again, since start

    def close(self) -> None:
        """Free llama.cpp's model now (its finaliser fails if it runs during interpreter shutdown)."""
        self.llm.close()

    def score(self, ids: list[int], top: int, adapter: str | None = None):
        raise ValueError("echo + logprobs (prompt scoring) needs serve.backend native")

    def forward(self, plan: SchedulerOutput):
        import numpy as np
        import torch

        rows = []
        for chunk in plan.chunks:
            tokens = chunk.tokens
            if chunk.start == 0:  # a new sequence owns the (single) cache, past its common prefix
                keep = self._cached_prefix(tokens)
                self.llm.n_tokens = keep  # eval() drops every cached position from here on
                self.reused_tokens += keep
                tokens = tokens[keep:]
            elif self.llm.n_tokens != chunk.start:
                raise RuntimeError(f"llama.cpp cache holds {self.llm.n_tokens} tokens; the plan starts at "
                                   f"{chunk.start}")
            self.llm.eval(tokens)
            if chunk.samples:
                pointer = self.llm._ctx.get_logits_ith(-1)
                rows.append(torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()))
        return torch.stack(rows).float() if rows else torch.empty(0, self.n_vocab)


    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many leading `tokens` the cache already holds; at least one is always evaluated again, so the
        step has fresh logits for its last position."""
        if not self.reuses_prefix:
            return 0
        limit = min(self.llm.n_tokens, len(tokens) - 1)
        cached = self.llm.input_ids[:limit]
        same = 0
        while same < limit and cached[same] == tokens[same]:
            same += 1
        return same


def llamacpp_engine_parts(model_ref: str, max_model_len: int,
                          prefix_cache: bool = True) -> tuple[LoadedModel, LlamaCppRunner]:
    """What the engine needs for a GGUF: its tokenizer (as a LoadedModel without torch weights) and a runner."""
    gguf = gguf_file(model_ref)
    runner = LlamaCppRunner(gguf, max_model_len, prefix_cache=prefix_cache)
    return LoadedModel(None, load_gguf_tokenizer(gguf), model_ref, "gguf", info={"gguf": str(gguf)}), runner
