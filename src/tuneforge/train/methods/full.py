"""`full`: every weight trains; the run writes a whole model artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.models import LoadedModel
from tuneforge.train.methods.parts import keep_zeros, load_float_base


class Full:
    name = "full"
    saves = "model"
    merges = False
    plain_lora = False
    packs = True
    quantized_base = False
    low_rank = False
    trains_weights = True

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        return load_float_base(model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        model = loaded.model
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.keep_sparsity:
            keep_zeros(model)
        return model

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


FULL = Full()
