"""Parts the tuning methods share: loading the base, checking target modules, trainable state."""

from __future__ import annotations

from typing import Any

from tuneforge.core.config import ModelConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel, load
from tuneforge.models.tokens import extend_model

# Methods that train the embedding rows of `model.add_tokens`: full (every weight) and the PEFT LoRA family
# (PEFT's trainable tokens). The others would leave the new rows at their initial mean: refused.
TRAINS_NEW_TOKENS = ("full", "lora", "dora")


def refuse_adapter_base(loaded: LoadedModel, model_cfg: ModelConfig) -> LoadedModel:
    """`loaded`, unless it is an adapter artifact: methods train from a base model."""
    if loaded.source == "artifact-adapter":
        raise ConfigError(f"model.name: {model_cfg.name} is an adapter; train from its base model instead")
    return loaded


def load_float_base(model_cfg: ModelConfig) -> LoadedModel:
    """The base model as it is stored, in `model.dtype` (what every method but qlora trains), with
    `model.add_tokens` added to its tokenizer and embeddings (their ids in `info["added_tokens"]`)."""
    loaded = refuse_adapter_base(load(model_cfg.name, dtype=model_cfg.dtype), model_cfg)
    if model_cfg.add_tokens:
        loaded.info["added_tokens"] = extend_model(loaded.model, loaded.tokenizer, model_cfg.add_tokens)
    return loaded


def linear_module_names(model) -> list[str]:
    """Distinct leaf names of the model's linear layers (what target_modules may name)."""
    from torch import nn

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__.startswith("Linear"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def check_targets(model, targets: str | list[str]) -> None:
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


def init_soft_prompt(model, tokenizer, text: str, n: int) -> None:
    """Initialise the soft prompt from `text`'s token embeddings, repeated to `n` tokens."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    ids = (ids * (n // len(ids) + 1))[:n]
    embeddings = model.get_input_embeddings()(torch.tensor(ids)).detach().clone()
    encoder = model.prompt_encoder[model.active_adapter]
    encoder.embedding.weight.data.copy_(embeddings)


def trainable_parameters(model) -> list:
    """The parameters the optimizer updates."""
    return [p for p in model.parameters() if p.requires_grad]


def trainable_state(model) -> dict[str, Any]:
    """Tensors of the trainable parameters (what a checkpoint must hold), by name."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, Any]) -> None:
    """Copy a checkpoint's trainable tensors back into `model`; refuse one that lacks any."""
    import torch

    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))
