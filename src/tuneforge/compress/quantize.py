"""`tuneforge compress quantize`: a model (or an adapter's base) in a quantization format, checked against its parent.

Each format is a module of `models/formats/` with its spec, offline transform and runtime conversion:
`int8` (weight-only, per output channel), `int4` (weight-only, group-wise asymmetric, the head at int8),
`dynamic-int8` (float weights on disk, int8 weights and activations at load, CPU only) and `nf4`
(float weights on disk, loaded as bitsandbytes NF4). This step runs the offline transform, checks
the result against the float parent, and writes the artifact with `quantization.json`.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.compress.step import Source, model_source, write_checked
from tuneforge.core.artifacts import Artifact
from tuneforge.core.config import CompressConfig, EvalConfig
from tuneforge.core.errors import CompressError
from tuneforge.models import LoadedModel, load
from tuneforge.models.formats import FORMATS, QuantFormat, quant_format, spec_to_json

METHODS = tuple(FORMATS)


def quantize(model_path: str | Path, output: str | Path, cfg: CompressConfig, method: str | None = None,
             allow_requantize: bool = False, eval_cfg: EvalConfig | None = None) -> Artifact:
    """Quantize the model (or adapter) at `model_path` to `method` (default `compress.quantize_method`)."""
    method = method or cfg.quantize_method
    try:
        fmt = quant_format(method)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    source = model_source(model_path)
    if source.kind == "adapter" and fmt.keeps_adapter:
        return quantize_under_adapter(source, output, cfg, fmt, eval_cfg)
    keeping = "/".join(kind for kind, f in FORMATS.items() if f.keeps_adapter)
    if source.kind != "model":
        raise CompressError(f"{source.path} is a {source.kind} artifact; {method} quantizes a model artifact "
                            f"(for an adapter: `tuneforge compress merge` first, or --method {keeping} to quantize "
                            "its base and keep the adapter)")
    previous = source.manifest.get("compression", {})
    if previous.get("operation") == "quantize" and not allow_requantize:
        raise CompressError(f"{source.path} is already quantized ({previous.get('method')}); quantizing it again "
                            "compounds the error. Quantize its parent, or pass --allow-requantize.")
    parent = load(source.reference)
    fresh = load(source.reference)  # the copy the transform may change in place
    model, spec = fmt.create_quantized(fresh.model, cfg.group_size)
    child = LoadedModel(model, fresh.tokenizer, fresh.ref, fresh.source)
    return write_checked(source, parent, child, spec_to_json(spec), cfg, output, "quantize", eval_cfg=eval_cfg,
                         quantized=fmt, float_weights=None if fmt.stores_codes else parent.model)


def quantize_under_adapter(source: Source, output: str | Path, cfg: CompressConfig, fmt: QuantFormat,
                           eval_cfg: EvalConfig | None) -> Artifact:
    """Quantize a LoRA adapter's base and keep the adapter unmerged on top (QLoRA's inference setting).

    Merging first and then quantizing rounds the fine-tune away when the update is smaller than the
    4-bit step (measured on the demo model: the LoRA moved the weights by 1.9 % of ‖W‖, int4's error is
    2.3 %). Here the base is quantized as it is and the adapter's low-rank update stays in float32: the
    artifact holds the quantized base plus PEFT's two adapter files, and is checked against the adapter
    over its float base.
    """
    from tuneforge.compress.merge import checked_base
    from tuneforge.models.lora import ADAPTER_FILES, attach_adapter
    from tuneforge.train.methods import METHODS as TUNING_METHODS

    adapter_method = source.manifest.get("method", "lora")
    if adapter_method not in TUNING_METHODS or not TUNING_METHODS[adapter_method].plain_lora:
        raise CompressError(f"{source.path}: a {adapter_method!r} adapter cannot stay unmerged over a quantized "
                            "base; merge it (tuneforge compress merge) and quantize the merged model")
    base_ref, _ = checked_base(source.path, source.manifest)
    parent = load(source.reference)  # the adapter over its float base (PEFT)
    base = load(base_ref)
    model, spec = fmt.create_quantized(base.model, cfg.group_size)
    try:
        targets = attach_adapter(model, source.path)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    spec.adapter = {"method": adapter_method, "parent": source.content_hash, "modules": len(targets),
                    "dtype": "float32"}
    child = LoadedModel(model, base.tokenizer, base.ref, base.source)
    return write_checked(source, parent, child, spec_to_json(spec), cfg, output, "quantize", eval_cfg=eval_cfg,
                         quantized=fmt, extra_files=[source.path / name for name in ADAPTER_FILES])
