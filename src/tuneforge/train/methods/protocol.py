"""What a tuning method is: the one contract every `train/methods/<name>.py` implements.

Callers (the training recipe, the search, merge, quantize) ask the method object these questions
instead of comparing its name; a new method is one new module plus one line in the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from tuneforge.core.config import ModelConfig, TrainConfig
from tuneforge.models import LoadedModel

# What an artifact of the method holds: a whole Hugging Face model, PEFT's adapter files, or
# tuneforge's bottleneck adapter files (`models/bottleneck.py`).
Saves = Literal["model", "peft", "bottleneck"]


class TuningMethod(Protocol):
    """A fine-tuning method: how the model becomes trainable and what the run leaves behind."""

    name: str
    saves: Saves
    merges: bool  # `compress merge` can fold the update into the base weights
    plain_lora: bool  # an additive low-rank update: multi-LoRA serving and a quantized base take it unmerged
    packs: bool  # rows may be packed into one sequence (false where virtual tokens change the input)
    quantized_base: bool  # trains over a 4-bit base that bitsandbytes places and that stays where it is
    low_rank: bool  # has a LoRA rank, alpha and dropout for `--search` to tune
    trains_weights: bool  # updates the weights themselves (so `train.keep_sparsity` can hold their zeros)

    def load_base(self, model_cfg: ModelConfig, cfg: TrainConfig) -> LoadedModel:
        """The base model in the form this method trains."""
        ...

    def make_trainable(self, loaded: LoadedModel, cfg: TrainConfig) -> Any:
        """Wrap or unfreeze `loaded.model`; return the model whose trainable parameters are trained."""
        ...

    def save(self, model: Any, tokenizer: Any, folder: Path) -> None:
        """Write the trained weights in the form the loader reads back."""
        ...
