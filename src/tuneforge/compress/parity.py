"""Parity: does a compressed model still answer like the model it was made from?

On a fixed prompt set, the parent answers greedily; the child answers greedily too, and both are
run teacher-forced on prompt + the parent's answer. Reported: the share of prompts whose greedy
continuations are identical, the token-level agreement, and the max/mean |Δlogit| over the
parent's answer positions. A step fails when agreement or logit drift exceed `ParityConfig`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.core.config import EvalConfig, ParityConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel
from tuneforge.models.generate import render_prompt


def load_prompts(cfg: ParityConfig) -> list[list[dict[str, str]]]:
    """Conversations to compare on: the configured file or the shipped general prompts."""
    if cfg.prompts is None:
        from tuneforge.train.forgetting import shipped_prompts_path

        path = shipped_prompts_path()
    else:
        path = Path(cfg.prompts)
        if not path.is_file():
            raise ConfigError(f"compress.parity.prompts: {path} does not exist")
    conversations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError:
            row = line
        if isinstance(row, dict) and "messages" in row:
            conversations.append([m for m in row["messages"] if m["role"] != "assistant"])
        elif isinstance(row, dict) and "question" in row:
            conversations.append([{"role": "user", "content": str(row["question"])}])
        elif isinstance(row, str):
            conversations.append([{"role": "user", "content": row}])
        else:
            raise ConfigError(f"{path}:{number}: expected a {{question}} or {{messages}} row or a line of text")
    if not conversations:
        raise ConfigError(f"{path}: no prompts")
    return conversations[: cfg.max_prompts]


class HFSide:
    """A model to compare, run by transformers: greedy continuation and teacher-forced logits."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        return _greedy(self.loaded, prompt_ids, max_new_tokens)

    def logits(self, ids: list[int]):
        return _logits(self.loaded, ids)


def _greedy(loaded: LoadedModel, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    import torch

    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        out = loaded.model.generate(input_ids=torch.tensor([prompt_ids], device=device), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=loaded.tokenizer.pad_token_id,
                                    attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=device))
    return out[0, len(prompt_ids):].tolist()


def _logits(loaded: LoadedModel, ids: list[int]):
    import torch

    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        return loaded.model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()


# (min greedy agreement, max mean |Δlogit|) when the config leaves them unset. Lossless steps are held
# tight; lossy ones to what the bf16 cast alone costs on SmolLM2 (agreement 0.84, mean |Δlogit| 0.11).
TOLERANCES = {"lossless": (0.95, 0.02), "lossy": (0.7, 0.35)}


def compare(parent: LoadedModel, child: Any, cfg: ParityConfig, kind: str = "lossless") -> dict[str, Any]:
    """Parity metrics of `child` against `parent` and whether they are within tolerance.

    `child` is a LoadedModel, or any object with `greedy(prompt_ids, n)` and `logits(ids)` (a GGUF run
    by llama.cpp, say); the parent's tokenizer renders the prompts for both."""
    min_agreement = cfg.min_agreement if cfg.min_agreement is not None else TOLERANCES[kind][0]
    max_mean = cfg.max_mean_logit_diff if cfg.max_mean_logit_diff is not None else TOLERANCES[kind][1]
    tokenizer = parent.tokenizer
    parent_side = HFSide(parent)
    child_side = HFSide(child) if isinstance(child, LoadedModel) else child
    same_prompts = token_matches = token_total = 0
    max_diff, diff_sum, diff_count = 0.0, 0.0, 0
    examples = []
    conversations = load_prompts(cfg)
    for conversation in conversations:
        prompt_ids = tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]
        want = parent_side.greedy(prompt_ids, cfg.max_new_tokens)
        got = child_side.greedy(prompt_ids, cfg.max_new_tokens)
        same_prompts += want == got
        token_total += len(want)
        token_matches += sum(a == b for a, b in zip(want, got, strict=False))
        ids = prompt_ids + want
        answer = slice(len(prompt_ids) - 1, len(ids) - 1)  # positions that predict the parent's answer
        diff = (parent_side.logits(ids)[answer] - child_side.logits(ids)[answer]).abs()
        if diff.numel():
            max_diff = max(max_diff, float(diff.max()))
            diff_sum += float(diff.mean(dim=-1).sum())
            diff_count += diff.shape[0]
        if want != got and len(examples) < 5:
            examples.append({"prompt": conversation[-1]["content"], "parent": tokenizer.decode(want),
                             "child": tokenizer.decode(got)})
    report = {
        "prompts": len(conversations),
        "agreement": same_prompts / len(conversations),
        "token_agreement": token_matches / token_total if token_total else 1.0,
        "max_logit_diff": max_diff,
        "mean_logit_diff": diff_sum / diff_count if diff_count else 0.0,
        "min_agreement": min_agreement,
        "max_mean_logit_diff": max_mean,
        "disagreements": examples,
    }
    failures = []
    if report["agreement"] < min_agreement:
        failures.append(f"greedy agreement {report['agreement']:.3f} < compress.parity.min_agreement {min_agreement}")
    if report["mean_logit_diff"] > max_mean:
        failures.append(f"mean |Δlogit| {report['mean_logit_diff']:.4f} > compress.parity.max_mean_logit_diff "
                        f"{max_mean}")
    report["passed"] = not failures
    report["failures"] = failures
    return report


