"""`ia3` through PEFT: learned scales of attention keys/values and the MLP's down-projection input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import LoadedModel
from tuneforge.train.methods.lora import save_peft
from tuneforge.train.methods.parts import check_targets, linear_module_names, load_float_base


def ia3_targets(model, targets: str | list[str]) -> tuple[list[str], list[str]]:
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


class IA3:
    name = "ia3"
    saves = "peft"
    merges = True
    plain_lora = False
    packs = True
    quantized_base = False
    low_rank = False
    trains_weights = False

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        return load_float_base(model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        import peft

        targets, feedforward = ia3_targets(loaded.model, cfg.lora.target_modules)
        check_targets(loaded.model, targets)
        config = peft.IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")
        return peft.get_peft_model(loaded.model, config)

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        save_peft(model, folder)


IA3_METHOD = IA3()
