"""`nf4`: bitsandbytes NF4 (QLoRA's format: double-quantized, blocks of 64), applied at load.

The artifact keeps float weights; `quantization.json` says to load them as NF4: the 4-bit route
for CUDA users, which bitsandbytes' CPU backend (≥ 0.48) also runs. QLoRA's base loads this way too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.errors import ModelLoadError
from tuneforge.models.formats.protocol import spec_from_json


@dataclass
class NF4Spec:
    method: str = "nf4"
    bits: int = 4
    group_size: int = 64
    double_quant: bool = True
    library: str = "bitsandbytes"
    compute_dtype: str = "bfloat16"
    modules: list[str] = field(default_factory=list)
    format: str = "nf4"


def load_nf4(folder: str | Path, compute_dtype: str = "bfloat16") -> Any:
    """The Hugging Face model in `folder` with its linear weights in NF4 (on CUDA where there is one)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("4-bit loading needs bitsandbytes: pip install 'bitsandbytes>=0.48'") from exc
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map=device_map)


def nf4_from_float(model: Any, compute_dtype: str = "bfloat16") -> Any:
    """A float model in memory, reloaded with NF4 weights (through a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="tuneforge-4bit-") as tmp:
        model.save_pretrained(tmp)
        return load_nf4(tmp, compute_dtype)


class NF4:
    kind = "nf4"
    stores_codes = False
    keeps_adapter = False

    def create_quantized(self, model: Any, group_size: int) -> tuple[Any, NF4Spec]:
        quantized = nf4_from_float(model)
        names = [n for n, m in quantized.named_modules() if type(m).__name__ == "Linear4bit"]
        return quantized, NF4Spec(modules=names)

    def spec_from_json(self, data: dict[str, Any]) -> NF4Spec:
        return spec_from_json(NF4Spec, data)

    def convert_for_runtime(self, path: Path, spec: NF4Spec) -> Any:
        return load_nf4(path, spec.compute_dtype)


NF4_FORMAT = NF4()
