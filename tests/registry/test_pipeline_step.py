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
