"""`prompt_tuning` and `prefix_tuning` through PEFT: trained virtual tokens, so rows cannot be packed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.models import LoadedModel
from tuneforge.train.methods.lora import save_peft
from tuneforge.train.methods.parts import init_soft_prompt, load_float_base


class SoftPrompt:
    """Virtual tokens before the input (`prompt_tuning`) or per-layer key/value prefixes (`prefix_tuning`)."""

    saves = "peft"
    merges = False  # virtual tokens are not a weight update
    plain_lora = False
    packs = False
    quantized_base = False
    low_rank = False
    trains_weights = False

    def __init__(self, name: str, prefix: bool) -> None:
        self.name = name
        self.prefix = prefix

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        return load_float_base(model_cfg)

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        import peft

        n = cfg.prompt.num_virtual_tokens
        if self.prefix:
            return peft.get_peft_model(loaded.model, peft.PrefixTuningConfig(num_virtual_tokens=n,
                                                                             task_type="CAUSAL_LM"))
        init = cfg.prompt.init_text
        config = peft.PromptTuningConfig(
            num_virtual_tokens=n, task_type="CAUSAL_LM", prompt_tuning_init="TEXT" if init else "RANDOM",
            prompt_tuning_init_text=init, tokenizer_name_or_path=None,
        )
        if init:
            # PEFT would fetch the tokenizer by name; hand it ours by tokenizing here instead.
            config.prompt_tuning_init = "RANDOM"
        model = peft.get_peft_model(loaded.model, config)
        if init:
            init_soft_prompt(model, loaded.tokenizer, init, n)
        return model

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        save_peft(model, folder)


PROMPT_TUNING = SoftPrompt("prompt_tuning", prefix=False)
PREFIX_TUNING = SoftPrompt("prefix_tuning", prefix=True)
