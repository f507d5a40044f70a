"""`lora` and `dora` through PEFT: low-rank updates of the target linear layers, mergeable into the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel
from tuneforge.train.methods.parts import check_targets, load_float_base


def lora_config(cfg: TrainConfig, use_dora: bool = False, new_token_ids: list[int] | None = None) -> Any:
    """PEFT's LoraConfig from `train.lora`; `new_token_ids` (added tokens) train their embedding rows too."""
    import peft

    lora = cfg.lora
    extra: dict[str, Any] = {}
    if new_token_ids:
        if "trainable_token_indices" not in peft.LoraConfig.__dataclass_fields__:
            raise ConfigError(f"model.add_tokens with train.method lora needs PEFT >= 0.15 (trainable_token_indices, "
                              f"which trains only the new rows); this is PEFT {peft.__version__}: upgrade it, or use "
                              "train.method full")
        # Only the new rows train (PEFT keeps a copy of just those rows); with tied weights (SmolLM2) PEFT ties
        # the output head's rows to the same copy, so input and output stay one tensor, as in the base.
        extra["trainable_token_indices"] = sorted(new_token_ids)  # a list: the input embedding, whatever its name
    return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           target_modules=lora.target_modules, use_dora=use_dora, task_type="CAUSAL_LM", **extra)


def save_peft(model: Any, folder: Path) -> None:
    """PEFT's adapter files (adapter_config.json, adapter_model.safetensors)."""
    model.save_pretrained(folder)


class Lora:
    saves = "peft"
    merges = True
    packs = True
    quantized_base = False
    low_rank = True
    trains_weights = False

    def __init__(self, name: str, use_dora: bool) -> None:
        self.name = name
        self.use_dora = use_dora
        # DoRA rescales each weight's direction: more than an additive low-rank term
        self.plain_lora = not use_dora

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        return load_float_base(model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        import peft

        check_targets(loaded.model, cfg.lora.target_modules)
        added = loaded.info.get("added_tokens") or {}
        return peft.get_peft_model(loaded.model, lora_config(cfg, self.use_dora, list(added.values())))

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        save_peft(model, folder)


LORA = Lora("lora", use_dora=False)
DORA = Lora("dora", use_dora=True)
