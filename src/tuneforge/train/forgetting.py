"""Anti-forgetting: replay of general data and a KL-to-base penalty on it.

General data is `train.forgetting.general_data` (chat JSONL) or, by default, the shipped general
prompts (`train/data/general_prompts.jsonl`, disjoint from the evaluation's general set) answered
greedily by the base model itself before training: self-rehearsal, so replay teaches the tuned
model to keep answering as the base did and KL keeps its distribution there.
"""

from __future__ import annotations

import contextlib
import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.core.config import ForgettingConfig
from tuneforge.core.errors import ConfigError
from tuneforge.core.progress import console
from tuneforge.data.formats import load_rows
from tuneforge.data.template import tokenize_row
from tuneforge.models import LoadedModel
from tuneforge.models.generate import SamplingParams, generate_chat
from tuneforge.train.batching import micro_batches, pack, target_logits, to_device

GENERAL_PROMPTS = "general_prompts.jsonl"


def shipped_prompts_path() -> Path:
    return Path(str(resources.files("tuneforge.train") / "data" / GENERAL_PROMPTS))


def self_rehearsal_rows(loaded: LoadedModel, prompts: list[dict[str, Any]], max_new_tokens: int = 96,
                        batch_size: int = 16) -> list[dict[str, Any]]:
    """The base model's own greedy answers to `prompts` (rows whose messages end with a user turn)."""
    rows = []
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    with console.status(f"base model answering {len(prompts)} general prompts for self-rehearsal"):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            answers = generate_chat(loaded, [r["messages"] for r in chunk], params)
            for row, answer in zip(chunk, answers, strict=True):
                if answer.text.strip():
                    rows.append({"messages": [*row["messages"], {"role": "assistant", "content": answer.text}]})
    return rows


def general_rows(loaded: LoadedModel, cfg: ForgettingConfig, max_length: int) -> list[dict[str, Any]]:
    """Tokenized general rows (input_ids, labels) for replay and KL; at most cfg.max_rows."""
    if cfg.general_data is not None:
        if not Path(cfg.general_data).is_file():
            raise ConfigError(f"train.forgetting.general_data: {cfg.general_data} does not exist")
        chats = load_rows([Path(cfg.general_data)])[: cfg.max_rows]
        bad = [i for i, r in enumerate(chats) if r["messages"][-1]["role"] != "assistant"]
        if bad:
            raise ConfigError(f"train.forgetting.general_data: row {bad[0] + 1} does not end with an assistant "
                              "answer; replay and KL need complete conversations")
    else:
        lines = shipped_prompts_path().read_text(encoding="utf-8").splitlines()
        prompts = [json.loads(line) for line in lines if line.strip()][: cfg.max_rows]
        chats = self_rehearsal_rows(loaded, prompts)
    rows = [tokenize_row(loaded.tokenizer, r, max_length) for r in chats]
    rows = [r for r in rows if any(label != -100 for label in r["labels"][1:])]
    if not rows:
        raise ConfigError("train.forgetting: no usable general rows (every answer was empty or cut)")
    return rows


def replay_mix(train_rows: list[dict[str, Any]], general: list[dict[str, Any]], ratio: float) -> list[dict[str, Any]]:
    """Training rows plus ratio × len(train) general rows (cycled), marked as replay."""
    n = round(len(train_rows) * ratio)
    extra = [dict(general[i % len(general)], replay=True) for i in range(n)]
    return [*train_rows, *extra]


class KLToBase:
    """KL(base ‖ tuned) per target token on general rows, one packed batch per optimizer step."""

    def __init__(self, model, rows: list[dict[str, Any]], batch_size: int, weight: float) -> None:
        self.batches = [pack(chunk) for chunk in micro_batches(rows, range(len(rows)), batch_size)]
        self.weight = weight
        # PEFT models switch their adapters off for the reference; others keep a frozen copy.
        self.reference = None if hasattr(model, "disable_adapter") else copy.deepcopy(model).eval()
        if self.reference is not None:
            for p in self.reference.parameters():
                p.requires_grad_(False)

    def _reference(self, model):
        if self.reference is not None:
            return contextlib.nullcontext(self.reference)
        inner = getattr(model, "module", model)

        @contextlib.contextmanager
        def disabled():
            with inner.disable_adapter():
                yield inner

        return disabled()

    def loss(self, model, step: int, device):
        """Weighted KL on the step's general batch (cycled by step, so resume sees the same batches)."""
        import torch
        import torch.nn.functional as F

        batch = to_device(self.batches[step % len(self.batches)], device)
        with torch.no_grad(), self._reference(model) as reference:
            base = target_logits(reference, batch).float()
        tuned = target_logits(model, batch).float()
        kl = F.kl_div(F.log_softmax(tuned, -1), F.log_softmax(base, -1), log_target=True, reduction="batchmean")
        return self.weight * kl


class EWC:
    """Elastic weight consolidation: (λ/2) Σᵢ Fᵢ (θᵢ − θᵢ*)² with a diagonal Fisher from general rows.

    Fᵢ is the mean squared gradient of the per-token loss over the general batches, taken once
    at the start (θ* = the weights before training, in eval mode so dropout draws no random numbers).
    """

    def __init__(self, model, rows: list[dict[str, Any]], batch_size: int, weight: float, device,
                 autocast_dtype=None) -> None:
        import torch

        from tuneforge.train.batching import batch_loss, count_targets

        params = [p for p in model.parameters() if p.requires_grad]
        fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        batches = [pack(chunk) for chunk in micro_batches(rows, range(len(rows)), batch_size)]
        was_training = model.training
        model.eval()
        for batch in batches:
            model.zero_grad(set_to_none=True)
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss = batch_loss(model, batch) / max(1, count_targets(batch))
            loss.backward()
            for f, p in zip(fisher, params, strict=True):
                if p.grad is not None:
                    f += p.grad.detach().float() ** 2
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        self.terms = [(p, f / len(batches), p.detach().clone()) for p, f in zip(params, fisher, strict=True)]
        self.weight = weight

    def loss(self):
        total = sum(((f * (p.float() - anchor.float()) ** 2).sum() for p, f, anchor in self.terms))
        return 0.5 * self.weight * total
