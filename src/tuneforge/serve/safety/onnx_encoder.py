"""The injection classifier's encoder: all-MiniLM-L6-v2 exported to ONNX with its pooling, fused, weights int8, on CPU.

Offline transform, then runtime swap: the packaged safetensors (`core.encoder.encoder_dir`) are exported once
(PyTorch's TorchScript exporter, eager attention: the graph onnxruntime's transformer optimizer recognises),
the optimizer fuses each layer's attention, its bias + GELU and its residual + LayerNorm into single kernels
(`onnxruntime.transformers.optimizer`, model type "bert"), then dynamic quantization stores the MatMul and
attention weights as int8, one scale per output channel. The graph ends in the model's own mean pooling and
L2 normalisation, so it returns sentence embeddings. The result is cached under `cache_dir()/safety/` keyed by
the model files' hash, this recipe and the library versions, and a `manifest.json` beside it says what was
done. Nothing is fetched.

Why: on this 2-core CPU one fp32 torch forward of a 128-token window costs ~26-80 ms; the int8 graph in
onnxruntime ~4x less, and fusing it ~30 % less again (two windows 15.4 -> 10.8 ms; docs/safety.md, latency).
The int8 embeddings differ from fp32 ones (cosine ~0.96), so the head is trained on these (`train_head` uses
this encoder): the two always go together, and the head's `meta.encoder` names the encoder it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from tuneforge.core.encoder import encoder_dir
from tuneforge.core.errors import ConfigError
from tuneforge.core.paths import cache_dir

__all__ = ["ENCODER_NAME", "OnnxEncoder", "build", "cut_windows", "onnx_path", "window_starts"]
ENCODER_NAME = "all-MiniLM-L6-v2, ONNX, fused (onnxruntime.transformers, bert), dynamic int8 per channel (onnxruntime)"
OPSET = 17
HEADS, HIDDEN = 12, 384  # MiniLM-L6: what the attention fusion needs to know
RECIPE = "torchscript-eager|bert-fusion|int8-dynamic-per-channel"
MEASURED_WITH = "torch 2.13.0, onnxruntime 1.32.0, onnx 1.23.2, transformers 5.25.0"  # the committed head's


def _fingerprint(folder: Path) -> str:
    import onnx
    import onnxruntime
    import torch
    import transformers

    versions = f"{torch.__version__}|{onnxruntime.__version__}|{onnx.__version__}|{transformers.__version__}"
    digest = hashlib.sha256(f"{RECIPE}|{OPSET}|{versions}".encode())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("config.json")):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def onnx_path() -> Path:
    """Where the int8 graph for the installed encoder package lives (it may not be built yet)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the injection classifier runs its encoder with onnxruntime: "
                          "`pip install onnxruntime` (or set injection.classifier: false)") from exc
    return cache_dir() / "safety" / f"minilm-int8-{_fingerprint(encoder_dir())}" / "model.onnx"


def build(target: Path | None = None) -> Path:
    """Export, fuse and quantize the packaged encoder to `target` (default `onnx_path()`); a no-op when it exists.

    Written in a temporary folder and renamed into place, so a crash leaves nothing half-written. A graph the
    optimizer did not fuse fully (another transformers or onnxruntime version) is refused: its embeddings would
    differ from the ones the head was trained on.
    """
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    target = target or onnx_path()
    if target.is_file():
        return target
    model = AutoModel.from_pretrained(encoder_dir(), local_files_only=True, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state  # (B, T, 384)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = torch.tensor([[101, 7592, 2088, 102]])
    axes = {0: "batch", 1: "sequence"}
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tmp-minilm-", dir=target.parent.parent, ignore_cleanup_errors=True) as tmp:
        fp32, fused, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "fused.onnx", Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(Pooled().eval(), (example, torch.ones_like(example)), str(fp32), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["sentence_vector"],
                              dynamic_axes={"input_ids": axes, "attention_mask": axes}, opset_version=OPSET)
        graph = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN,
                                         opt_level=1)
        fusions = {k: v for k, v in graph.get_fused_operator_statistics().items() if v}
        layers = model.config.num_hidden_layers
        expected = {"Attention": layers, "SkipLayerNormalization": 2 * layers, "BiasGelu": layers,
                    "EmbedLayerNormalization": 1}
        if any(fusions.get(op, 0) != n for op, n in expected.items()):
            import onnxruntime
            import transformers

            raise ConfigError(
                f"onnxruntime's transformer optimizer fused {fusions} in the injection classifier's encoder, "
                f"expected {expected}: with onnxruntime {onnxruntime.__version__} and transformers "
                f"{transformers.__version__} the graph differs from the one its head was trained on (measured "
                f"with {MEASURED_WITH}). Install those versions, or set injection.classifier: false (grounded "
                "topics and the semantic cache use this encoder too)")
        graph.save_model_to_file(str(fused))
        fp32.unlink()
        # per channel: one scale per output column. Per tensor, the fused attention's packed QKV weights lose
        # enough that held-out detection fell ~3 points (docs/safety.md); fused ops carry no types (DefaultTensorType)
        quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        fused.unlink()
        (Path(tmp) / "manifest.json").write_text(json.dumps({
            "kind": "encoder", "source": str(encoder_dir()), "recipe": RECIPE, "fused": fusions,
            "operation": "onnx export (torchscript, eager attention) + transformer fusion + dynamic int8 quantization",
            "opset": OPSET, "weights": "int8 per output channel (MatMul, Attention)",
            "output": "mean-pooled, L2-normalised 384-d"}, indent=2))
        try:
            os.replace(tmp, target.parent)
        except OSError:  # another process built it first
            if not target.is_file():
                raise
    return target


