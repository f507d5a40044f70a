"""int8 weight-only: smaller, close to its parent, loads back as int8 layers; requantizing and adapters refused."""

import json

import pytest
import torch

from tuneforge.compress.merge import merge
from tuneforge.compress.quantize import quantize
from tuneforge.core.config import CompressConfig, ParityConfig
from tuneforge.core.errors import CompressError
from tuneforge.models import load
from tuneforge.models.int8 import int8_linear_class

LOOSE = CompressConfig(parity=ParityConfig(max_prompts=4, max_new_tokens=6, min_agreement=0.0,
                                           max_mean_logit_diff=1.0))


@pytest.fixture(scope="module")
def merged(tiny_adapter, tmp_path_factory):
    return merge(tiny_adapter.path, tmp_path_factory.mktemp("m") / "merged", LOOSE)


def test_int8_layer_matches_linear_within_quantization_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    q = int8_linear_class().from_linear(linear, torch.float32)
    x = torch.randn(3, 5, 64)
    want = linear(x)
    got = q(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 0.02 * want.abs().max()


def test_quantize_writes_a_smaller_int8_model_that_reloads(merged, tmp_path):
    artifact = quantize(merged.path, tmp_path / "int8", LOOSE)
    m = artifact.manifest
    assert m["compression"]["operation"] == "quantize" and m["compression"]["bits"] == 8
    assert m["compression"]["parent"] == merged.content_hash
    assert artifact.metrics["parity"]["token_agreement"] > 0.5
    size = sum((artifact.path / f).stat().st_size for f in m["files"] if f.endswith(".safetensors"))
    parent_size = sum((merged.path / f).stat().st_size for f in merged.manifest["files"] if f.endswith(".safetensors"))
    assert size < 0.8 * parent_size  # the tiny model is mostly its (bf16) embedding table
    loaded, parent = load(str(artifact.path)), load(str(merged.path))
    assert loaded.info["quantization"] == "int8-weight-only"
    assert isinstance(loaded.model.lm_head, int8_linear_class())
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253]])
    with torch.no_grad():
        got, want = loaded.model(input_ids=ids).logits.float(), parent.model(input_ids=ids).logits
    assert (got - want).abs().mean() < 0.05 * want.abs().mean()
    with pytest.raises(CompressError, match="already quantized"):
        quantize(artifact.path, tmp_path / "again", LOOSE)


def test_quantize_refuses_an_adapter_for_methods_applied_at_load(tiny_adapter, tmp_path):
    with pytest.raises(CompressError, match="compress merge` first"):
        quantize(tiny_adapter.path, tmp_path / "q", LOOSE, method="dynamic-int8")
    assert not (tmp_path / "q").exists()


def test_int4_under_an_adapter_keeps_the_adapter_unmerged(tiny_adapter, tmp_path, engine_vs_generate):
    """The adapter's base is quantized, the LoRA update stays on top in bf16: closer to the adapter than the
    quantized base alone, reloads with the adapter attached, and the engine serves it like `generate`."""
    from tuneforge.models.int4 import int4_linear_class

    artifact = quantize(tiny_adapter.path, tmp_path / "int4", LOOSE, method="int4")
    m = artifact.manifest
    assert m["compression"]["adapter"]["parent"] == tiny_adapter.content_hash
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(m["files"])
    child, parent = load(str(artifact.path)), load(str(tiny_adapter.path))
    assert child.info["adapter_modules"] > 0
    assert isinstance(child.model.model.layers[0].self_attn.q_proj, int4_linear_class())
    bare = load(str(artifact.path))
    for module in bare.model.modules():
        module._forward_hooks.clear()  # the same quantized base without its adapter
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 314, 28]])
    with torch.no_grad():
        want = parent.model(input_ids=ids).logits
        got, without = (x.model(input_ids=ids).logits.float() for x in (child, bare))
    assert (got - want).abs().mean() < 0.5 * (without - want).abs().mean()
    tokens, _, runner = engine_vs_generate(child, ids[0].tolist(), 8)
    assert runner.fused is not None and runner.fused[0].qkv.lora is not None  # the update rides the fused path
    with torch.no_grad():  # each engine token is the model's own greedy choice, up to bf16 rounding
        logits = child.model(input_ids=torch.tensor([ids[0].tolist() + tokens])).logits[0, ids.shape[1] - 1: -1]
    chosen = logits.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    assert (logits.max(dim=1).values - chosen).max() < 0.05 * logits.std()


