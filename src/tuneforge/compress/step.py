"""What every compression step ends with: check the child against its parent, then write it, or nothing."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.compress.parity import check, describe
from tuneforge.core.artifacts import Artifact, ParentRef, create_artifact, is_artifact, load_artifact
from tuneforge.core.config import CompressConfig, DistillConfig, EvalConfig, ModelConfig, TrainConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import LoadedModel, load
from tuneforge.models.chat_template import template_hash, tokenizer_hash
from tuneforge.models.formats import QUANT_FILE, QuantFormat
from tuneforge.models.loader import fingerprint, fingerprint_chain


@dataclass
class Source:
    """What a compression step starts from: a model artifact, or any model reference `models.load` takes
    (a built-in name such as smollm2-135m, a Hugging Face folder): a base can be quantized as it is."""

    reference: str  # what `models.load` takes
    manifest: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None
    fingerprint: str = ""

    @property
    def path(self) -> Path:
        return Path(self.reference)

    @property
    def kind(self) -> str:
        return self.artifact.kind if self.artifact is not None else "model"

    @property
    def content_hash(self) -> str:
        return self.artifact.content_hash if self.artifact is not None else self.fingerprint

    def parents(self) -> list[ParentRef]:
        return [self.artifact.ref()] if self.artifact is not None else []

    def weights_of(self) -> list[str]:
        """Fingerprints of the weights this model stands for: its own and, for a quantized model, those its
        quantization approximates (as `models.loader.weights_fingerprints`, from what is already loaded
        here: re-fingerprinting a Hugging Face folder re-hashes its weight files)."""
        return fingerprint_chain(self.fingerprint, self.manifest)


def model_source(model_ref: str | Path) -> Source:
    path = Path(model_ref)
    if is_artifact(path):
        artifact = load_artifact(path)
        return Source(str(artifact.path), artifact.manifest, artifact, fingerprint(path))
    if path.exists() and not (path / "config.json").is_file():
        raise CompressError(f"{model_ref}: neither an artifact nor a Hugging Face model folder (no config.json)")
    if not path.exists() and str(path.parent) not in (".", "") and path.parent.is_dir():
        raise CompressError(f"{model_ref}: no such artifact or model folder")  # a local path, not a hub id
    return Source(str(model_ref), {"base_model": str(model_ref)}, None, fingerprint(str(model_ref)))


def write_checked(source: Source, parent: LoadedModel, child: LoadedModel, spec: dict[str, Any],
                  cfg: CompressConfig, output: str | Path, operation: str, float_weights: Any = None,
                  kind: str = "lossy", eval_cfg: EvalConfig | None = None,
                  extra_files: list[Path] | None = None, quantized: QuantFormat | None = None) -> Artifact:
    """Parity-check `child` against `parent`; when it passes, write a model artifact whose manifest's
    `compression` is `{operation, **spec, parent}`.

    Weights written: with `float_weights` that float model itself (formats applied at load time), else
    for a `quantized` format that stores codes the child's state dict with its config, else the child.
    With `quantized` the spec also goes to `quantization.json`, which the loader's format reads to
    rebuild the layers, and the manifest records the float weights it approximates. With
    `compress.parity.eval`, `eval_cfg`'s question sets are answered by both as well. `extra_files` are
    copied in as they are (an adapter kept over a quantized base).
    """
    from safetensors.torch import save_file

    method = spec.get("method", operation)
    with console.status(f"parity check: {method} vs {source.path.name}"):
        report = check(parent, LoadedModel(child.model, child.tokenizer, operation, operation), cfg.parity, kind,
                       eval_cfg)
    console.print(describe(report))
    if not report["passed"]:
        raise CompressError(f"{operation} failed its parity check, nothing written:\n{describe(report)}")
    config = {"compress": cfg.model_dump(mode="json"), "operation": operation, "method": method}
    with create_artifact(output, "model", config=config, parents=source.parents()) as writer:
        if float_weights is not None:
            float_weights.save_pretrained(writer.path)
        elif quantized is not None and quantized.stores_codes:
            child.model.config.save_pretrained(writer.path)
            state = {k: v.contiguous() for k, v in child.model.state_dict().items()}
            save_file(state, str(writer.path / "model.safetensors"), metadata={"format": "pt"})
        else:
            child.model.save_pretrained(writer.path)
        child.tokenizer.save_pretrained(writer.path)
        for extra in extra_files or []:
            shutil.copyfile(extra, writer.path / extra.name)
        if quantized is not None:
            (writer.path / QUANT_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        (writer.path / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
        writer.metrics.update({"parity": {k: v for k, v in report.items() if k != "disagreements"}})
        writer.extra.update({
            "base_model": source.manifest.get("base_model", str(source.path)),
            "compression": {"operation": operation, **{k: v for k, v in spec.items() if k not in ("modules",
                                                                                               "int8_modules")},
                            "parent": source.content_hash,
                            **({"weights_of": source.weights_of()} if quantized is not None else {})},
            "chat_template_hash": template_hash(child.tokenizer), "tokenizer_hash": tokenizer_hash(child.tokenizer),
        })
    return load_artifact(output, kind="model")


@contextlib.contextmanager
def scratch_beside(output: str | Path, what: str) -> Iterator[Path]:
    """A hidden scratch folder next to `output` (same file system), removed however the step ends."""
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.{what}-", dir=output.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def teacher_settings(train_cfg: TrainConfig, teacher: str) -> DistillConfig:
    """`train.distill` (temperature, alpha; defaults when unset) with `teacher` as the teacher."""
    return DistillConfig(**{**(train_cfg.distill.model_dump() if train_cfg.distill else {}), "teacher": teacher})


def train_copy(start: LoadedModel | str, dataset: Artifact, train_cfg: TrainConfig, dtype: str,
               scratch: Path) -> tuple[LoadedModel, Artifact]:
    """Fully fine-tune `start` (a model in memory, saved into `scratch` first, or a model reference) on
    `dataset` through the training loop; returns the trained model and its (scratch) artifact."""
    from tuneforge.train.loop import train

    if isinstance(start, LoadedModel):
        reference = str(scratch / "start")
        start.model.save_pretrained(reference)
        start.tokenizer.save_pretrained(reference)
    else:
        reference = start
    trained = train(dataset, ModelConfig(name=reference, dtype=dtype),  # type: ignore[arg-type]
                    train_cfg.model_copy(update={"method": "full"}), scratch / "trained")
    assert trained is not None  # single process
    return load(str(trained.path)), trained
