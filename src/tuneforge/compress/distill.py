"""Distill: a teacher (the tuned model) into a smaller student, through the training loop.

The student is either `compress.student` (any model with the teacher's tokenizer) or the teacher
with only `compress.student_layers` of its decoder layers, evenly spaced (first and last kept) and
initialised from them (DistilBERT's and TinyLlama-style layer dropping). It is trained fully on a
prepared dataset with `train.*` settings plus `train.distill` (temperature, alpha; the teacher is set
here): loss = (1 − α)·CE + α·T²·KL on temperature-softened logits (train/distill.py). The result is
parity-checked against the teacher like every other step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.compress.prune import from_state, parameter_count
from tuneforge.compress.step import model_source, scratch_beside, teacher_settings, train_copy, write_checked
from tuneforge.core.artifacts import Artifact, load_artifact
from tuneforge.core.config import PipelineConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import LoadedModel, load


def distill(teacher_path: str | Path, dataset_path: str | Path, output: str | Path, cfg: PipelineConfig) -> Artifact:
    teacher_art = model_source(teacher_path)
    if teacher_art.kind != "model":
        raise CompressError(f"{teacher_art.path} is a {teacher_art.kind} artifact; the teacher must be a model "
                            "artifact (for an adapter: `tuneforge compress merge` first)")
    if teacher_art.manifest.get("compression", {}).get("operation") == "quantize":
        raise CompressError(f"{teacher_art.path} is quantized; distill from its float parent")
    dataset = load_artifact(dataset_path, kind="dataset")
    comp = cfg.compress
    if (comp.student is None) == (comp.student_layers is None):
        raise CompressError("distill needs exactly one of compress.student_layers (drop teacher layers) or "
                            "compress.student (another model with the teacher's tokenizer)")
    teacher = load(teacher_art.reference)
    with scratch_beside(output, "distill") as scratch:
        student: LoadedModel | str = (fewer_layers(teacher, comp.student_layers) if comp.student_layers is not None
                                      else str(comp.student))
        settings = teacher_settings(cfg.train, teacher_art.reference)
        console.print(f"distilling {teacher_art.path.name} ({parameter_count(teacher.model):,} parameters) into "
                      f"{comp.student if comp.student else f'{comp.student_layers} of its layers'}: "
                      f"T={settings.temperature}, alpha={settings.alpha}")
        child, trained_art = train_copy(student, dataset, cfg.train.model_copy(update={"distill": settings}),
                                        cfg.model.dtype, scratch)
        spec: dict[str, Any] = {
            "method": "kd", "temperature": settings.temperature, "alpha": settings.alpha,
            "student": comp.student or f"{comp.student_layers} of the teacher's layers",
            "layers_kept": getattr(child.model.config, "num_hidden_layers", None),
            "parameters_before": parameter_count(teacher.model), "parameters_after": parameter_count(child.model),
            "dataset": dataset.content_hash, "train_steps": trained_art.metrics.get("steps"),
            "val_loss": trained_art.metrics.get("val_loss"),
        }
        return write_checked(teacher_art, teacher, child, spec, comp, output, "distill", eval_cfg=cfg.eval)


def fewer_layers(teacher: LoadedModel, layers: int) -> LoadedModel:
    """The teacher with `layers` of its decoder layers, evenly spaced (first and last kept), weights copied."""
    import copy

    config = copy.deepcopy(teacher.model.config)
    total = config.num_hidden_layers
    if not 1 <= layers < total:
        raise CompressError(f"compress.student_layers must be between 1 and {total - 1} (the teacher has {total})")
    keep = [0] if layers == 1 else [round(i * (total - 1) / (layers - 1)) for i in range(layers)]
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    state = {}
    for key, value in teacher.model.state_dict().items():
        if key.startswith("model.layers."):
            index, rest = key[len("model.layers."):].split(".", 1)
            if int(index) not in keep:
                continue
            key = f"model.layers.{keep.index(int(index))}.{rest}"
        state[key] = value.detach().clone()
    student = from_state(config, state, next(teacher.model.parameters()).dtype, "layer dropping")
    return LoadedModel(student, teacher.tokenizer, f"{teacher.ref}[{layers} layers]", "student")
