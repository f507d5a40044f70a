"""What the formats that store quantized codes (int8, int4) share: swapping linear layers, loading codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.core.errors import ModelLoadError


def replace_linears(model: Any, make: Callable[[nn.Linear], nn.Module], skip: tuple[str, ...] = ()) -> list[str]:
    """Replace every nn.Linear whose name does not end with an entry of `skip` by `make(linear)`;
    returns the names replaced."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and not any(name.endswith(s) for s in skip)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))
    return names


def finish_quantized(model: Any) -> Any:
    """A model whose layers now hold codes: the rest in bf16, the head no longer tied to the embeddings."""
    model.to(torch.bfloat16).eval()
    model.config.tie_word_embeddings = False
    return model


def empty_model(path: Path) -> Any:
    """The architecture of the artifact at `path` (config.json), in bf16, weights not loaded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)


def load_codes(model: Any, path: Path) -> Any:
    """Load `model.safetensors` into a model whose quantized layers are empty shells."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise ModelLoadError(f"{path}: quantized weights do not match the architecture "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