def default_threads() -> int:
    """Intra-op threads for one encoder call: runs are serialised (one session, one lock), so a call may use
    the cores; beyond 4 these small matrices gain little. On this 2-core machine the default input stack's
    p99 falls from 41 to 27 ms with 2 threads (docs/safety.md, latency)."""
    return max(1, min(4, os.cpu_count() or 1))


def window_starts(length: int, window: int, overlap: int = 16) -> list[int]:
    """Where every window of `window` pieces (`overlap` shared) starts in `length` pieces; the last ends at the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, window - overlap))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def cut_windows(ids: list[int], window: int, max_windows: int, overlap: int = 16) -> list[list[int]]:
    """`ids` cut into windows. When the text needs more than `max_windows` windows of `window` pieces: the first,
    the last and evenly spaced ones between, `window` pieces each. Otherwise all of them, made as even as the
    text allows — n windows of ceil((length + (n - 1) * overlap) / n) pieces, evenly spaced, so consecutive ones
    still share at least `overlap` — instead of full windows overlapping by whatever is left: a text of 150
    pieces is read as 2 × 83, not 2 × 128 (the encoder's cost is about its total pieces)."""
    starts = window_starts(len(ids), window, overlap)
    if len(starts) > max_windows:
        picks = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        return [ids[starts[i]:starts[i] + window] for i in dict.fromkeys(picks.tolist())]
    count = len(starts)
    if count == 1:
        return [ids[:window]]
    size = math.ceil((len(ids) + (count - 1) * overlap) / count)
    return [ids[s:s + size] for s in (round(i * (len(ids) - size) / (count - 1)) for i in range(count))]


class OnnxEncoder:
    """Sentence embeddings (384 floats, unit length) from the int8 graph, of word-piece windows (`windows`)."""

    def __init__(self, threads: int | None = None, path: Path | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir(), local_files_only=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(build(path)), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def pieces(self, text: str) -> list[int]:
        """Word-piece ids of `text`, no special tokens (any length: it is cut into windows after)."""
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # no length warning

    def windows(self, text: str, window: int, max_windows: int, overlap: int = 16) -> list[list[int]]:
        """Word-piece ids of `text` cut into windows of `window` pieces (`overlap` shared), at most `max_windows`:
        the first, the last and evenly spaced ones between (indirect injection hides anywhere in tool text)."""
        return cut_windows(self.pieces(text), window, max_windows, overlap)

    def encode_ids(self, pieces: list[list[int]]) -> np.ndarray:
        """(len(pieces), 384) embeddings of word-piece id lists (special tokens added here)."""
        cls, sep, pad = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id or 0
        width = max(len(p) for p in pieces) + 2
        input_ids = np.full((len(pieces), width), pad, np.int64)
        mask = np.zeros((len(pieces), width), np.int64)
        for row, piece in enumerate(pieces):
            input_ids[row, :len(piece) + 2] = [cls, *piece, sep]
            mask[row, :len(piece) + 2] = 1
        with self._lock:
            (vectors,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(vectors, np.float32)
