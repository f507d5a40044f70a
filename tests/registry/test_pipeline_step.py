"""`tuneforge run` ending with `registry: {name, promote_to}`: the run's adapter is registered with its eval
report attached and promoted through the alias's policy; a rerun is idempotent."""

from __future__ import annotations

import pytest

from tuneforge.core.config import load_pipeline
from tuneforge.pipeline import register_run
from tuneforge.registry import RegistryError, open_registry
from tuneforge.registry.lineage import history
from tuneforge.registry.versions import resolve


def test_run_registers_and_promotes(registry_cfg, model_name, tiny_adapter, tiny_eval):
    registry = {**registry_cfg.model_dump(mode="json"), "name": model_name, "promote_to": "staging"}
    cfg = load_pipeline(None, values={"registry": registry})
    assert register_run(cfg, tiny_adapter.path, tiny_eval.path) == f"{model_name}/1"
    assert register_run(cfg, tiny_adapter.path, tiny_eval.path) == f"{model_name}/1"  # rerun: same version
    session = open_registry(cfg.registry)
    assert list(resolve(session, f"{model_name}@staging").evals) == [tiny_eval.content_hash]
    assert [e["action"] for e in history(session, model_name)] == ["register", "attach-eval", "promote"]

    refused = load_pipeline(None, values={"registry": {**registry, "promote_to": "canary"}})
    with pytest.raises(RegistryError, match="domain_accuracy >= 0.9"):
        register_run(refused, tiny_adapter.path, tiny_eval.path)


def test_a_refused_promotion_leaves_the_run_registered_and_says_why(registry_cfg, model_name, tiny_adapter,
                                                                     tiny_eval, tmp_path):
    """`tuneforge run` whose gates fail: the version is registered, the alias is not moved, the run says which
    gate failed (and `run --gate` turns that into exit 1) instead of a traceback after a long training."""
    import shutil

    from tuneforge.pipeline import run_pipeline

    registry = {**registry_cfg.model_dump(mode="json"), "name": model_name, "promote_to": "canary"}
    cfg = load_pipeline(None, values={"registry": registry, "stages": [], "output_dir": str(tmp_path)})
    shutil.copytree(tiny_adapter.path, cfg.run_dir / "adapter")
    shutil.copytree(tiny_eval.path, cfg.run_dir / "eval")
    result = run_pipeline(cfg)
    assert result.registered == f"{model_name}/1"
    assert result.refused is not None and "domain_accuracy >= 0.9" in result.refused
    session = open_registry(cfg.registry)
    assert "canary" not in session.backend.aliases(model_name)
    assert [e["action"] for e in history(session, model_name)] == ["register", "attach-eval", "refused"]
