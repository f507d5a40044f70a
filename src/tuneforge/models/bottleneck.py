"""Bottleneck adapters (Houlsby et al., 2019): a small down→act→up block after each layer's MLP.

PEFT has no bottleneck adapter, so tuneforge carries this one. The up-projection starts at zero,
so a freshly attached adapter leaves the model's output unchanged. Saved as two files next to the
artifact manifest: `bottleneck_config.json` and `bottleneck_adapters.safetensors`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.core.errors import ModelLoadError

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck_adapters.safetensors"
_MLP = re.compile(r"(^|\.)(layers|h|blocks)\.\d+\.mlp$")


class BottleneckAdapter(nn.Module):
    """Wraps a layer's MLP: out = mlp(x) + up(dropout(act(down(mlp(x)))))."""

    def __init__(self, inner: nn.Module, hidden: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.inner = inner
        param = next(inner.parameters())
        self.adapter_down = nn.Linear(hidden, bottleneck, device=param.device)
        self.adapter_up = nn.Linear(bottleneck, hidden, device=param.device)
        self.adapter_dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x):
        out = self.inner(x)
        delta = self.adapter_up(self.adapter_dropout(torch.nn.functional.gelu(self.adapter_down(out))))
        return out + delta.to(out.dtype)


def mlp_names(model) -> list[str]:
    """Names of the per-layer MLP modules the adapters wrap."""
    return [name for name, _ in model.named_modules() if _MLP.search(name)]


def attach_bottleneck(model, bottleneck: int, dropout: float = 0.0):
    """Freeze `model` and wrap every decoder layer's MLP with a trainable bottleneck adapter."""
    names = mlp_names(model)
    if not names:
        raise ModelLoadError(
            f"{type(model).__name__}: no decoder-layer MLPs found (looked for modules named "
            "'layers.N.mlp', 'h.N.mlp' or 'blocks.N.mlp'); bottleneck adapters need one per layer"
        )
    hidden = model.config.hidden_size
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, BottleneckAdapter(getattr(parent, child), hidden, bottleneck, dropout))
    model.bottleneck_config = {"bottleneck": bottleneck, "dropout": dropout, "modules": names}
    return model


def bottleneck_state(model) -> dict[str, Any]:
    """Only the adapter tensors (names keep their place in the model)."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if ".adapter_" in k}


def save_bottleneck(model, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / CONFIG_FILE).write_text(json.dumps(model.bottleneck_config, indent=2) + "\n")
    save_file(bottleneck_state(model), str(folder / WEIGHTS_FILE))


def load_bottleneck(model, folder: str | Path):
    """Attach adapters to `model` and load their trained weights from `folder`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    attach_bottleneck(model, config["bottleneck"], config.get("dropout", 0.0))
    state = load_file(str(folder / WEIGHTS_FILE))
    missing = set(bottleneck_state(model)) - set(state)
    if missing:
        raise ModelLoadError(f"{folder}: adapter weights miss {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    model.load_state_dict(state, strict=False)
    return model
