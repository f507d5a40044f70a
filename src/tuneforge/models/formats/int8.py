"""`int8`: weight-only, one bf16 scale per output channel, every linear layer (the head included).

Embeddings and norms stay bf16. The artifact holds `model.safetensors` with the int8 tensors,
`config.json`, the tokenizer and `quantization.json`; the layers are `models/int8.py`'s Int8Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.models.formats.codes import empty_model, finish_quantized, load_codes, replace_linears
from tuneforge.models.formats.protocol import spec_from_json
from tuneforge.models.int8 import Int8Linear


@dataclass
class Int8Spec:
    method: str = "int8-weight-only"
    bits: int = 8
    group_size: str = "per-output-channel"
    symmetric: bool = True
    compute_dtype: str = "bfloat16"
    modules: list[str] = field(default_factory=list)
    int8_modules: list[str] = field(default_factory=list)
    adapter: dict[str, Any] | None = None  # a LoRA adapter kept unmerged on top (compress quantize ADAPTER)
    format: str = "int8"


def int8_codes(linear) -> Int8Linear:
    return Int8Linear.from_linear(linear, torch.bfloat16)


def int8_shell(linear) -> Int8Linear:
    return Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, torch.bfloat16)


class Int8:
    kind = "int8"
    stores_codes = True
    keeps_adapter = True

    def create_quantized(self, model: Any, group_size: int) -> tuple[Any, Int8Spec]:
        names = replace_linears(model, int8_codes)
        return finish_quantized(model), Int8Spec(modules=names)

    def spec_from_json(self, data: dict[str, Any]) -> Int8Spec:
        return spec_from_json(Int8Spec, data)

    def convert_for_runtime(self, path: Path, spec: Int8Spec) -> Any:
        model = empty_model(path)
        replace_linears(model, int8_shell)
        return load_codes(model, path)


INT8 = Int8()
