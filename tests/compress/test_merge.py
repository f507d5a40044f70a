"""Merge: an adapter folded into its base answers like the adapter; wrong bases and unmergeable methods refused."""

import json

import pytest
import torch

from tuneforge.compress.merge import merge
from tuneforge.core.config import CompressConfig, ParityConfig
from tuneforge.core.errors import CompressError
from tuneforge.models import load


def test_merge_matches_adapter_and_records_what_was_done(tiny_adapter, tmp_path):
    cfg = CompressConfig(parity=ParityConfig(max_prompts=6, max_new_tokens=8, min_agreement=1.0,
                                             max_mean_logit_diff=1e-3))
    merged = merge(tiny_adapter.path, tmp_path / "merged", cfg)
    assert merged.kind == "model"
    m = merged.manifest
    assert m["compression"]["operation"] == "merge" and m["compression"]["parent"] == tiny_adapter.content_hash
    assert m["parents"][0]["content_hash"] == tiny_adapter.content_hash
    assert m["base_fingerprint"] == tiny_adapter.manifest["base_fingerprint"]
    assert m["chat_template_hash"] == tiny_adapter.manifest["chat_template_hash"]
    parity = json.loads(merged.file("parity.json").read_text())
    assert parity["agreement"] == 1.0 and parity["mean_logit_diff"] < 1e-4
    # The merged folder loads as a plain model (no PEFT) with the adapter's outputs.
    plain, adapted = load(str(merged.path)), load(str(tiny_adapter.path))
    assert plain.source == "artifact-model"
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253]])
    with torch.no_grad():
        torch.testing.assert_close(plain.model(input_ids=ids).logits, adapted.model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_merge_into_another_base_is_refused(tiny_adapter, tmp_path):
    from tuneforge.models.loader import TINY

    other = tmp_path / "other-base"
    loaded = load(TINY)
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
    loaded.model.save_pretrained(other)
    loaded.tokenizer.save_pretrained(other)
    with pytest.raises(CompressError, match="was trained on 'tiny-random-llama'.*fingerprint"):
        merge(tiny_adapter.path, tmp_path / "merged", CompressConfig(), base=str(other))
    assert not (tmp_path / "merged").exists()


def test_parity_failure_writes_nothing(tiny_adapter, tmp_path, monkeypatch):
    import tuneforge.compress.merge as merge_module

    real = merge_module.check

    def drifted(parent, child, cfg, kind="lossless", eval_cfg=None):
        with torch.no_grad():
            for p in child.model.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        return real(parent, child, cfg, kind, eval_cfg)

    monkeypatch.setattr(merge_module, "check", drifted)
    cfg = CompressConfig(parity=ParityConfig(max_prompts=4, max_new_tokens=6))
    with pytest.raises(CompressError, match="(?s)parity check.*FAILED"):
        merge(tiny_adapter.path, tmp_path / "merged", cfg)
    assert not (tmp_path / "merged").exists()


def test_unmergeable_method_is_refused(tiny_config, tiny_dataset, tmp_path):
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"method": "adapter", "max_steps": 1})
    artifact = train(tiny_dataset, tiny_config.model, cfg, tmp_path / "bottleneck")
    with pytest.raises(CompressError, match="cannot be folded.*merge supports lora"):
        merge(artifact.path, tmp_path / "merged", CompressConfig())
