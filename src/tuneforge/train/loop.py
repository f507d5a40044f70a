"""`tuneforge train`: one loop for every method, crash-safe and distributed through accelerate.

Per optimizer step the loop takes `grad_accum` micro-batches (split across processes when run
with `--nproc`), sums the cross-entropy over target tokens and divides by the target-token count
of the *whole* step, so accumulation and data parallelism give the same update as one big batch
(the normalisation transformers fixed in #34191). The effective batch is batch_size × grad_accum
whatever the process count, so `--nproc` changes speed, not results.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError, TrainError
from tuneforge.core.progress import console, progress_bar
from tuneforge.data.prepare import read_split
from tuneforge.models.chat_template import template_hash, tokenizer_hash
from tuneforge.models.loader import fingerprint
from tuneforge.train import checkpoint as ckpt
from tuneforge.train.attention import register as register_segments
from tuneforge.train.batching import (
    batch_loss,
    count_targets,
    epoch_order,
    evaluate_loss,
    make_batch,
    micro_batches,
    real_tokens,
    to_device,
)
from tuneforge.train.distill import Distiller
from tuneforge.train.forgetting import EWC, KLToBase, general_rows, replay_mix
from tuneforge.train.memory import available_bytes, plan_batch, weight_bytes
from tuneforge.train.methods import (
    SOFT_PROMPT,
    load_base,
    load_trainable_state,
    make_trainable,
    output_kind,
    save_trained,
    trainable_parameters,
    trainable_state,
)
from tuneforge.train.tracking import Tracker

EvalCallback = Callable[[int, float], None]


def plan_steps(n_rows: int, cfg: TrainConfig, batch_size: int | None = None) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    size = batch_size or (cfg.batch_size if isinstance(cfg.batch_size, int) else 1)
    micro = math.ceil(n_rows / size)
    per_epoch = max(1, math.ceil(micro / cfg.grad_accum))
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return per_epoch, total


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr: linear warmup, then cosine/linear/constant down to min_lr_ratio."""
    warmup = int(cfg.warmup_ratio * total_steps)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return floor + (1 - floor) * decay

    return factor


def set_attention(model, implementation: str) -> None:
    try:
        model.set_attn_implementation(implementation)
    except (AttributeError, ValueError, ImportError) as exc:
        raise ConfigError(f"train.attention: {type(model).__name__} cannot use {implementation!r} ({exc})") from exc


def frozen_to(model, dtype) -> None:
    """Hold frozen floating-point weights in the autocast dtype; trainable ones stay fp32.

    Autocast would cast every frozen fp32 weight to bf16 on each forward anyway; storing them in
    bf16 skips those copies and halves the base model's memory. Adapters keep fp32 master weights.
    """
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point():
            param.data = param.data.to(dtype)


def check_dataset(dataset: Artifact, tokenizer, model_name: str) -> None:
    """Refuse a data artifact built for another tokenizer or chat template; the manifest says which."""
    built_for = dataset.manifest.get("tokenizer", "another model")
    expected = dataset.manifest.get("tokenizer_hash")
    if expected is not None and expected != tokenizer_hash(tokenizer):
        raise ConfigError(
            f"the dataset at {dataset.path} was tokenized for {built_for!r}, whose tokenizer differs from "
            f"{model_name!r}'s; re-run `tuneforge data prepare` with model.name={model_name}"
        )
    if dataset.manifest.get("chat_template_hash") not in (None, template_hash(tokenizer)):
        raise ConfigError(
            f"the dataset at {dataset.path} was templated with {built_for!r}'s chat template, not "
            f"{model_name!r}'s; re-run `tuneforge data prepare` with model.name={model_name}"
        )


def _autocast_dtype(cfg: TrainConfig):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[cfg.precision]


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def _fingerprint(dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig) -> dict[str, Any]:
    return {"dataset": dataset.content_hash, "model": model_cfg.model_dump(mode="json"),
            "train": cfg.model_dump(mode="json")}


