"""`tuneforge serve registry:NAME@ALIAS`: the alias is resolved at start to its version's stored artifact, which
is what the engine loads and answers with; the served name defaults to NAME."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import ServeConfig
from tuneforge.core.registry_config import RegistryConfig
from tuneforge.registry import RegistryError, open_registry
from tuneforge.registry.promote import promote
from tuneforge.registry.versions import register
from tuneforge.serve.follow import resolve_model_ref
from tuneforge.serve.server import build_app


def test_serve_resolves_the_alias_at_start(tmp_path, tiny_adapter, tiny_eval):
    cfg = RegistryConfig(root=tmp_path / "registry", policies={"staging": {"gates": {"val_loss": "<= 50"}}})
    session = open_registry(cfg, user="alice")
    register(session, tiny_adapter.path, "support-bot", [tiny_eval.path])
    promote(session, "support-bot/1", "staging")

    resolved = resolve_model_ref("registry:support-bot@staging", cfg)
    assert (resolved.label, resolved.content_hash) == ("support-bot/1", tiny_adapter.content_hash)
    assert resolved.path == str(session.store.local_path(tiny_adapter.content_hash))
    assert resolve_model_ref(str(tiny_adapter.path), cfg).path == str(tiny_adapter.path)  # plain refs unchanged
    with pytest.raises(RegistryError, match="model 'support-bot' has no alias 'production'"):
        resolve_model_ref("registry:support-bot@production", cfg)

    serve_cfg = ServeConfig(max_tokens=8, max_num_seqs=2, max_model_len=256, dtype="float32")
    app, name = build_app("registry:support-bot@staging", serve_cfg, registry=cfg)
    try:
        client = TestClient(app)
        assert name == "support-bot"
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["support-bot"]
        reply = client.post("/v1/chat/completions", json={
            "model": "support-bot", "messages": [{"role": "user", "content": "What color is the Quokka lamp?"}],
            "max_tokens": 4, "temperature": 0})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        app.state.engine.shutdown()
