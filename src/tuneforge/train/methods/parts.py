"""Fine-tuning methods: what is trainable and how the result is saved.

Everything PEFT has goes through PEFT (lora, dora, qlora, ia3, prompt_tuning, prefix_tuning);
bottleneck adapters are tuneforge's own (`models/bottleneck.py`); `full` trains every weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import TRAIN_METHODS, ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel, load
from tuneforge.models.bottleneck import attach_bottleneck, save_bottleneck
from tuneforge.models.loader import load_4bit

# Methods that change the input sequence (virtual tokens) cannot be packed.
SOFT_PROMPT = ("prompt_tuning", "prefix_tuning")


def load_base(model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
    """The base model in the form the method trains (4-bit NF4 for qlora)."""
    if cfg.method not in TRAIN_METHODS:
        raise ConfigError(f"train.method: unknown method {cfg.method!r}; choose one of {', '.join(TRAIN_METHODS)}")
    if cfg.method == "qlora":
        loaded = load_4bit(model_cfg.name, compute_dtype="bfloat16" if cfg.precision == "bf16" else "float32")
    else:
        loaded = load(model_cfg.name, dtype=model_cfg.dtype)
    if loaded.source == "artifact-adapter":
        raise ConfigError(f"model.name: {model_cfg.name} is an adapter; train from its base model instead")
    return loaded


def linear_module_names(model) -> list[str]:
    """Distinct leaf names of the model's linear layers (what target_modules may name)."""
    from torch import nn

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__.startswith("Linear"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _check_targets(model, targets: str | list[str]) -> None:
    if targets == "all-linear":
        return
    wanted = [targets] if isinstance(targets, str) else list(targets)
    known = linear_module_names(model)
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise ConfigError(
            f"train.lora.target_modules: {', '.join(map(repr, unknown))} not in the model; "
            f"its linear modules are: {', '.join(known)} (or use 'all-linear')"
        )


def _ia3_targets(model, targets: str | list[str]) -> tuple[list[str], list[str]]:
    """IA3 scales attention keys/values and the MLP's down-projection input by default."""
    known = linear_module_names(model)
    if targets != "all-linear":
        wanted = [targets] if isinstance(targets, str) else list(targets)
        return wanted, [t for t in wanted if t in ("down_proj", "fc2", "c_proj", "w2")]
    chosen = [n for n in ("k_proj", "v_proj", "down_proj") if n in known]
    if not chosen:
        raise ConfigError(f"train.method ia3: no k_proj/v_proj/down_proj here; set train.lora.target_modules "
                          f"from: {', '.join(known)}")
    return chosen, [n for n in chosen if n == "down_proj"]


def keep_zeros(model) -> int:
    """Mask the gradient of every linear weight where the weight is exactly zero, so that a pruned model's
    zeros survive training (AdamW then never moves them: zero gradient, zero moments, decoupled decay
    of zero). Returns how many weights are held at zero."""
    from torch import nn

    held = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            keep = module.weight.detach() != 0
            zeros = keep.numel() - int(keep.sum())
            if zeros:
                module.weight.register_hook(lambda grad, keep=keep: grad * keep)
                held += zeros
    return held


def make_trainable(loaded: LoadedModel, cfg: TrainConfig):
    """Wrap the base model for `cfg.method`; return the model whose trainable parameters are trained."""
    model = loaded.model
    method = cfg.method
    if cfg.keep_sparsity and method != "full":
        raise ConfigError(f"train.keep_sparsity needs train.method full (got {method}): an adapter's update is "
                          "dense, merging it would fill the pruned zeros")
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.keep_sparsity:
            keep_zeros(model)
        return model
    if method == "adapter":
        return attach_bottleneck(model, cfg.adapter.bottleneck, cfg.adapter.dropout)

    import peft

    lora = cfg.lora
    if method in ("lora", "dora", "qlora"):
        _check_targets(model, lora.target_modules)
        if method == "qlora":
            keep_4bit_differentiable(model)
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        config: Any = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                      target_modules=lora.target_modules, use_dora=method == "dora",
                                      task_type="CAUSAL_LM")
    elif method == "ia3":
        targets, feedforward = _ia3_targets(model, lora.target_modules)
        _check_targets(model, targets)
        config = peft.IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")
    elif method == "prompt_tuning":
        init = cfg.prompt.init_text
        config = peft.PromptTuningConfig(
            num_virtual_tokens=cfg.prompt.num_virtual_tokens, task_type="CAUSAL_LM",
            prompt_tuning_init="TEXT" if init else "RANDOM", prompt_tuning_init_text=init,
            tokenizer_name_or_path=None,
        )
        if init:
            # PEFT would fetch the tokenizer by name; hand it ours by tokenizing here instead.
            config.prompt_tuning_init = "RANDOM"
        model = peft.get_peft_model(model, config)
        if init:
            _init_soft_prompt(model, loaded.tokenizer, init, cfg.prompt.num_virtual_tokens)
        return model
    elif method == "prefix_tuning":
        config = peft.PrefixTuningConfig(num_virtual_tokens=cfg.prompt.num_virtual_tokens, task_type="CAUSAL_LM")
    else:  # pragma: no cover - guarded by the config's Literal
        raise ConfigError(f"train.method: unknown method {method!r}")
    return peft.get_peft_model(model, config)


def keep_4bit_differentiable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during training.

    bitsandbytes ≥ 0.49 converts a Linear4bit's weight to an AVX512-BF16 layout the first time it
    runs in eval mode without gradients (our validation pass), and from then on uses a kernel with
    no autograd: gradients stop flowing through every frozen 4-bit layer, silently. Turning the
    conversion off keeps QLoRA on CPU correct after the first validation.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _init_soft_prompt(model, tokenizer, text: str, n: int) -> None:
    """Initialise the soft prompt from `text`'s token embeddings, repeated to `n` tokens."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    ids = (ids * (n // len(ids) + 1))[:n]
    embeddings = model.get_input_embeddings()(torch.tensor(ids)).detach().clone()
    encoder = model.prompt_encoder[model.active_adapter]
    encoder.embedding.weight.data.copy_(embeddings)


def trainable_parameters(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def output_kind(method: str) -> str:
    """`full` writes a model artifact; every other method an adapter artifact."""
    return "model" if method == "full" else "adapter"


def save_trained(model, tokenizer, method: str, folder: Path) -> None:
    """Write the trained weights in the form the loader reads back."""
    if method == "full":
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    elif method == "adapter":
        save_bottleneck(model, folder)
    else:
        model.save_pretrained(folder)


def trainable_state(model) -> dict[str, Any]:
    """Tensors of the trainable parameters (what a checkpoint must hold), by name."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))
