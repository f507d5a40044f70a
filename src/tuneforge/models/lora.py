"""LoRA adapters without PEFT: read PEFT's files, and add an adapter to any linear-like module by a hook.

PEFT wraps `nn.Linear` (and bitsandbytes layers) only; tuneforge's int8/int4 layers are neither. An
adapter kept *unmerged* over a quantized base (QLoRA's inference setting: `tuneforge compress quantize
ADAPTER --method int4`) is attached here instead: a forward hook on each targeted module adds
(x Aᵀ Bᵀ)·scale to its output. The model's modules, names and state dict are unchanged, so the
quantized weights save and load as before and the adapter travels as PEFT's own two files.
The serving engine's multi-LoRA reads adapters with the same `read_adapter`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


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
        raise ValueError(f"{folder}: a {kind} adapter is more than an additive low-rank update; merge it into its "
                         "base (tuneforge compress merge) or serve it on its own")
    if config.get("trainable_token_indices"):
        raise ValueError(f"{folder}: the adapter added tokens to the vocabulary (trained embedding rows, PEFT's "
                         "trainable_token_indices), which a shared base does not have; serve it as the model "
                         "(tuneforge serve ADAPTER) or merge it (tuneforge compress merge)")
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


def adapter_targets(decoder: Any, path: str | Path, lookup: Callable[[str], Any] | None = None
                    ) -> list[tuple[str, Any, Any, Any, float]]:
    """The adapter at `path` as (module name, module, A, B, scale) for each targeted module of `decoder`
    (the bare *ForCausalLM), every name and shape checked. `lookup(name)` finds a module where the
    caller has wrapped some (default: `decoder.get_submodule`)."""
    _, weights = read_adapter(path)
    targets = []
    for name, (a, b, scale) in weights.items():
        try:
            module = (lookup or decoder.get_submodule)(name)
        except AttributeError:
            raise ValueError(f"{path}: targets {name!r}, which the served model does not have "
                             "(adapter for another architecture?)") from None
        shape = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if shape != (a.shape[1], b.shape[0]):
            raise ValueError(f"{path}: {name} is {shape[0]}→{shape[1]} in the served model but "
                             f"{a.shape[1]}→{b.shape[0]} in the adapter (another base model?)")
        targets.append((name, module, a, b, scale))
    return targets


def attach_adapter(decoder: Any, path: str | Path) -> list[str]:
    """Add the LoRA adapter at `path` to `decoder` with forward hooks; returns the module names it targets.
    Every target and shape is checked before any hook is added. The update is computed in float32
    whatever the base's dtype: its matmuls are tiny, and on CPU float32 ran them 1.5-3× faster than
    bf16 (docs/benchmarks.md)."""
    targets = adapter_targets(decoder, path)
    for _, module, a, b, scale in targets:
        module.lora_update = (a.float().contiguous(), (b.float() * scale).contiguous())
        module.register_forward_hook(_lora_hook)
    return [name for name, *_ in targets]


def lora_delta(x: Any, a: Any, b: Any) -> Any:
    """(x Aᵀ) Bᵀ in float32, returned in x's dtype."""
    from torch.nn.functional import linear

    return linear(linear(x.float(), a), b).to(x.dtype)


def _lora_hook(module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
    return output + lora_delta(inputs[0], *module.lora_update).to(output.dtype)


def attached_lora(module: Any) -> tuple[Any, Any] | None:
    """(A, B·scale) when `module`'s only hook is an adapter attached by `attach_adapter`, else None."""
    hooks = list(module._forward_hooks.values())
    if hooks == [_lora_hook] and not module._forward_pre_hooks:
        return module.lora_update
    return None
