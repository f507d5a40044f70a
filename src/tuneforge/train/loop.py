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
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import DataConfig, ModelConfig, TrainConfig
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
from tuneforge.train.distributed import gathered_state, is_sharded, sharding_setup, shares
from tuneforge.train.forgetting import EWC, KLToBase, general_rows, replay_mix
from tuneforge.train.memory import available_bytes, plan_batch, weight_bytes
from tuneforge.train.methods import (
    TuningMethod,
    load_trainable_state,
    make_trainable,
    output_kind,
    trainable_parameters,
    trainable_state,
)
from tuneforge.train.methods import method as get_method
from tuneforge.train.recipe import choose as choose_recipe
from tuneforge.train.recipe import data_shape
from tuneforge.train.recipe import describe as describe_recipe
from tuneforge.train.tracking import Tracker

EvalCallback = Callable[[int, float], None]
StepCallback = Callable[[dict[str, Any]], None]  # one history record, plus tokens_per_second and total_steps


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


def check_dataset(dataset: Artifact, tokenizer, model_name: str, add_tokens: list[str] | None = None) -> None:
    """Refuse a data artifact built for another tokenizer, chat template or `model.add_tokens`; the manifest
    says which."""
    built_for = dataset.manifest.get("tokenizer", "another model")
    prepared_with = sorted(dataset.manifest.get("added_tokens") or {})
    if prepared_with != sorted(add_tokens or []):
        raise ConfigError(f"the dataset at {dataset.path} was prepared with model.add_tokens {prepared_with}, "
                          f"this run has {sorted(add_tokens or [])}: prepare and train with the same model.add_tokens")
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


@dataclass
class _Rows:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    general: list[dict[str, Any]]  # general-domain rows for the anti-forgetting regularizers


@dataclass
class _Run:
    """What a training run holds while it steps: the parts `train` assembles, handed to each step."""

    cfg: TrainConfig
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    params: list[Any]
    rows: _Rows
    pad_id: int
    batch_size: int
    packed: bool
    amp_dtype: Any
    total_steps: int
    distiller: Distiller | None
    kl: KLToBase | None
    ewc: EWC | None
    on_eval: EvalCallback | None
    on_step: StepCallback | None = None
    tracker: Tracker | None = None
    best: dict[str, Any] | None = None  # trainable tensors of the best validation (early stopping)
    started: float = 0.0  # perf_counter at the start, less the seconds of a resumed run
    run_tokens: int = 0  # tokens this process has stepped through since it started (for tok/s)
    run_started: float = 0.0
    progress: Callable[[str], None] = lambda info: None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def device(self) -> Any:
        return self.accelerator.device

    @property
    def sharded(self) -> bool:
        return is_sharded(self.model)


def train(dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig, output: str | Path,
          resume: bool = False, on_eval: EvalCallback | None = None,
          on_step: StepCallback | None = None) -> Artifact | None:
    """Fine-tune with `cfg.method` on `dataset`; write an adapter (or, for `full`, a model) artifact.

    Returns the artifact in the main process and None in the other ranks of a distributed run. `on_step`
    gets each optimizer step's record in the main process (what `tuneforge ui` draws its live curve from).
    """
    output = Path(output).absolute()
    method = get_method(cfg.method)
    accelerator = _accelerator(cfg)
    loaded = method.load_base(model_cfg, cfg)
    check_dataset(dataset, loaded.tokenizer, model_cfg.name, model_cfg.add_tokens)
    cfg, recipe = choose_recipe(cfg, data_shape(read_split(dataset, "train")))
    if accelerator.is_main_process:
        console.print(describe_recipe(recipe))
    rows = _read_rows(dataset, loaded, cfg)
    model, attention, weights = _trainable_model(loaded, method, cfg, accelerator.device)
    memory = _plan_memory(model, rows.train, cfg, accelerator.device, weights)
    run = _assemble(accelerator, model, loaded, rows, cfg, memory.batch_size, method.packs, attention, on_eval)
    fingerprint, root = _fingerprint(dataset, model_cfg, cfg), ckpt.checkpoint_dir(output)
    state = _restore_or_start(run, root, fingerprint, resume)
    if run.main:
        run.on_step = on_step
        run.tracker = Tracker(cfg.tracking, output, output.parent.name + "/" + output.name,
                              {"model": model_cfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json"),
                               "dataset": dataset.content_hash})
        _announce(run, model_cfg, memory)
    try:
        _run_steps(run, state, root, fingerprint)
    except BaseException:
        if run.tracker:
            run.tracker.finish(None, {}, status="FAILED")
        raise
    metrics = _metrics(run, state, memory)
    artifact = None
    unwrapped = _whole_copy(run, method, model_cfg) if run.sharded else run.accelerator.unwrap_model(run.model)
    if run.main:
        _keep_best(run, state, unwrapped)
        artifact = _write_output(output, dataset, model_cfg, cfg, unwrapped, loaded.tokenizer, state, metrics,
                                 run.packed, recipe)
        if run.tracker:
            run.tracker.finish(output, {k: v for k, v in metrics.items() if k != "epochs"})
    accelerator.wait_for_everyone()
    return artifact


