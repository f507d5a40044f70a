"""Quantize: weight-only int8 (per output channel) of a full model artifact, checked against its parent.

Every linear layer (the vocabulary head included) keeps int8 weights and one bf16 scale per
output channel; embeddings and norms stay bf16. The artifact holds `model.safetensors` with the
int8 tensors, `config.json`, the tokenizer, `quantization.json` (method, bits, grouping, modules)
and `parity.json`; `models.load` rebuilds the int8 layers from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.compress.parity import compare, describe
from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import CompressConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import LoadedModel, load
from tuneforge.models.chat_template import template_hash, tokenizer_hash
from tuneforge.models.int8 import QUANT_FILE, quantize_linears

METHODS = ("int8",)


def quantize(model_path: str | Path, output: str | Path, cfg: CompressConfig, method: str = "int8",
             allow_requantize: bool = False) -> Artifact:
    import torch
    from safetensors.torch import save_file

    if method not in METHODS:
        raise CompressError(f"quantize method {method!r} is not built; available: {', '.join(METHODS)}")
    source = load_artifact(model_path)
    if source.kind != "model":
        raise CompressError(f"{source.path} is a {source.kind} artifact; quantize a model artifact "
                            "(for an adapter: `tuneforge compress merge` first)")
    previous = source.manifest.get("compression", {})
    if previous.get("operation") == "quantize" and not allow_requantize:
        raise CompressError(f"{source.path} is already quantized ({previous.get('method')}); quantizing it again "
                            "compounds the error. Quantize its parent, or pass --allow-requantize.")
    parent = load(str(source.path))
    child = load(str(source.path))
    names = quantize_linears(child.model, dtype=torch.bfloat16)
    child.model.to(torch.bfloat16).eval()
    child.model.config.tie_word_embeddings = False
    with console.status(f"parity check: {method} vs {source.path.name}"):
        report = compare(parent, LoadedModel(child.model, child.tokenizer, "quantized", "quantized"), cfg.parity,
                         "lossy")
    console.print(describe(report))
    if not report["passed"]:
        raise CompressError(f"quantize failed its parity check, nothing written:\n{describe(report)}")
    spec = {"method": f"{method}-weight-only", "bits": 8, "group_size": "per-output-channel", "symmetric": True,
            "compute_dtype": "bfloat16", "modules": names}
    config = {"compress": cfg.model_dump(mode="json"), "operation": "quantize", "method": method}
    with create_artifact(output, "model", config=config, parents=[source.ref()]) as writer:
        child.model.config.save_pretrained(writer.path)
        state = {k: v.contiguous() for k, v in child.model.state_dict().items()}
        save_file(state, str(writer.path / "model.safetensors"), metadata={"format": "pt"})
        child.tokenizer.save_pretrained(writer.path)
        (writer.path / QUANT_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        (writer.path / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
        writer.metrics.update({"parity": {k: v for k, v in report.items() if k != "disagreements"}})
        writer.extra.update({
            "base_model": source.manifest.get("base_model", str(source.path)),
            "compression": {"operation": "quantize", **{k: v for k, v in spec.items() if k != "modules"},
                            "parent": source.content_hash},
            "chat_template_hash": template_hash(child.tokenizer), "tokenizer_hash": tokenizer_hash(child.tokenizer),
        })
    return load_artifact(output, kind="model")