def check(parent: LoadedModel, child: Any, cfg: ParityConfig, kind: str = "lossless",
          eval_cfg: EvalConfig | None = None) -> dict[str, Any]:
    """`compare`, then with `cfg.eval` the eval sets answered by both (accuracy per set, parent vs child):
    a drop beyond `cfg.max_accuracy_drop` on any set fails the step too."""
    report = compare(parent, child, cfg, kind)
    if not cfg.eval:
        return report
    if not isinstance(child, LoadedModel):
        raise ConfigError("compress.parity.eval: this step's output is not run by transformers, so the eval sets "
                          "cannot be answered here; turn compress.parity.eval off for it (greedy agreement and "
                          "logit drift are still checked)")
    deltas = eval_delta(parent, child, eval_cfg or EvalConfig())
    report["eval"] = deltas
    for name, values in deltas.items():
        if values["parent"] - values["child"] > cfg.max_accuracy_drop:
            report["failures"].append(f"{name} accuracy {values['child']:.3f} vs {values['parent']:.3f}: a drop "
                                      f"over compress.parity.max_accuracy_drop {cfg.max_accuracy_drop}")
    report["passed"] = not report["failures"]
    return report


def eval_delta(parent: LoadedModel, child: LoadedModel, eval_cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Accuracy of parent and child on each configured question set (the evaluation stage's scoring)."""
    from tuneforge.eval.evaluate import evaluate_loaded, question_sets

    sets = question_sets(eval_cfg)
    if not sets:
        raise ConfigError("compress.parity.eval: the eval section names no question set "
                          "(eval.questions, eval.general)")
    before = evaluate_loaded(parent, "parent", eval_cfg, sets, [])["metrics"]
    after = evaluate_loaded(child, "child", eval_cfg, sets, [])["metrics"]
    return {name: {"parent": before[f"{name}_accuracy"], "child": after[f"{name}_accuracy"],
                   "delta": after[f"{name}_accuracy"] - before[f"{name}_accuracy"]}
            for name in sets if f"{name}_accuracy" in before}


def describe(report: dict[str, Any]) -> str:
    lines = [f"parity on {report['prompts']} prompts: greedy agreement {report['agreement']:.3f} "
             f"(tokens {report['token_agreement']:.3f}), |Δlogit| mean {report['mean_logit_diff']:.5f} "
             f"max {report['max_logit_diff']:.4f}"]
    for name, values in report.get("eval", {}).items():
        lines.append(f"  {name} accuracy {values['parent']:.3f} → {values['child']:.3f} ({values['delta']:+.3f})")
    lines += [f"  FAILED: {f}" for f in report["failures"]]
    for ex in report["disagreements"][:3]:
        lines.append(f"  e.g. {ex['prompt']!r}: parent {ex['parent']!r} vs child {ex['child']!r}")
    return "\n".join(lines)