def memory_plan(dataset: Artifact, model_cfg: ModelConfig, cfg: TrainConfig):
    """The memory plan `train` would start with (batch size, estimated peak, budget), without training."""
    method = get_method(cfg.method)
    accelerator = _accelerator(cfg)
    loaded = method.load_base(model_cfg, cfg)
    check_dataset(dataset, loaded.tokenizer, model_cfg.name, model_cfg.add_tokens)
    cfg, _ = choose_recipe(cfg, data_shape(read_split(dataset, "train")))
    rows = _read_rows(dataset, loaded, cfg)
    model, _, weights = _trainable_model(loaded, method, cfg, accelerator.device)
    return _plan_memory(model, rows.train, cfg, accelerator.device, weights)


def _accelerator(cfg: TrainConfig):
    """The accelerate handle for this process (CPU without CUDA), with the seeds set."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    distributed = sharding_setup(accelerator)
    if distributed == "FSDP" and cfg.checkpoint_every:
        raise ConfigError("train.checkpoint_every is not supported under FSDP yet (a resumable checkpoint would "
                          "need every rank's optimizer shard); leave it unset, or train with DDP (--nproc)")
    world = accelerator.num_processes
    if cfg.grad_accum % world:
        raise ConfigError(f"train.grad_accum ({cfg.grad_accum}) must be a multiple of the process count ({world}): "
                          "each process takes grad_accum / nproc micro-batches per step")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return accelerator


def _read_rows(dataset: Artifact, loaded, cfg: TrainConfig) -> _Rows:
    """The dataset's splits, with general-domain rows mixed in (replay) or set aside (KL, EWC)."""
    train_rows = read_split(dataset, "train")
    max_length = int(dataset.config.get("data", {}).get("max_length", DataConfig.model_fields["max_length"].default))
    general: list[dict[str, Any]] = []
    if cfg.forgetting.methods:
        general = general_rows(loaded, cfg.forgetting, max_length)
        if "replay" in cfg.forgetting.methods:
            train_rows = replay_mix(train_rows, general, cfg.forgetting.replay_ratio)
    return _Rows(train_rows, read_split(dataset, "validation"), general)


def _trainable_model(loaded, method: TuningMethod, cfg: TrainConfig, device) -> tuple[Any, str, int]:
    """(the model the method trains, on `device`; the attention implementation; the bytes of its weights)."""
    if cfg.gradient_checkpointing and not method.quantized_base:  # a 4-bit base gets it from PEFT's preparation
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loaded.model.enable_input_require_grads()
    attention = cfg.attention if cfg.attention != "auto" else ("sdpa" if device.type == "cuda" else "segments")
    attention = register_segments() if attention == "segments" else attention
    set_attention(loaded.model, attention)
    model = make_trainable(loaded, cfg)
    amp_dtype = _autocast_dtype(cfg)
    weights = weight_bytes(model)
    if not method.quantized_base:  # bitsandbytes placed the 4-bit base and keeps its frozen weights in fp32
        if amp_dtype is not None and not method.trains_weights:
            frozen_to(model, amp_dtype)
        model = model.to(device)
    return model, attention, weights


def _plan_memory(model, train_rows: list[dict[str, Any]], cfg: TrainConfig, device, weights: int):
    """The batch size that fits in memory (`train.batch_size: auto`), and what the plan expects to use."""
    trainable = sum(p.numel() for p in trainable_parameters(model))
    lengths = [len(r["input_ids"]) for r in train_rows]
    target_share = sum(count_targets(make_batch([r], 0, True)) for r in train_rows[:256]) / max(
        1, sum(lengths[:256]))
    return plan_batch(model, trainable, cfg.batch_size, _percentile(lengths, 0.9), target_share,
                      2 if _autocast_dtype(cfg) is not None else 4, cfg.gradient_checkpointing, device.type,
                      available_bytes(device.type, cfg.memory_limit_gb), weights=weights)