def _loss_curve(folder: Path, history: list[dict[str, Any]], evals: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneforge.data.report import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    points = [e for e in evals if e.get("val_loss") is not None]
    if points:
        ax.plot([e["step"] for e in points], [e["val_loss"] for e in points], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per target token")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, folder, "loss_curve.png")


def train(dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig, output: str | Path,
          resume: bool = False, on_eval: EvalCallback | None = None) -> Artifact | None:
    """Fine-tune with `cfg.method` on `dataset`; write an adapter (or, for `full`, a model) artifact.

    Returns the artifact in the main process and None in the other ranks of a distributed run.
    """
    import torch
    from accelerate import Accelerator

    output = Path(output).absolute()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.grad_accum % world:
        raise ConfigError(f"train.grad_accum ({cfg.grad_accum}) must be a multiple of the process count ({world}): "
                          "each process takes grad_accum / nproc micro-batches per step")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = accelerator.device

    loaded = load_base(model_cfg, cfg)
    check_dataset(dataset, loaded.tokenizer, model_cfg.name)
    train_rows = read_split(dataset, "train")
    val_rows = read_split(dataset, "validation")
    max_length = int(dataset.config.get("data", {}).get("max_length", 2048))
    general: list[dict[str, Any]] = []
    if cfg.forgetting.methods:
        general = general_rows(loaded, cfg.forgetting, max_length)
        if "replay" in cfg.forgetting.methods:
            train_rows = replay_mix(train_rows, general, cfg.forgetting.replay_ratio)
    if cfg.gradient_checkpointing and cfg.method != "qlora":
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loaded.model.enable_input_require_grads()
    attention = cfg.attention if cfg.attention != "auto" else ("sdpa" if device.type == "cuda" else "segments")
    attention = register_segments() if attention == "segments" else attention
    set_attention(loaded.model, attention)
    model = make_trainable(loaded, cfg)
    amp_dtype = _autocast_dtype(cfg)
    loaded_bytes = weight_bytes(model)
    if amp_dtype is not None and cfg.method not in ("full", "qlora"):
        frozen_to(model, amp_dtype)
    if cfg.method != "qlora":
        model = model.to(device)
    packed = cfg.packing and cfg.method not in SOFT_PROMPT
    params = trainable_parameters(model)
    trainable = sum(p.numel() for p in params)

    lengths = [len(r["input_ids"]) for r in train_rows]
    target_share = sum(count_targets(make_batch([r], 0, True)) for r in train_rows[:256]) / max(
        1, sum(lengths[:256]))
    memory = plan_batch(model, trainable, cfg.batch_size, _percentile(lengths, 0.9), target_share,
                        2 if amp_dtype is not None else 4, cfg.gradient_checkpointing, device.type,
                        available_bytes(device.type, cfg.memory_limit_gb), weights=loaded_bytes)
    batch_size = memory.batch_size
    per_epoch, total_steps = plan_steps(len(train_rows), cfg, batch_size)

    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    distiller = Distiller(cfg.distill, loaded.tokenizer, device) if cfg.distill is not None else None
    if distiller is not None:
        set_attention(distiller.teacher, attention)  # packed rows: the teacher must not attend across examples
    kl = KLToBase(model, general, batch_size, cfg.forgetting.kl_weight) if "kl" in cfg.forgetting.methods else None
    ewc = (EWC(model, general, batch_size, cfg.forgetting.ewc_weight, device, amp_dtype)
           if "ewc" in cfg.forgetting.methods else None)
    model, optimizer = accelerator.prepare(model, optimizer)

    root = ckpt.checkpoint_dir(output)
    fingerprint = _fingerprint(dataset, model_cfg, cfg)
    state = ckpt.TrainState()
    best: dict[str, Any] | None = None
    restored = ckpt.load_latest(root) if resume else None
    if restored is not None:
        changes = ckpt.config_changes(restored.fingerprint, fingerprint)
        if changes:
            raise TrainError(f"cannot resume from {restored.path}: the config changed since it was saved — "
                             + "; ".join(changes) + ". Restore those values or start fresh without --resume.")
        load_trainable_state(accelerator.unwrap_model(model), restored.tensors)
        optimizer.load_state_dict(restored.optimizer)
        scheduler.load_state_dict(restored.scheduler)
        state, best = restored.state, restored.best
        ckpt.restore_rng(restored)
        if main:
            console.print(f"resuming from {restored.path.name}: step {state.step}/{total_steps}, "
                          f"epoch {state.epoch + 1}, {state.tokens_seen:,} tokens seen")
    elif main:
        if resume:
            console.print(f"no valid checkpoint in {root}; starting from step 0")
        if root.exists() and not resume:
            console.print(f"[yellow]replacing old checkpoints in {root}[/] (pass --resume to continue them)")
            import shutil

            shutil.rmtree(root, ignore_errors=True)

    tracker = Tracker(cfg.tracking, output, output.parent.name + "/" + output.name,
                      {"model": model_cfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json"),
                       "dataset": dataset.content_hash}) if main else None
    if main:
        console.print(
            f"training {cfg.method} on {model_cfg.name}: {trainable:,} trainable parameters, {len(train_rows)} rows"
            f"{f' ({len(general)} general)' if general else ''}, batch {batch_size} × accum {cfg.grad_accum}"
            f"{f' × {world} processes' if world > 1 else ''}, {total_steps} steps on {device.type}"
            f"{', packed' if packed else ''}; memory plan {memory.describe()}"
        )

    def validate() -> float | None:
        if not val_rows:
            return None
        val = evaluate_loss(model, val_rows, loaded.tokenizer.pad_token_id, batch_size, packed, amp_dtype)
        return float(val["loss"])

    started = time.perf_counter() - state.seconds
    pad_id = loaded.tokenizer.pad_token_id
    step_tokens = 0
    step_started = time.perf_counter()
    try:
        with progress_bar() as bar:
            task = bar.add_task("training", total=total_steps, completed=state.step, info="",
                                visible=main)
            while state.step < total_steps and not state.stopped_early and state.epoch < cfg.epochs:
                micro = micro_batches(train_rows, epoch_order(len(train_rows), cfg.seed, state.epoch), batch_size)
                model.train()
                while state.micro < len(micro) and state.step < total_steps:
                    chunk = micro[state.micro : state.micro + cfg.grad_accum]
                    group = [make_batch(rows, pad_id, packed, cfg.pack_length) for rows in chunk]
                    state.micro += len(group)
                    n_targets = sum(count_targets(b) for b in group)
                    if n_targets == 0:
                        continue
                    mine = group[rank::world] or [group[0]]
                    idle = not group[rank::world]
                    ce_sum = torch.zeros((), device=device)
                    for i, batch in enumerate(mine):
                        batch = to_device(batch, device)
                        sync = contextlib.nullcontext() if i == len(mine) - 1 else accelerator.no_sync(model)
                        with sync, torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                  enabled=amp_dtype is not None):
                            if distiller is None:
                                summed = objective = batch_loss(model, batch)
                            else:
                                objective, summed = distiller.loss(model, batch)
                            loss = objective * (0.0 if idle else world / n_targets)
                            if kl is not None and i == 0:
                                loss = loss + kl.loss(model, state.step, device)
                            if ewc is not None and i == 0:
                                loss = loss + ewc.loss()
                            accelerator.backward(loss)
                        ce_sum += summed.detach() * (0 if idle else 1)
                    step_loss = float(accelerator.reduce(ce_sum, "sum")) / n_targets
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm))
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    tokens = sum(real_tokens(b) for b in group)
                    state.step += 1
                    state.tokens_seen += tokens
                    state.target_tokens_seen += n_targets
                    step_tokens += tokens
                    lr = scheduler.get_last_lr()[0]
                    record = {"step": state.step, "epoch": state.epoch, "loss": step_loss, "lr": lr,
                              "grad_norm": grad_norm, "tokens": state.tokens_seen}
                    state.history.append(record)
                    elapsed = time.perf_counter() - step_started
                    tps = step_tokens / elapsed if elapsed > 0 else 0.0
                    if tracker:
                        tracker.log({"train/loss": step_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                                     "train/tokens_per_second": tps}, state.step)
                    bar.update(task, advance=1, info=f"epoch {state.epoch + 1} loss {step_loss:.3f} lr {lr:.2e} "
                                                     f"{tps:,.0f} tok/s")
                    end_of_epoch = state.micro >= len(micro)
                    due = (state.step % cfg.eval_every == 0) if cfg.eval_every else end_of_epoch
                    if due or state.step == total_steps:
                        best = _evaluate(state, validate(), cfg, model, accelerator, best, tracker, on_eval)
                        model.train()
                    if end_of_epoch:
                        state.epoch, state.micro = state.epoch + 1, 0
                    state.seconds = time.perf_counter() - started
                    if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
                            and state.step < total_steps and not state.stopped_early):
                        if main:
                            ckpt.save_checkpoint(root, state, trainable_state(accelerator.unwrap_model(model)),
                                                 optimizer, scheduler, fingerprint, best, cfg.keep_checkpoints)
                        accelerator.wait_for_everyone()
                    if state.stopped_early or end_of_epoch:
                        break
                else:
                    if state.micro >= len(micro):
                        state.epoch, state.micro = state.epoch + 1, 0
    except BaseException:
        if tracker:
            tracker.finish(None, {}, status="FAILED")
        raise

    unwrapped = accelerator.unwrap_model(model)
    if cfg.early_stopping_patience and best is not None:
        load_trainable_state(unwrapped, best)
        if main:
            console.print(f"kept the best weights: step {state.best_step}, validation loss {state.best_loss:.4f}")
    seconds = state.seconds or (time.perf_counter() - started)
    evals = state.evals
    metrics = {
        "steps": state.step,
        "train_loss_first": state.history[0]["loss"] if state.history else None,
        "train_loss_last": state.history[-1]["loss"] if state.history else None,
        "val_loss": (state.best_loss if cfg.early_stopping_patience and state.best_loss is not None
                     else (evals[-1]["val_loss"] if evals else None)),
        "best_val_loss": state.best_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "epochs": evals,
        "train_seconds": round(seconds, 2),
        "tokens_seen": state.tokens_seen,
        "target_tokens_seen": state.target_tokens_seen,
        "tokens_per_second": round(state.tokens_seen / seconds, 1) if seconds else None,
        "trainable_parameters": trainable,
        "batch_size": batch_size,
        "processes": world,
        "memory_plan_gib": round(memory.total / 1024**3, 3),
    }
    artifact = None
    if main:
        artifact = _write_output(output, dataset, model_cfg, cfg, unwrapped, loaded.tokenizer, state, metrics, packed)
        if tracker:
            tracker.finish(output, {k: v for k, v in metrics.items() if k != "epochs"})
    accelerator.wait_for_everyone()
    return artifact