def test_dynamic_int8_artifact_keeps_float_weights_and_quantizes_at_load(merged, tmp_path, engine_vs_generate):
    """dynamic-int8: float weights on disk, int8 GEMM with run-time activation quantization after load; the
    engine serves it (generic path) token for token like the loaded model's own generate."""
    loose = CompressConfig(parity=ParityConfig(max_prompts=4, max_new_tokens=6, min_agreement=0.0,
                                               max_mean_logit_diff=100.0))
    artifact = quantize(merged.path, tmp_path / "dyn", loose, method="dynamic-int8")
    assert artifact.manifest["compression"]["method"] == "dynamic-int8"
    assert "model.safetensors" in artifact.manifest["files"]
    loaded = load(str(artifact.path))
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(loaded.model.model.layers[0].self_attn.q_proj, dynamic)
    assert isinstance(loaded.model.lm_head, dynamic)
    got, want, _ = engine_vs_generate(loaded, [1, 5, 9, 200, 3000], 5)
    assert got == want


def test_int4_layer_round_trips_a_grid_exactly_and_the_cpu_kernel_matches_dequantization():
    """Weights already on a 4-bit group grid (as SmolLM2's shipped Q4_1 layers are) come back exactly;
    PyTorch's int4 CPU kernel computes what dequantize-then-matmul computes."""
    from tuneforge.models.int4 import int4_linear_class, pack_nibbles, quantize_groups, unpack_nibbles

    torch.manual_seed(0)
    codes = torch.randint(0, 16, (48, 64))
    codes[:, ::32], codes[:, 1::32] = 0, 15  # every group spans the whole grid
    scale, low = torch.rand(48, 2) * 0.01 + 0.001, torch.randn(48, 2) * 0.05
    weight = (codes.float().reshape(48, 2, 32) * scale[..., None] + low[..., None]).reshape(48, 64)
    got_codes, got_scale, got_zero = quantize_groups(weight, 32)
    assert torch.equal(got_codes.long(), codes)
    assert torch.equal(unpack_nibbles(pack_nibbles(got_codes)), got_codes)
    linear = torch.nn.Linear(64, 48)
    linear.weight.data = weight
    q = int4_linear_class().from_linear(linear, torch.float32)
    assert torch.allclose(q.dequantize(), weight, atol=1e-6)
    x = torch.randn(3, 5, 64)
    assert torch.allclose(q(x), linear(x), atol=1e-4)
    qb = int4_linear_class().from_linear(linear, torch.bfloat16)
    fallback = (x.reshape(-1, 64).bfloat16() @ qb.dequantize().bfloat16().T + qb.bias).reshape(3, 5, 48)
    assert (qb(x.bfloat16()).float() - fallback.float()).abs().max() < 0.02 * fallback.float().abs().max()


def test_int4_refuses_a_group_size_that_does_not_divide_the_layers(merged, tmp_path):
    cfg = LOOSE.model_copy(update={"group_size": 48})
    with pytest.raises(CompressError, match="group_size"):
        quantize(merged.path, tmp_path / "int4", cfg, method="int4")
    assert not (tmp_path / "int4").exists()


def test_int4_artifact_reloads_and_the_engine_serves_it_like_generate(merged, tmp_path, engine_vs_generate):
    """int4 layers (head at int8) survive save → load, are smaller than int8, and the engine's fused path
    (int4 q/k/v and gate/up concatenated) produces the loaded model's own greedy tokens."""
    from tuneforge.models.int4 import int4_linear_class

    artifact = quantize(merged.path, tmp_path / "int4", LOOSE, method="int4")
    spec = artifact.manifest["compression"]
    assert (spec["method"], spec["bits"], spec["group_size"]) == ("int4-weight-only", 4, 32)
    int8 = quantize(merged.path, tmp_path / "int8", LOOSE)
    size = (artifact.path / "model.safetensors").stat().st_size
    assert size < (int8.path / "model.safetensors").stat().st_size
    loaded, parent = load(str(artifact.path)), load(str(merged.path))
    assert isinstance(loaded.model.model.layers[1].mlp.down_proj, int4_linear_class())
    assert isinstance(loaded.model.lm_head, int8_linear_class())
    ids = [1, 9690, 198, 2683, 359, 253]
    with torch.no_grad():
        x = torch.tensor([ids])
        got, want = loaded.model(input_ids=x).logits.float(), parent.model(input_ids=x).logits
        # 4 bits on the tiny model's random Gaussian weights cost ~30 % of the logits' size (SmolLM2's trained
        # weights: see docs/compression.md); a broken save/load costs all of it
        assert (got - want).abs().mean() < 0.4 * want.abs().mean()
    served, greedy, runner = engine_vs_generate(loaded, ids, 6)
    assert runner.fused is not None
    assert served == greedy