def _assemble(accelerator, model, loaded, rows: _Rows, cfg: TrainConfig, batch_size: int, packs: bool,
              attention: str, on_eval: EvalCallback | None) -> _Run:
    """Optimizer, schedule and regularizers around `model`, prepared by accelerate."""
    import torch

    params = trainable_parameters(model)
    _, total_steps = plan_steps(len(rows.train), cfg, batch_size)
    amp_dtype = _autocast_dtype(cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    device = accelerator.device
    distiller = Distiller(cfg.distill, loaded.tokenizer, device) if cfg.distill is not None else None
    if distiller is not None:
        set_attention(distiller.teacher, attention)  # packed rows: the teacher must not attend across examples
    methods = cfg.forgetting.methods
    kl = KLToBase(model, rows.general, batch_size, cfg.forgetting.kl_weight) if "kl" in methods else None
    ewc = (EWC(model, rows.general, batch_size, cfg.forgetting.ewc_weight, device, amp_dtype)
           if "ewc" in methods else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = trainable_parameters(accelerator.unwrap_model(model))  # FSDP2 replaced them with sharded ones
    return _Run(cfg, accelerator, model, optimizer, scheduler, params, rows, loaded.tokenizer.pad_token_id,
                batch_size, cfg.packing and packs, amp_dtype, total_steps, distiller, kl, ewc, on_eval)


def _restore_or_start(run: _Run, root: Path, fingerprint: dict[str, Any], resume: bool) -> ckpt.TrainState:
    """The state to start from: the latest checkpoint's with `resume` (refused if the config changed since),
    else a fresh one, old checkpoints cleared."""
    restored = ckpt.load_latest(root) if resume else None
    if restored is None:
        if run.main and resume:
            console.print(f"no valid checkpoint in {root}; starting from step 0")
        if run.main and root.exists() and not resume:
            console.print(f"[yellow]replacing old checkpoints in {root}[/] (pass --resume to continue them)")
            shutil.rmtree(root, ignore_errors=True)
        state = ckpt.TrainState()
    else:
        changes = ckpt.config_changes(restored.fingerprint, fingerprint)
        if changes:
            raise TrainError(f"cannot resume from {restored.path}: the config changed since it was saved — "
                             + "; ".join(changes) + ". Restore those values or start fresh without --resume.")
        load_trainable_state(run.accelerator.unwrap_model(run.model), restored.tensors)
        run.optimizer.load_state_dict(restored.optimizer)
        run.scheduler.load_state_dict(restored.scheduler)
        state, run.best = restored.state, restored.best
        ckpt.restore_rng(restored)
        if run.main:
            console.print(f"resuming from {restored.path.name}: step {state.step}/{run.total_steps}, "
                          f"epoch {state.epoch + 1}, {state.tokens_seen:,} tokens seen")
    run.started = time.perf_counter() - state.seconds
    return state


def _announce(run: _Run, model_cfg: ModelConfig, memory) -> None:
    cfg, rows, world = run.cfg, run.rows, run.world
    trainable = sum(p.numel() for p in run.params)
    console.print(
        f"training {cfg.method} on {model_cfg.name}: {trainable:,} trainable parameters, {len(rows.train)} rows"
        f"{f' ({len(rows.general)} general)' if rows.general else ''}, batch {run.batch_size} × accum "
        f"{cfg.grad_accum}{f' × {world} processes' if world > 1 else ''}{' (FSDP)' if run.sharded else ''}, "
        f"{run.total_steps} steps on "
        f"{run.device.type}{', packed' if run.packed else ''}; memory plan {memory.describe()}"
    )


def _run_steps(run: _Run, state: ckpt.TrainState, root: Path, fingerprint: dict[str, Any]) -> None:
    """Epochs until the step budget, the epoch count or early stopping ends the run."""
    run.run_started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("training", total=run.total_steps, completed=state.step, info="", visible=run.main)
        run.progress = lambda info: bar.update(task, advance=1, info=info)
        while state.step < run.total_steps and not state.stopped_early and state.epoch < run.cfg.epochs:
            _run_epoch(run, state, root, fingerprint)


def _run_epoch(run: _Run, state: ckpt.TrainState, root: Path, fingerprint: dict[str, Any]) -> None:
    """The rest of the current epoch (from `state.micro`), one optimizer step per `grad_accum` micro-batches."""
    cfg = run.cfg
    micro = micro_batches(run.rows.train, epoch_order(len(run.rows.train), cfg.seed, state.epoch), run.batch_size)
    run.model.train()
    while state.micro < len(micro) and state.step < run.total_steps:
        group = [make_batch(rows, run.pad_id, run.packed, cfg.pack_length)
                 for rows in micro[state.micro : state.micro + cfg.grad_accum]]
        state.micro += len(group)
        n_targets = sum(count_targets(b) for b in group)
        if n_targets == 0:
            continue
        step_loss, grad_norm = _optimizer_step(run, group, n_targets, state.step)
        _record_step(run, state, group, n_targets, step_loss, grad_norm)
        end_of_epoch = state.micro >= len(micro)
        _after_step(run, state, end_of_epoch, root, fingerprint)
        if state.stopped_early or end_of_epoch:
            return
    if state.micro >= len(micro):
        state.epoch, state.micro = state.epoch + 1, 0


def _optimizer_step(run: _Run, group: list[dict[str, Any]], n_targets: int, step: int) -> tuple[float, float]:
    """One optimizer step over `group`, this step's micro-batches shared out over the processes:
    (the loss per target token of the whole step, the gradient norm before clipping)."""
    import torch

    accelerator, world = run.accelerator, run.world
    mine = shares(group, run.rank, world, even=run.sharded)
    ce_sum = torch.zeros((), device=run.device)
    for i, (batch, counts) in enumerate(mine):
        batch = to_device(batch, run.device)
        sync = contextlib.nullcontext() if i == len(mine) - 1 else accelerator.no_sync(run.model)
        with sync, torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32,
                                  enabled=run.amp_dtype is not None):
            loss, summed = _micro_loss(run, batch, world / n_targets if counts else 0.0, i == 0, step)
            accelerator.backward(loss)
        ce_sum += summed.detach() * (1 if counts else 0)
    step_loss = float(accelerator.reduce(ce_sum, "sum")) / n_targets
    grad_norm = float(accelerator.clip_grad_norm_(run.params, run.cfg.max_grad_norm))
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm


def _micro_loss(run: _Run, batch: dict[str, Any], scale: float, first: bool, step: int):
    """(the loss to back-propagate, the summed cross-entropy to report) of one micro-batch; the regularizers
    are added once per step, on its first micro-batch."""
    if run.distiller is None:
        summed = objective = batch_loss(run.model, batch)
    else:
        objective, summed = run.distiller.loss(run.model, batch)
    loss = objective * scale
    if run.kl is not None and first:
        loss = loss + run.kl.loss(run.model, step, run.device)
    if run.ewc is not None and first:
        loss = loss + run.ewc.loss()
    return loss, summed


def _record_step(run: _Run, state: ckpt.TrainState, group: list[dict[str, Any]], n_targets: int,
                 step_loss: float, grad_norm: float) -> None:
    """Count the step's tokens into `state`, and log it to the history, the tracker and the progress bar."""
    tokens = sum(real_tokens(b) for b in group)
    state.step += 1
    state.tokens_seen += tokens
    state.target_tokens_seen += n_targets
    run.run_tokens += tokens
    lr = run.scheduler.get_last_lr()[0]
    state.history.append({"step": state.step, "epoch": state.epoch, "loss": step_loss, "lr": lr,
                          "grad_norm": grad_norm, "tokens": state.tokens_seen})
    elapsed = time.perf_counter() - run.run_started
    tps = run.run_tokens / elapsed if elapsed > 0 else 0.0
    if run.tracker:
        run.tracker.log({"train/loss": step_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                         "train/tokens_per_second": tps}, state.step)
    run.progress(f"epoch {state.epoch + 1} loss {step_loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s")
    if run.on_step is not None:
        run.on_step({**state.history[-1], "tokens_per_second": tps, "total_steps": run.total_steps})


def _after_step(run: _Run, state: ckpt.TrainState, end_of_epoch: bool, root: Path,
                fingerprint: dict[str, Any]) -> None:
    """Validate when due, move to the next epoch at its end, checkpoint when due."""
    cfg = run.cfg
    due = (state.step % cfg.eval_every == 0) if cfg.eval_every else end_of_epoch
    if due or state.step == run.total_steps:
        run.best = _evaluate(state, _validate(run), cfg, run.model, run.accelerator, run.best, run.tracker,
                             run.on_eval)
        run.model.train()
    if end_of_epoch:
        state.epoch, state.micro = state.epoch + 1, 0
    state.seconds = time.perf_counter() - run.started
    if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
            and state.step < run.total_steps and not state.stopped_early):
        if run.main:
            ckpt.save_checkpoint(root, state, trainable_state(run.accelerator.unwrap_model(run.model)),
                                 run.optimizer, run.scheduler, fingerprint, run.best, cfg.keep_checkpoints)
        run.accelerator.wait_for_everyone()