def _evaluate(state: ckpt.TrainState, val_loss: float | None, cfg: TrainConfig, model, accelerator,
              best: dict[str, Any] | None, tracker: Tracker | None, on_eval: EvalCallback | None):
    """Record a validation, track the best weights, decide on early stopping."""
    record = {"epoch": state.epoch + 1, "step": state.step, "val_loss": val_loss,
              "val_perplexity": math.exp(min(val_loss, 50.0)) if val_loss is not None else None}
    state.evals.append(record)
    if val_loss is None:
        return best
    if accelerator.is_main_process:
        console.print(f"step {state.step} (epoch {state.epoch + 1}): validation loss {val_loss:.4f} "
                      f"(ppl {record['val_perplexity']:.2f})")
    if tracker:
        tracker.log({"val/loss": val_loss}, state.step)
    if state.best_loss is None or val_loss < state.best_loss - cfg.early_stopping_min_delta:
        state.best_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
        if cfg.early_stopping_patience:
            best = trainable_state(accelerator.unwrap_model(model))
    else:
        state.bad_evals += 1
        if cfg.early_stopping_patience and state.bad_evals >= cfg.early_stopping_patience:
            state.stopped_early = True
            if accelerator.is_main_process:
                console.print(f"early stopping: {state.bad_evals} validations without improvement")
    if on_eval is not None:
        on_eval(state.step, val_loss)
    return best


def _write_output(output: Path, dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig, model, tokenizer,
                  state: ckpt.TrainState, metrics: dict[str, Any], packed: bool) -> Artifact:
    kind = output_kind(cfg.method)
    config = {"model": model_cfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json")}
    model = model.to("cpu") if cfg.method != "qlora" else model
    with create_artifact(output, kind, config=config, parents=[dataset.ref()]) as writer:
        save_trained(model, tokenizer, cfg.method, writer.path)
        with open(writer.path / "history.jsonl", "w") as handle:
            for record in state.history:
                handle.write(json.dumps(record) + "\n")
        if state.history:
            _loss_curve(writer.path, state.history, state.evals)
        writer.metrics.update(metrics)
        base_ref = str(Path(model_cfg.name).absolute()) if Path(model_cfg.name).exists() else model_cfg.name
        writer.extra.update({"base_model": base_ref, "base_fingerprint": fingerprint(model_cfg.name),
                             "method": cfg.method, "packed": packed,
                             "chat_template_hash": template_hash(tokenizer),
                             "tokenizer_hash": tokenizer_hash(tokenizer)})
    return load_artifact(output, kind=kind)
