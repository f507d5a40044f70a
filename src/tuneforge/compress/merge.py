"""Merge: fold a LoRA/DoRA/IA3 adapter into its base's weights → a plain `model` artifact.

The adapter's manifest names its base and the base's fingerprint; merging into a base with
another fingerprint is refused. The merged model is then checked against the adapter (parent)
on the parity prompts, and only written when it passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.compress.parity import check, describe
from tuneforge.core.artifacts import Artifact, create_artifact, load_artifact
from tuneforge.core.config import CompressConfig, EvalConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import LoadedModel, load
from tuneforge.models.chat_template import template_hash, tokenizer_hash
from tuneforge.models.loader import _torch_dtype, fingerprint, peft_over
from tuneforge.train.methods import METHODS

MERGEABLE = tuple(name for name, m in METHODS.items() if m.merges)


def _with_adapter(base_ref: str, adapter: Artifact, dtype: str) -> LoadedModel:
    base = load(base_ref, dtype=dtype)
    model, tokenizer = peft_over(base, adapter.path, adapter.manifest)  # added tokens: the adapter's tokenizer
    return LoadedModel(model.eval(), tokenizer, str(adapter.path), "artifact-adapter", base_ref=base_ref)


def checked_base(adapter_path: Path, manifest: dict[str, Any], base: str | None = None) -> tuple[str, str]:
    """(reference, fingerprint) of the base an adapter applies to (`base`, or the one its manifest names),
    refused when that fingerprint is not the one the adapter was trained on: building on other weights
    would silently change the model."""
    if base is None and not manifest.get("base_model"):
        raise CompressError(f"{adapter_path}: the adapter's manifest does not name its base model")
    base_ref = base or str(manifest["base_model"])
    expected = manifest.get("base_fingerprint")
    actual = fingerprint(base_ref)
    if expected is not None and expected != actual:
        raise CompressError(
            f"{adapter_path} was trained on {manifest['base_model']!r} (fingerprint {expected}); "
            f"{base_ref!r} has fingerprint {actual}: building on different weights would silently change the model"
        )
    if expected is None:
        console.print(f"[yellow]{adapter_path}: the manifest records no base fingerprint; cannot check the base[/]")
    return base_ref, actual


def merge(adapter_path: str | Path, output: str | Path, cfg: CompressConfig, base: str | None = None,
          eval_cfg: EvalConfig | None = None) -> Artifact:
    """Fold the adapter at `adapter_path` into its base (or `base`, which must be the same weights)."""
    adapter = load_artifact(adapter_path, kind="adapter")
    method = adapter.manifest.get("method", "lora")
    if method not in METHODS or not METHODS[method].merges:
        raise CompressError(
            f"{adapter.path}: a {method!r} adapter cannot be folded into the weights (it adds modules or virtual "
            f"tokens); merge supports {', '.join(MERGEABLE)}. Serve the adapter artifact instead."
        )
    base_ref, actual = checked_base(adapter.path, adapter.manifest, base)
    parent = _with_adapter(base_ref, adapter, "float32")
    fresh = _with_adapter(base_ref, adapter, "float32")
    merged = fresh.model.merge_and_unload().to(_torch_dtype(cfg.dtype)).eval()
    child = LoadedModel(merged, fresh.tokenizer, "merged", "merged")
    with console.status("parity check: merged model vs adapter"):
        report = check(parent, child, cfg.parity, "lossless" if cfg.dtype == "float32" else "lossy", eval_cfg)
    console.print(describe(report))
    if not report["passed"]:
        raise CompressError(f"merge failed its parity check, nothing written:\n{describe(report)}")
    if adapter.manifest.get("chat_template_hash") not in (None, template_hash(child.tokenizer)):
        raise CompressError("the merged model's chat template differs from the one the adapter was trained with")
    config = {"compress": cfg.model_dump(mode="json"), "operation": "merge", "base": base_ref}
    with create_artifact(output, "model", config=config, parents=[adapter.ref()]) as writer:
        merged.save_pretrained(writer.path)
        child.tokenizer.save_pretrained(writer.path)
        (writer.path / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
        writer.metrics.update({"parity": {k: v for k, v in report.items() if k != "disagreements"}})
        writer.extra.update({
            "base_model": base_ref, "base_fingerprint": actual,
            "compression": {"operation": "merge", "adapter_method": method, "dtype": cfg.dtype,
                            "parent": adapter.content_hash},
            "chat_template_hash": template_hash(child.tokenizer), "tokenizer_hash": tokenizer_hash(child.tokenizer),
        })
    return load_artifact(output, kind="model")