def _validate(run: _Run) -> float | None:
    """Loss per target token on the validation split (None without one)."""
    if not run.rows.validation:
        return None
    val = evaluate_loss(run.model, run.rows.validation, run.pad_id, run.batch_size, run.packed, run.amp_dtype)
    return float(val["loss"])


def _keep_best(run: _Run, state: ckpt.TrainState, unwrapped) -> None:
    """With early stopping, put the best validation's weights back into the trained model."""
    if run.cfg.early_stopping_patience and run.best is not None:
        load_trainable_state(unwrapped, run.best)
        if run.main:
            console.print(f"kept the best weights: step {state.best_step}, validation loss {state.best_loss:.4f}")


def _whole_copy(run: _Run, method: TuningMethod, model_cfg: ModelConfig):
    """FSDP: the trained model whole, to write — a fresh copy of the method's model holding the weights
    gathered from every rank (collective); None on the other ranks. The sharded one stays as it is."""
    full = gathered_state(run.accelerator, run.model)
    if not run.main:
        return None
    model = make_trainable(method.load_base(model_cfg, run.cfg), run.cfg)
    missing, unexpected = model.load_state_dict(full, strict=False)
    if missing or unexpected:
        raise TrainError(f"the gathered FSDP weights do not fit a fresh {run.cfg.method} model: "
                         f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:1]})")
    return model