def test_nf4_artifact_loads_through_bitsandbytes(merged, tmp_path):
    """nf4: float weights on disk, bitsandbytes Linear4bit layers after load (its CPU backend here)."""
    artifact = quantize(merged.path, tmp_path / "nf4", LOOSE, method="nf4")
    spec = artifact.manifest["compression"]
    assert (spec["method"], spec["bits"], spec["library"]) == ("nf4", 4, "bitsandbytes")
    loaded, parent = load(str(artifact.path)), load(str(merged.path))
    assert loaded.info["quantization"] == "nf4"
    assert type(loaded.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253]])
    with torch.no_grad():
        got, want = loaded.model(input_ids=ids).logits.float(), parent.model(input_ids=ids).logits
    assert (got - want).abs().mean() < 0.4 * want.abs().mean()


def test_quantize_takes_a_model_reference_and_serves_its_adapters(tiny_adapter, tmp_path):
    """A base named as `models.load` takes it (no artifact) quantizes as it is; the result records the float
    weights it stands for, so an adapter trained on them is served over it (QLoRA-style) and others are not."""
    from tuneforge.core.config import ServeConfig
    from tuneforge.core.errors import TuneforgeError
    from tuneforge.models.loader import fingerprint
    from tuneforge.serve.server import build_engine

    base = tiny_adapter.manifest["base_model"]
    artifact = quantize(base, tmp_path / "int8-base", LOOSE)
    m = artifact.manifest
    assert m["parents"] == [] and m["base_model"] == base
    assert m["compression"]["weights_of"] == [fingerprint(base)]
    assert m["compression"]["parent"] == fingerprint(base)
    cfg = ServeConfig(adapters={"support": str(tiny_adapter.path)}, max_num_seqs=2, max_model_len=64)
    engine = build_engine(str(artifact.path), cfg, "base")
    try:
        assert engine.adapter_names() == ["support"]
    finally:
        engine.shutdown()
    other = quantize(artifact.path, tmp_path / "int8-again", LOOSE, allow_requantize=True)
    assert other.manifest["compression"]["weights_of"] == [fingerprint(artifact.path), fingerprint(base)]
    merged = merge(tiny_adapter.path, tmp_path / "merged", LOOSE)  # other weights than the adapter's base
    with pytest.raises(TuneforgeError, match="serve.adapters.support: .*trained on base"):
        build_engine(str(merged.path), cfg, "merged")


def test_quantize_names_a_missing_local_path_without_trying_the_hub(tmp_path):
    with pytest.raises(CompressError, match="no such artifact or model folder"):
        quantize(tmp_path / "missing", tmp_path / "q", LOOSE)
    assert not (tmp_path / "q").exists()


def _as_written_before_formats(artifact_path):
    """Rewrite a quantized artifact as tuneforge wrote it before formats were declared (no `format` key in
    `quantization.json` nor in the manifest's `compression`), sealed again."""
    import json

    from tuneforge.core.artifacts import _content_hash, sha256_file

    spec_path = artifact_path / "quantization.json"
    spec = json.loads(spec_path.read_text())
    del spec["format"]
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    manifest_path = artifact_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["compression"]["format"]
    manifest["files"]["quantization.json"] = sha256_file(spec_path)
    manifest["content_hash"] = _content_hash(manifest["files"])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


@pytest.mark.parametrize("method", ["int4", "dynamic-int8"])
def test_artifacts_from_before_declared_formats_still_load(merged, tmp_path, method):
    from tuneforge.models.formats import declared_kind

    artifact = quantize(merged.path, tmp_path / method, LOOSE, method=method)
    assert artifact.manifest["compression"]["format"] == method
    assert json.loads((artifact.path / "quantization.json").read_text())["format"] == method
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253]])
    with torch.no_grad():
        now = load(str(artifact.path)).model(input_ids=ids).logits
    _as_written_before_formats(artifact.path)
    old = load(str(artifact.path))
    assert declared_kind(old_manifest := json.loads((artifact.path / "manifest.json").read_text())) == method
    assert "format" not in old_manifest["compression"]
    assert old.info["quantization"] == artifact.manifest["compression"]["method"]
    with torch.no_grad():
        torch.testing.assert_close(old.model(input_ids=ids).logits, now)


def test_old_adapter_manifests_say_their_format_by_method():
    from tuneforge.models.loader import adapter_format

    assert adapter_format({"method": "adapter"}) == "bottleneck"
    assert adapter_format({"method": "lora"}) == adapter_format({}) == "peft"
    assert adapter_format({"method": "adapter", "adapter_format": "peft"}) == "peft"  # declared wins
