"""`tuneforge train`: LoRA through PEFT, autocast, cosine schedule with warmup, validation each epoch.

The recipe owns its loop. Loss is summed over target tokens and divided by the target-token count
of the whole accumulated step, so gradient accumulation gives the same update as one big batch.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.core.progress import console, progress_bar
from tuneforge.data.prepare import read_split
from tuneforge.models import load
from tuneforge.models.chat_template import template_hash
from tuneforge.models.lm import batches, collate, mean_loss, summed_loss, target_tokens


def lora_model(model, cfg: TrainConfig):
    """Wrap `model` with LoRA adapters as configured; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def plan_steps(n_rows: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    micro_batches = math.ceil(n_rows / cfg.batch_size)
    per_epoch = max(1, math.ceil(micro_batches / cfg.grad_accum))
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return per_epoch, total


def train(dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig, output: str | Path) -> Artifact:
    """Train a LoRA adapter on `dataset` and write an adapter artifact at `output`."""
    import torch
    from transformers import get_scheduler

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    loaded = load(model_cfg.name, dtype=model_cfg.dtype)
    if loaded.source == "artifact-adapter":
        raise ConfigError(f"model.name: {model_cfg.name} is an adapter; train from its base model instead")
    if dataset.manifest.get("chat_template_hash") not in (None, template_hash(loaded.tokenizer)):
        raise ConfigError(
            f"the dataset at {dataset.path} was templated with a different chat template than "
            f"{model_cfg.name!r} uses; re-run `tuneforge data prepare` with model.name={model_cfg.name}"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = lora_model(loaded.model, cfg).to(device)
    pad_id = loaded.tokenizer.pad_token_id
    train_rows = read_split(dataset, "train")
    val_rows = read_split(dataset, "validation")
    per_epoch, total_steps = plan_steps(len(train_rows), cfg)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule],
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
    trainable = sum(p.numel() for p in params)
    console.print(
        f"training LoRA r={cfg.lora.r} on {model_cfg.name}: {trainable:,} trainable parameters, "
        f"{len(train_rows)} rows, {total_steps} steps on {device.type}"
    )

    history: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    step, tokens_seen, started = 0, 0, time.perf_counter()
    order_rng = random.Random(cfg.seed)
    with progress_bar() as bar:
        task = bar.add_task("training", total=total_steps, info="")
        for epoch in range(cfg.epochs):
            if step >= total_steps:
                break
            order = list(train_rows)
            order_rng.shuffle(order)
            micro = list(batches(order, cfg.batch_size))
            model.train()
            for start in range(0, len(micro), cfg.grad_accum):
                if step >= total_steps:
                    break
                group = [collate(chunk, pad_id) for chunk in micro[start : start + cfg.grad_accum]]
                n_targets = sum(target_tokens(b["labels"]) for b in group)
                if n_targets == 0:
                    continue
                step_loss = 0.0
                for batch in group:
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        loss = summed_loss(model, batch) / n_targets
                    loss.backward()
                    step_loss += loss.detach().item()
                    tokens_seen += int(batch["attention_mask"].sum())
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                lr = scheduler.get_last_lr()[0]
                history.append({"step": step, "epoch": epoch, "loss": step_loss, "lr": lr, "grad_norm": grad_norm})
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {step_loss:.3f} lr {lr:.2e}")
            val = mean_loss(model, val_rows, pad_id, cfg.batch_size, amp_dtype) if val_rows else {}
            epochs.append({"epoch": epoch + 1, "step": step, "val_loss": val.get("loss"),
                           "val_perplexity": val.get("perplexity")})
            if val:
                console.print(f"epoch {epoch + 1}: validation loss {val['loss']:.4f} (ppl {val['perplexity']:.2f})")

    seconds = time.perf_counter() - started
    metrics = {
        "steps": step,
        "train_loss_first": history[0]["loss"] if history else None,
        "train_loss_last": history[-1]["loss"] if history else None,
        "val_loss": epochs[-1]["val_loss"] if epochs else None,
        "epochs": epochs,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens_seen / seconds, 1) if seconds else None,
        "trainable_parameters": trainable,
    }
    config = {"model": model_cfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json")}
    model = model.to("cpu")
    with create_artifact(output, "adapter", config=config, parents=[dataset.ref()]) as writer:
        model.save_pretrained(writer.path)
        with open(writer.path / "history.jsonl", "w") as handle:
            for record in history:
                handle.write(json.dumps(record) + "\n")
        writer.metrics.update(metrics)
        base_ref = str(Path(model_cfg.name).absolute()) if Path(model_cfg.name).exists() else model_cfg.name
        writer.extra.update({"base_model": base_ref, "method": cfg.method,
                             "chat_template_hash": template_hash(loaded.tokenizer)})
    return load_artifact(output, kind="adapter")
