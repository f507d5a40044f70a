"""ONNX export: a dynamic-shape graph that onnxruntime runs like its parent, the chat template with it."""

import numpy as np
import pytest
import torch

from tuneforge.compress.onnx import ONNXSide, export_onnx
from tuneforge.core.config import CompressConfig, ParityConfig
from tuneforge.core.errors import ModelLoadError
from tuneforge.models import load
from tuneforge.models.chat_template import template_hash


def test_onnx_export_runs_in_onnxruntime_like_its_parent(tmp_path):
    """ONNX: the graph (dynamic batch and length) answers through onnxruntime as the parent does, the chat
    template travels with it, and the loader points at onnxruntime instead of loading it."""
    cfg = CompressConfig(parity=ParityConfig(max_prompts=3, max_new_tokens=6))  # lossless tolerances
    artifact = export_onnx("tiny-random-llama", tmp_path / "onnx", cfg)
    spec = artifact.manifest["compression"]
    assert (spec["format"], spec["kv_cache"]) == ("onnx", False)
    assert artifact.metrics["parity"]["agreement"] == 1.0
    parent = load("tiny-random-llama")
    assert artifact.manifest["chat_template_hash"] == template_hash(parent.tokenizer)
    side = ONNXSide(artifact.path / "model.onnx")
    ids = np.array([[1, 5, 9, 200, 3000, 7], [1, 8, 9, 10, 11, 12]], dtype=np.int64)  # batch 2, another length
    got = side.session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    with torch.no_grad():
        want = parent.model(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.abs(got - want).max() < 1e-4
    first = int(got[0, -1].argmax())
    stopping = ONNXSide(artifact.path / "model.onnx", {first})  # greedy stops at an end token, as generate does
    assert stopping.greedy([1, 5, 9, 200, 3000, 7], 5) == [first]
    with pytest.raises(ModelLoadError, match="onnxruntime"):
        load(str(artifact.path))
