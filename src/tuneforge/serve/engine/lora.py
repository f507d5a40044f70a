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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tuneforge.models.lora import adapter_targets


@dataclass
class StepAdapters:
    """Which rows of the step's flattened tokens belong to which adapter (set by the runner per step)."""

    rows: dict[str, Any] = field(default_factory=dict)  # adapter name → LongTensor of row indices


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
        wrapper = MultiLoRALinear(module, self.step)
        setattr(self.decoder.get_submodule(parent_name), child, wrapper)
        self._wrappers[module_name] = wrapper
        return wrapper

    def load(self, name: str, path: str | Path, dtype: Any, device: Any) -> None:
        """Add adapter `name`; checks every target module exists and shapes match before touching the model."""

        def lookup(module_name: str):
            module = self._wrappers.get(module_name) or self.decoder.get_submodule(module_name)
            return getattr(module, "base", module)

        targets = {module_name: (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype), scale)
                   for module_name, _, a, b, scale in adapter_targets(self.decoder, path, lookup)}
        for module_name, triple in targets.items():
            self._wrapper(module_name).adapters[name] = triple
        self.names.append(name)

    def unload(self, name: str) -> None:
        for wrapper in self._wrappers.values():
            wrapper.adapters.pop(name, None)
        self.names.remove(name)
