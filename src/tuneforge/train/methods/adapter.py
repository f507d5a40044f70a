"""`adapter`: tuneforge's bottleneck adapters (`models/bottleneck.py`); PEFT has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.models import LoadedModel
from tuneforge.models.bottleneck import attach_bottleneck, save_bottleneck
from tuneforge.train.methods.parts import load_float_base


class Bottleneck:
    name = "adapter"
    saves = "bottleneck"
    merges = False  # it adds modules; there is no weight to fold it into
    plain_lora = False
    packs = True
    quantized_base = False
    low_rank = False
    trains_weights = False

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        return load_float_base(model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        return attach_bottleneck(loaded.model, cfg.adapter.bottleneck, cfg.adapter.dropout)

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        save_bottleneck(model, folder)


BOTTLENECK = Bottleneck()
