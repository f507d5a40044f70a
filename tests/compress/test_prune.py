"""Prune: magnitude (global/per-layer), 2:4 and structured, each checked against its parent; bad input refused."""

import pytest
import torch

from tuneforge.compress.merge import merge
from tuneforge.compress.prune import PROJECTIONS, prune
from tuneforge.core.config import CompressConfig, ParityConfig, PruneConfig
from tuneforge.core.errors import CompressError
from tuneforge.models import load

LOOSE = ParityConfig(max_prompts=3, max_new_tokens=4, min_agreement=0.0, max_mean_logit_diff=100.0)


def cfg(**prune) -> CompressConfig:
    return CompressConfig(parity=LOOSE, prune=PruneConfig(**prune))


@pytest.fixture(scope="module")
def merged(tiny_adapter, tmp_path_factory):
    return merge(tiny_adapter.path, tmp_path_factory.mktemp("pm") / "merged", CompressConfig(parity=LOOSE))


def projections(model):
    return [layer.get_submodule(name).weight for layer in model.model.layers for name in PROJECTIONS]


def test_magnitude_per_layer_zeroes_the_smallest_share_of_every_matrix(merged, tmp_path):
    artifact = prune(merged.path, tmp_path / "p", cfg(method="magnitude", sparsity=0.4, scope="per-layer"))
    parent, child = load(str(merged.path)), load(str(artifact.path))
    for before, after in zip(projections(parent.model), projections(child.model), strict=True):
        assert abs(float((after == 0).float().mean()) - 0.4) < 0.01
        kept = after != 0
        assert torch.equal(after[kept], before[kept])  # survivors untouched
        assert before[~kept].abs().max() <= before[kept].abs().min()  # the smallest went
    spec = artifact.manifest["compression"]
    assert spec["operation"] == "prune" and spec["scope"] == "per-layer" and abs(spec["sparsity"] - 0.4) < 0.01
    assert spec["parent"] == merged.content_hash
    assert torch.equal(child.model.model.embed_tokens.weight, parent.model.model.embed_tokens.weight)


def test_magnitude_global_uses_one_threshold_so_matrices_differ(merged, tmp_path):
    artifact = prune(merged.path, tmp_path / "p", cfg(method="magnitude", sparsity=0.5, scope="global"))
    parent, child = load(str(merged.path)), load(str(artifact.path))
    after = projections(child.model)
    before = projections(parent.model)
    threshold = max(float(b.detach()[a == 0].abs().max()) for a, b in zip(after, before, strict=True) if (a == 0).any())
    assert all(float(a.detach()[a != 0].abs().min()) >= threshold for a in after)
    shares = [float((a == 0).float().mean()) for a in after]
    assert abs(sum((a == 0).sum().item() for a in after) / sum(a.numel() for a in after) - 0.5) < 0.01
    assert max(shares) - min(shares) > 0.02  # one threshold: matrices of different scale lose different shares


def test_two_four_keeps_two_largest_of_every_four(merged, tmp_path):
    artifact = prune(merged.path, tmp_path / "p", cfg(method="2:4"))
    parent, child = load(str(merged.path)), load(str(artifact.path))
    for before, after in zip(projections(parent.model), projections(child.model), strict=True):
        groups_after, groups_before = after.view(after.shape[0], -1, 4), before.view(before.shape[0], -1, 4)
        assert torch.equal((groups_after != 0).sum(-1), torch.full(groups_after.shape[:2], 2))
        top2 = groups_before.abs().topk(2, dim=-1).indices.sort(-1).values
        assert torch.equal((groups_after != 0).nonzero()[:, -1].view(*groups_after.shape[:2], 2), top2)
    assert artifact.manifest["compression"]["sparsity"] == 0.5


def test_structured_removes_channels_and_heads_for_real(merged, tmp_path, engine_vs_generate):
    """The pruned model is smaller in parameters and config, loads on its own, and the engine serves it
    token for token like its own generate (the runner reads head counts from the smaller config)."""
    artifact = prune(merged.path, tmp_path / "p", cfg(method="structured", sparsity=0.5, targets=["mlp", "heads"]))
    spec = artifact.manifest["compression"]
    assert spec["parameters_after"] < spec["parameters_before"]
    child = load(str(artifact.path))
    config = child.model.config
    assert config.intermediate_size == 64 and config.num_attention_heads == 2 and config.num_key_value_heads == 2
    assert child.model.model.layers[0].mlp.down_proj.weight.shape == (64, 64)
    assert child.model.model.layers[0].self_attn.q_proj.weight.shape == (2 * 16, 64)
    assert sum(p.numel() for p in child.model.parameters()) == spec["parameters_after"]
    got, want, _ = engine_vs_generate(child, [1, 5, 9, 200, 3000], 5)
    assert got == want


