"""Multi-LoRA: many LoRA adapters over one base model, mixed in one batch step.

Each targeted linear layer is wrapped once; the wrapper keeps every loaded adapter's A, B and scale
and adds, for the tokens of each adapter present in the step, (x_rows @ Aᵀ @ Bᵀ) · scale (the
S-LoRA / punica idea, grouped per adapter rather than a custom kernel: with a handful of adapters
per step, one small matmul pair per adapter and layer). Tokens of the base model get nothing added.

Adapters come from tuneforge `adapter` artifacts made with method lora/qlora (PEFT format); the
artifact's base fingerprint must match the served base. DoRA, IA3 and prompt-learning adapters
change more than an additive low-rank term: merge them (`tuneforge compress merge`) or serve alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class StepAdapters:
    """Which rows of the step's flattened tokens belong to which adapter (set by the runner per step)."""

    rows: dict[str, Any] = field(default_factory=dict)  # adapter name → LongTensor of row indices


def _wrapper_class():
    from torch import nn

    class MultiLoRALinear(nn.Module):
        """base(x) plus each step adapter's low-rank update on its own rows."""

        def __init__(self, base: nn.Module, step: StepAdapters) -> None:
            super().__init__()
            self.base = base
            self.step = step
            self.adapters: dict[str, tuple[Any, Any, float]] = {}

        def forward(self, x):
            y = self.base(x)
            if not self.step.rows or not self.adapters:
                return y
            flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.view(-1, y.shape[-1])
            for name, rows in self.step.rows.items():
                weights = self.adapters.get(name)
                if weights is None:
                    continue
                a, b, scale = weights
                update = (flat_x.index_select(0, rows).to(a.dtype) @ a.T @ b.T) * scale
                flat_y.index_add_(0, rows, update.to(flat_y.dtype))
            return y

    return MultiLoRALinear


def read_adapter(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[Any, Any, float]]]:
    """(adapter config, module name → (A, B, scale)) from a LoRA adapter folder or artifact."""
    from safetensors.torch import load_file

    folder = Path(path)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder}: not a LoRA adapter (no adapter_config.json)")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise ValueError(f"{folder}: a {kind} adapter cannot be served as one of many LoRAs; merge it into its "
                         "base (tuneforge compress merge) or serve it on its own")
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match:
            pairs.setdefault(match["module"], {})[match["ab"]] = tensor
    weights = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{folder}: {module} has lora_{'A' if 'A' in ab else 'B'} only")
        weights[module] = (ab["A"], ab["B"], scale)
    if not weights:
        raise ValueError(f"{folder}: adapter_model.safetensors holds no LoRA weights")
    return config, weights


class MultiLoRA:
    """The adapters served over one base model (`decoder`: the bare *ForCausalLM)."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.step = StepAdapters()
        self.names: list[str] = []
        self._wrappers: dict[str, Any] = {}

    def _wrapper(self, module_name: str):
        if module_name in self._wrappers:
            return self._wrappers[module_name]
        try:
            module = self.decoder.get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"the served model has no module {module_name!r}") from None
        parent_name, _, child = module_name.rpartition(".")
        wrapper = _wrapper_class()(module, self.step)
        setattr(self.decoder.get_submodule(parent_name), child, wrapper)
        self._wrappers[module_name] = wrapper
        return wrapper

    def load(self, name: str, path: str | Path, dtype: Any, device: Any) -> None:
        """Add adapter `name`; checks every target module exists and shapes match before touching the model."""
        _, weights = read_adapter(path)
        targets = {}
        for module_name, (a, b, scale) in weights.items():
            try:
                module = self._wrappers.get(module_name) or self.decoder.get_submodule(module_name)
            except AttributeError:
                raise ValueError(f"{path}: targets {module_name!r}, which the served model does not have "
                                 "(adapter for another architecture?)") from None
            base = getattr(module, "base", module)
            in_f, out_f = getattr(base, "in_features", None), getattr(base, "out_features", None)
            if (in_f, out_f) != (a.shape[1], b.shape[0]):
                raise ValueError(f"{path}: {module_name} is {in_f}→{out_f} in the served model but "
                                 f"{a.shape[1]}→{b.shape[0]} in the adapter (another base model?)")
            targets[module_name] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype), scale)
        for module_name, triple in targets.items():
            self._wrapper(module_name).adapters[name] = triple
        self.names.append(name)

    def unload(self, name: str) -> None:
        for wrapper in self._wrappers.values():
            wrapper.adapters.pop(name, None)
        self.names.remove(name)
