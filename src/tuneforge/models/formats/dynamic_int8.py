"""`dynamic-int8` (CPU): int8 per-channel weights, activations quantized per tensor at run time.

PyTorch's x86 int8 GEMM does the matmul. Nothing of it is stored: the artifact keeps float weights
and `quantization.json` says to apply this at load, so the same file also serves bf16 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.models.formats.protocol import spec_from_json


@dataclass
class DynamicInt8Spec:
    method: str = "dynamic-int8"
    bits: int = 8
    group_size: str = "per-output-channel"
    symmetric: bool = True
    activations: str = "int8 per tensor, at run time"
    compute_dtype: str = "float32"
    modules: list[str] = field(default_factory=list)
    format: str = "dynamic-int8"


def quantize_dynamic_int8(model) -> list[str]:
    """Give every nn.Linear of `model` dynamic int8 in place; returns the names replaced."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    model.float()
    quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return names


class DynamicInt8:
    kind = "dynamic-int8"
    stores_codes = False
    keeps_adapter = False

    def create_quantized(self, model: Any, group_size: int) -> tuple[Any, DynamicInt8Spec]:
        return model, DynamicInt8Spec(modules=quantize_dynamic_int8(model))

    def spec_from_json(self, data: dict[str, Any]) -> DynamicInt8Spec:
        return spec_from_json(DynamicInt8Spec, data)

    def convert_for_runtime(self, path: Path, spec: DynamicInt8Spec) -> Any:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        quantize_dynamic_int8(model)
        return model


DYNAMIC_INT8 = DynamicInt8()
