"""`qlora`: LoRA over a 4-bit NF4 base (bitsandbytes), which stays quantized and where it was placed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel
from tuneforge.models.loader import load_4bit
from tuneforge.train.methods.lora import lora_config, save_peft
from tuneforge.train.methods.parts import (
    TRAINS_NEW_TOKENS,
    check_targets,
    keep_4bit_differentiable,
    refuse_adapter_base,
)


class QLora:
    name = "qlora"
    saves = "peft"
    merges = True
    plain_lora = True
    packs = True
    quantized_base = True
    low_rank = True
    trains_weights = False

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        if model_cfg.add_tokens:
            raise ConfigError(f"model.add_tokens needs train.method {', '.join(TRAINS_NEW_TOKENS)} (got qlora): the "
                              "4-bit base is loaded ready-quantized, its embeddings are not resized here")
        loaded = load_4bit(model_cfg.name, compute_dtype="bfloat16" if cfg.precision == "bf16" else "float32")
        return refuse_adapter_base(loaded, model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        import peft

        model = loaded.model
        check_targets(model, cfg.lora.target_modules)
        keep_4bit_differentiable(model)
        # also enables gradient checkpointing, the 4-bit way
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        return peft.get_peft_model(model, lora_config(cfg))

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        save_peft(model, folder)


QLORA = QLora()