def _metrics(run: _Run, state: ckpt.TrainState, memory) -> dict[str, Any]:
    """What the artifact's manifest records of the run."""
    seconds = state.seconds or (time.perf_counter() - run.started)
    evals = state.evals
    return {
        "steps": state.step,
        "train_loss_first": state.history[0]["loss"] if state.history else None,
        "train_loss_last": state.history[-1]["loss"] if state.history else None,
        "val_loss": (state.best_loss if run.cfg.early_stopping_patience and state.best_loss is not None
                     else (evals[-1]["val_loss"] if evals else None)),
        "best_val_loss": state.best_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "epochs": evals,
        "train_seconds": round(seconds, 2),
        "tokens_seen": state.tokens_seen,
        "target_tokens_seen": state.target_tokens_seen,
        "tokens_per_second": round(state.tokens_seen / seconds, 1) if seconds else None,
        "trainable_parameters": sum(p.numel() for p in run.params),
        "batch_size": run.batch_size,
        "processes": run.world,
        "distributed": "FSDP" if run.sharded else str(run.accelerator.distributed_type).split(".")[-1],
        "memory_plan_gib": round(memory.total / 1024**3, 3),
    }


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
            unwrapped = accelerator.unwrap_model(model)
            best = (gathered_state(accelerator, model, {n for n, p in unwrapped.named_parameters() if p.requires_grad})
                    if is_sharded(model) else trainable_state(unwrapped))  # FSDP: every rank validates
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
                  state: ckpt.TrainState, metrics: dict[str, Any], packed: bool,
                  recipe: dict[str, Any] | None = None) -> Artifact:
    method = get_method(cfg.method)
    kind = output_kind(cfg.method)
    config = {"model": model_cfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json")}
    model = model if method.quantized_base else model.to("cpu")
    with create_artifact(output, kind, config=config, parents=[dataset.ref()]) as writer:
        method.save(model, tokenizer, writer.path)
        added = {t: tokenizer.convert_tokens_to_ids(t) for t in model_cfg.add_tokens}
        if added and kind == "adapter":  # the extended tokenizer travels with the adapter (a model saves its own)
            tokenizer.save_pretrained(writer.path)
        with open(writer.path / "history.jsonl", "w") as handle:
            for record in state.history:
                handle.write(json.dumps(record) + "\n")
        if state.history:
            _loss_curve(writer.path, state.history, state.evals)
        writer.metrics.update(metrics)
        base_ref = str(Path(model_cfg.name).absolute()) if Path(model_cfg.name).exists() else model_cfg.name
        writer.extra.update({"base_model": base_ref, "base_fingerprint": fingerprint(model_cfg.name),
                             "method": cfg.method, "packed": packed, "recipe": recipe,
                             **({"adapter_format": method.saves} if kind == "adapter" else {}),
                             **({"added_tokens": added, "base_vocab_size": min(added.values())} if added else {}),
                             "chat_template_hash": template_hash(tokenizer),
                             "tokenizer_hash": tokenizer_hash(tokenizer)})
    return load_artifact(output, kind=kind)
