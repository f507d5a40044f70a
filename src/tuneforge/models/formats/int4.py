"""`int4`: weight-only, 4-bit asymmetric codes with one bf16 scale and zero per `compress.group_size` inputs.

The vocabulary head stays int8, as llama.cpp's 4-bit types keep output.weight at 6-8 bits: on SmolLM2
an int4 head alone moves the mean |Δlogit| from 0.16 to 0.42 and changes answers. The layers are
`models/int4.py`'s Int4Linear (and Int8Linear for the head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.core.errors import CompressError
from tuneforge.models.formats.codes import empty_model, finish_quantized, load_codes, replace_linears
from tuneforge.models.formats.int8 import int8_codes, int8_shell
from tuneforge.models.formats.protocol import spec_from_json
from tuneforge.models.int4 import DEFAULT_GROUP_SIZE, Int4Linear

KEPT_AT_INT8 = ("lm_head",)


@dataclass
class Int4Spec:
    method: str = "int4-weight-only"
    bits: int = 4
    group_size: int = DEFAULT_GROUP_SIZE
    symmetric: bool = False
    compute_dtype: str = "bfloat16"
    modules: list[str] = field(default_factory=list)
    int8_modules: list[str] = field(default_factory=list)
    adapter: dict[str, Any] | None = None  # a LoRA adapter kept unmerged on top (compress quantize ADAPTER)
    format: str = "int4"


class Int4:
    kind = "int4"
    stores_codes = True
    keeps_adapter = True

    def create_quantized(self, model: Any, group_size: int) -> tuple[Any, Int4Spec]:
        try:
            names = replace_linears(model, lambda linear: Int4Linear.from_linear(linear, torch.bfloat16, group_size),
                                    skip=KEPT_AT_INT8)
        except ValueError as exc:
            raise CompressError(f"int4: {exc}; set compress.group_size to a divisor of every layer's input "
                                "size") from exc
        int8_names = replace_linears(model, int8_codes)
        return finish_quantized(model), Int4Spec(group_size=group_size, modules=names, int8_modules=int8_names)

    def spec_from_json(self, data: dict[str, Any]) -> Int4Spec:
        return spec_from_json(Int4Spec, data)

    def convert_for_runtime(self, path: Path, spec: Int4Spec) -> Any:
        model = empty_model(path)
        replace_linears(model, lambda linear: Int4Linear(linear.in_features, linear.out_features,
                                                         linear.bias is not None, torch.bfloat16, spec.group_size),
                        skip=tuple(spec.int8_modules))
        replace_linears(model, int8_shell)  # what is left: the head
        return load_codes(model, path)


INT4 = Int4()
