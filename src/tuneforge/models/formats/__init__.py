"""Compression formats, one module each (int8, int4, dynamic-int8, nf4), all implementing `QuantFormat`.

An artifact says what it is in its manifest's `compression.format` (and `quantization.json`'s
`format`); the loader asks `recorded_format` and never reads the compression schema itself.
Artifacts written before the kind was recorded are read by their `method`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from tuneforge.core.config import QuantizeMethod
from tuneforge.core.errors import ModelLoadError
from tuneforge.models.formats.dynamic_int8 import DYNAMIC_INT8
from tuneforge.models.formats.int4 import INT4
from tuneforge.models.formats.int8 import INT8
from tuneforge.models.formats.nf4 import NF4_FORMAT
from tuneforge.models.formats.protocol import QUANT_FILE, QuantFormat, spec_to_json

FORMATS: dict[str, QuantFormat] = {f.kind: f for f in (INT8, INT4, DYNAMIC_INT8, NF4_FORMAT)}
if set(FORMATS) != set(get_args(QuantizeMethod)):  # pragma: no cover - caught by any import
    raise RuntimeError(f"compress.quantize_method and models/formats differ: "
                       f"{set(get_args(QuantizeMethod)) ^ set(FORMATS)}")

# what older artifacts' `method` meant, before `format` was recorded
_BY_OLD_METHOD = {"int8-weight-only": "int8", "int4-weight-only": "int4", "dynamic-int8": "dynamic-int8",
                  "nf4": "nf4"}

# exports that are model artifacts but not for `models.load`
_EXPORTS = {
    "gguf": "is a GGUF export (for llama.cpp): serve it with `--set serve.backend=llamacpp`, or use its parent "
            "artifact",
    "onnx": "is an ONNX export: run model.onnx with onnxruntime (tuneforge.compress.onnx.ONNXSide), or use its "
            "parent artifact",
}


def quant_format(kind: str) -> QuantFormat:
    """The format called `kind` (`compress quantize --method`)."""
    if kind not in FORMATS:
        raise ValueError(f"quantize method {kind!r} is not built; available: {', '.join(FORMATS)}")
    return FORMATS[kind]


def declared_kind(manifest: dict[str, Any]) -> str | None:
    """The format a model artifact's manifest declares (None for plain float weights)."""
    compression = manifest.get("compression", {})
    if "format" in compression:
        return str(compression["format"])
    if compression.get("operation") == "quantize":
        return _BY_OLD_METHOD[compression["method"]]
    return None


def recorded_format(path: Path, manifest: dict[str, Any]) -> tuple[QuantFormat, Any] | None:
    """(format, spec) of the quantized model artifact at `path`; None for float weights. An export
    (GGUF, ONNX) is refused with what to do instead."""
    kind = declared_kind(manifest)
    if kind is None:
        return None
    if kind in _EXPORTS:
        raise ModelLoadError(f"{path} {_EXPORTS[kind]}")
    data = json.loads((path / QUANT_FILE).read_text())
    fmt = FORMATS[kind]
    return fmt, fmt.spec_from_json(data)


def weights_of(manifest: dict[str, Any]) -> list[str]:
    """Fingerprints of the float weights a quantized model's manifest says it approximates."""
    return list(manifest.get("compression", {}).get("weights_of", []))


__all__ = ["FORMATS", "QUANT_FILE", "QuantFormat", "declared_kind", "quant_format", "recorded_format",
           "spec_to_json", "weights_of"]