def test_structured_keeps_the_highest_scoring_mlp_channels(merged, tmp_path):
    artifact = prune(merged.path, tmp_path / "p", cfg(method="structured", sparsity=0.25, targets=["mlp"]))
    parent, child = load(str(merged.path)), load(str(artifact.path))
    mlp, small = parent.model.model.layers[0].mlp, child.model.model.layers[0].mlp
    score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
    kept = score.topk(96).indices.sort().values
    assert torch.equal(small.gate_proj.weight, mlp.gate_proj.weight[kept])
    assert torch.equal(small.down_proj.weight, mlp.down_proj.weight[:, kept])


def test_prune_refuses_bad_input(merged, tiny_adapter, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="sparsity"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(ValidationError, match="sparsity"):
        cfg().prune.sparsity = -0.1  # assignment is validated too
    with pytest.raises(CompressError, match="compress merge` first"):
        prune(tiny_adapter.path, tmp_path / "p", cfg())
    strict = CompressConfig(parity=ParityConfig(max_prompts=3, max_new_tokens=8), prune=PruneConfig(sparsity=0.9))
    with pytest.raises(CompressError, match="parity check"):
        prune(merged.path, tmp_path / "p", strict)
    assert not (tmp_path / "p").exists()


def test_cli_prune_rejects_out_of_range_sparsity_naming_the_field(merged, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "250"}  # rich wraps at the terminal width
    result = subprocess.run([sys.executable, "-m", "tuneforge", "compress", "prune", str(merged.path), "-o",
                             str(tmp_path / "p"), "--sparsity", "1.2"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "compress.prune.sparsity" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p").exists()


def _train_loss(model, rows, pad_id) -> float:
    from tuneforge.train.batching import make_batch

    batch = make_batch(rows, pad_id, False)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(),
                                                   ignore_index=-100))  # targets are already shifted


def test_recovery_fine_tune_keeps_every_pruned_zero_and_lowers_the_loss(merged, tiny_config, tiny_dataset, tmp_path):
    """--recover trains all weights but the pruned ones: the zeros of the unrecovered model are exactly the
    zeros after recovery, the survivors moved, the training loss fell, and the manifest says how."""
    from tuneforge.data.prepare import read_split

    opts = cfg(method="magnitude", sparsity=0.5, recover_steps=12, recover_lr=0.003)
    plain = prune(merged.path, tmp_path / "plain", opts)
    recovered = prune(merged.path, tmp_path / "recovered", opts, recover=tiny_dataset.path,
                      train_cfg=tiny_config.train)
    before, after = load(str(plain.path)), load(str(recovered.path))
    moved = 0
    for a, b in zip(projections(before.model), projections(after.model), strict=True):
        assert torch.equal(a == 0, b == 0)  # not one pruned weight came back, none newly zeroed
        moved += int((a != b).sum())
    assert moved > 0
    rows = read_split(tiny_dataset, "train")[:16]
    pad = before.tokenizer.pad_token_id
    assert _train_loss(after.model, rows, pad) < _train_loss(before.model, rows, pad)
    spec = recovered.manifest["compression"]
    assert spec["recovery"]["dataset"] == tiny_dataset.content_hash and spec["recovery"]["steps"] == 12
    assert spec["recovery"]["lr"] == 0.003 and spec["parent"] == merged.content_hash
    assert spec["recovery"]["distilled_from_parent"] is True  # the default: KL to the unpruned parent too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # scratch removed


def test_recovery_refuses_a_missing_dataset_and_keep_sparsity_outside_full(merged, tiny_config, tiny_dataset,
                                                                            tmp_path):
    from tuneforge.core.errors import ConfigError, TuneforgeError
    from tuneforge.train.loop import train

    with pytest.raises(TuneforgeError, match="no-such-dataset"):
        prune(merged.path, tmp_path / "p", cfg(), recover=tmp_path / "no-such-dataset")
    assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match="keep_sparsity"):
        train(tiny_dataset, tiny_config.model, tiny_config.train.model_copy(update={"keep_sparsity": True}),
              tmp_path / "lora")
