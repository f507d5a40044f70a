"""Export to ONNX, run and parity-checked through ONNX Runtime.

The graph is the model's full forward, `(input_ids, attention_mask) → logits`, with batch and
sequence dynamic, exported by PyTorch's dynamo exporter (`torch.onnx.export(dynamo=True)`,
onnxscript) in fp32 from the float parent. It has no KV-cache inputs: every decoding step runs the
whole prefix again, which suits scoring, classification-style prompts and short answers in ONNX
Runtime pipelines; for streaming generation serve the model with tuneforge's engine or export GGUF.
The tokenizer (with the chat template the model was trained with) is saved next to `model.onnx`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tuneforge.compress.export import hf_folder, record_export
from tuneforge.compress.parity import check, describe
from tuneforge.core.artifacts import Artifact, create_artifact, is_artifact, load_artifact
from tuneforge.core.config import CompressConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import load

ONNX_FILE = "model.onnx"
OPSET = 18


class ONNXSide:
    """An ONNX model run by ONNX Runtime, for the parity check: greedy continuation and logits."""

    def __init__(self, path: Path, eos_ids: set[int] | frozenset[int] = frozenset()) -> None:
        import onnxruntime as ort

        self.eos_ids = set(eos_ids)  # greedy stops where transformers' generate stops
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def logits(self, ids: list[int]):
        import numpy as np
        import torch

        batch = np.array([ids], dtype=np.int64)
        out = self.session.run(["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)})[0]
        return torch.from_numpy(out[0]).float()

    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        ids = list(prompt_ids)
        for _ in range(max_new_tokens):
            ids.append(int(self.logits(ids)[-1].argmax()))
            if ids[-1] in self.eos_ids:
                break
        return ids[len(prompt_ids):]


def export_onnx(model_ref: str, output: str | Path, cfg: CompressConfig) -> Artifact:
    """Write a model artifact holding `model.onnx` and the tokenizer, parity-checked through ONNX Runtime."""
    import torch

    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise CompressError("ONNX export needs onnx, onnxscript and onnxruntime: "
                            "pip install 'tuneforge[onnx]'") from exc
    # artifacts and folders are checked as for GGUF (adapters, quantized artifacts refused); built-in names load
    folder = hf_folder(model_ref) if Path(model_ref).exists() else Path(model_ref)
    parent = load(model_ref, dtype="float32")
    model = parent.model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    example = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with tempfile.TemporaryDirectory(prefix="tuneforge-onnx-") as tmp:
        onnx_path = Path(tmp) / ONNX_FILE
        with console.status(f"exporting {folder.name} to ONNX (opset {OPSET}, dynamo exporter)"):
            try:
                torch.onnx.export(Logits().eval(), (example, torch.ones_like(example)), str(onnx_path), dynamo=True,
                                  input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                  dynamic_shapes=dynamic,
                                  opset_version=OPSET, external_data=False, verbose=False)
            except Exception as exc:  # the exporter fails in many classes, all with a useful message
                raise CompressError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        side = ONNXSide(onnx_path, eos_ids(model))
        with console.status(f"parity check: ONNX through onnxruntime vs {folder.name}"):
            report = check(parent, side, cfg.parity, "lossless")
        console.print(describe(report))
        if not report["passed"]:
            raise CompressError(f"ONNX export failed its parity check, nothing written:\n{describe(report)}")
        spec: dict[str, Any] = {"operation": "export", "format": "onnx", "opset": OPSET, "dtype": "float32",
                                "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"], "kv_cache": False,
                                "exporter": f"torch {torch.__version__} dynamo"}
        parents = [load_artifact(folder).ref()] if folder.exists() and is_artifact(folder) else []
        with create_artifact(output, "model", config={"compress": cfg.model_dump(mode="json"), **spec},
                             parents=parents) as writer:
            onnx_path.replace(writer.path / ONNX_FILE)
            parent.tokenizer.save_pretrained(writer.path)
            saved = _saved_template(writer.path)
            if saved != parent.tokenizer.chat_template:
                raise CompressError("the exported tokenizer's chat template differs from the model's; nothing written")
            record_export(writer, report, spec, parents, model_ref, parent.tokenizer,
                          (writer.path / ONNX_FILE).stat().st_size)
    return load_artifact(output, kind="model")


def eos_ids(model: Any) -> set[int]:
    """The token ids `generate` stops at (the generation config's, else the model config's)."""
    config = getattr(model, "generation_config", None) or model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())


def _saved_template(folder: Path) -> str | None:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).chat_template
