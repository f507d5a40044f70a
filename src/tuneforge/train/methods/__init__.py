"""Fine-tuning methods, one module each, all implementing `TuningMethod` (protocol.py).

Everything PEFT has goes through PEFT (lora, dora, qlora, ia3, prompt_tuning, prefix_tuning);
bottleneck adapters are tuneforge's own (`models/bottleneck.py`); `full` trains every weight.
`method(name)` gives the object to ask; the free functions below are the older entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from tuneforge.core.config import TRAIN_METHODS, ModelConfig, TrainConfig, TrainMethod
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel
from tuneforge.train.methods.adapter import BOTTLENECK
from tuneforge.train.methods.full import FULL
from tuneforge.train.methods.ia3 import IA3_METHOD
from tuneforge.train.methods.lora import DORA, LORA
from tuneforge.train.methods.parts import (
    TRAINS_NEW_TOKENS,
    check_targets,
    keep_4bit_differentiable,
    keep_zeros,
    linear_module_names,
    load_trainable_state,
    trainable_parameters,
    trainable_state,
)
from tuneforge.train.methods.prompt import PREFIX_TUNING, PROMPT_TUNING
from tuneforge.train.methods.protocol import TuningMethod
from tuneforge.train.methods.qlora import QLORA

METHODS: dict[str, TuningMethod] = {m.name: m for m in (FULL, LORA, DORA, QLORA, BOTTLENECK, PROMPT_TUNING,
                                                         PREFIX_TUNING, IA3_METHOD)}
if set(METHODS) != set(get_args(TrainMethod)):  # pragma: no cover - caught by any import
    raise RuntimeError(f"train.method values without a module: {set(get_args(TrainMethod)) - set(METHODS)}")

# Methods that change the input sequence (virtual tokens) cannot be packed.
SOFT_PROMPT = tuple(name for name, m in METHODS.items() if not m.packs)


def method(name: str) -> TuningMethod:
    """The method called `name` (a `train.method` value)."""
    if name not in METHODS:
        raise ConfigError(f"train.method: unknown method {name!r}; choose one of {', '.join(TRAIN_METHODS)}")
    return METHODS[name]


def load_base(model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
    """The base model in the form the method trains (4-bit NF4 for qlora)."""
    return method(cfg.method).load_base(model_cfg, cfg)


def make_trainable(loaded: LoadedModel, cfg: TrainConfig) -> Any:
    """Wrap the base model for `cfg.method`; return the model whose trainable parameters are trained."""
    chosen = method(cfg.method)
    if cfg.keep_sparsity and not chosen.trains_weights:
        raise ConfigError(f"train.keep_sparsity needs train.method full (got {cfg.method}): an adapter's update is "
                          "dense, merging it would fill the pruned zeros")
    if loaded.info.get("added_tokens") and chosen.name not in TRAINS_NEW_TOKENS:
        raise ConfigError(f"model.add_tokens needs train.method {', '.join(TRAINS_NEW_TOKENS)} (got {cfg.method}): "
                          f"{cfg.method} cannot train the new tokens' embedding rows, they would stay untrained")
    return chosen.make_trainable(loaded, cfg)


def output_kind(name: str) -> str:
    """The artifact kind a method writes: `model` for a whole model (`full`), `adapter` otherwise."""
    return "model" if method(name).saves == "model" else "adapter"


def save_trained(model: Any, tokenizer: Any, name: str, folder: Path) -> None:
    """Write the trained weights in the form the loader reads back."""
    method(name).save(model, tokenizer, folder)


__all__ = [
    "METHODS", "SOFT_PROMPT", "TRAINS_NEW_TOKENS", "TuningMethod", "check_targets", "keep_4bit_differentiable",
    "keep_zeros", "linear_module_names", "load_base", "load_trainable_state", "make_trainable", "method", "output_kind",
    "save_trained", "trainable_parameters", "trainable_state",
]
