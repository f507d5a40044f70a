"""The issue's story, against a real MLflow server and again against the embedded default: register →
promote with passing gates → refused with failing gates (listed) → approval by a second identity →
a second version → rollback → history and verify → an edited or deleted audit line makes verify fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.core.artifacts import load_artifact
from tuneforge.core.errors import ArtifactError
from tuneforge.registry import RegistryError, open_registry
from tuneforge.registry.lineage import diff, history, show, verify
from tuneforge.registry.promote import approve, promote, rollback
from tuneforge.registry.versions import artifact_path, register, resolve


@pytest.mark.parametrize("registry_cfg", ["mlflow", "embedded", "postgres"], indirect=True)
def test_story(registry_cfg, model_name, tiny_adapter, tiny_eval, second_adapter, second_eval, tmp_path):
    alice, bob = open_registry(registry_cfg, user="alice"), open_registry(registry_cfg, user="bob")
    name = model_name

    v1, created = register(alice, tiny_adapter.path, name, [tiny_eval.path])
    assert created and v1.number == 1 and v1.content_hash == tiny_adapter.content_hash
    assert list(v1.evals) == [tiny_eval.content_hash]
    again, created = register(bob, tiny_adapter.path, name)  # idempotent on the content hash
    assert not created and again.number == 1 and again.evals == v1.evals

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_adapter.path, tampered)
    weights = next(p for p in tampered.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactError, match=f"{weights.name} was modified"):
        register(alice, tampered, name)

    moved = promote(alice, f"{name}/1", "staging")
    assert (moved.status, moved.to, moved.previous) == ("moved", 1, None)
    assert [(g["gate"], g["rule"], g["passed"]) for g in moved.gates] == [("val_loss", "<= 50", True)]
    assert alice.backend.aliases(name) == {"staging": 1}

    with pytest.raises(RegistryError, match=r"refused: gate\(s\) failed: domain_accuracy >= 0.9 \(got 0") as refused:
        promote(alice, f"{name}@staging", "canary")
    assert "val_loss" not in str(refused.value)  # only the failing gate is listed
    assert "canary" not in alice.backend.aliases(name)

    waiting = promote(alice, f"{name}@staging", "production")
    assert waiting.status == "pending" and "production" not in alice.backend.aliases(name)
    with pytest.raises(RegistryError, match="'alice' asked for this promotion and cannot approve it"):
        approve(alice, name, "production")
    approved = approve(bob, name, "production")
    assert (approved.status, approved.to, approved.approved_by) == ("moved", 1, ["bob"])
    assert resolve(alice, f"{name}@production").number == 1

    v2, created = register(alice, second_adapter.path, name, [second_eval.path])
    assert created and v2.number == 2
    assert promote(alice, f"{name}/2", "production").status == "pending"
    assert approve(bob, name, "production").to == 2
    assert alice.backend.aliases(name) == {"staging": 1, "production": 2}

    back = rollback(alice, name, "production", reason="answers got worse")
    assert (back.to, back.previous) == (1, 2)
    assert alice.backend.aliases(name)["production"] == 1
    with pytest.raises(RegistryError, match="no previous holder"):
        rollback(alice, name, "production")

    moves = [(e["action"], e["user"], e.get("from"), e["to"]) for e in history(alice, name, "production", True)]
    assert moves == [("promote", "bob", None, 1), ("promote", "bob", 1, 2), ("rollback", "alice", 2, 1)]
    entries = history(alice, name)
    assert [e["action"] for e in entries] == ["register", "attach-eval", "promote", "refused", "request", "approve",
                                              "promote", "register", "attach-eval", "request", "approve", "promote",
                                              "rollback"]
    assert entries[3]["gates"][0]["gate"] == "domain_accuracy" and entries[3]["gates"][0]["passed"] is False
    assert entries[6]["approved_by"] == ["bob"] and entries[6]["requested_by"] == "alice"
    assert all(e["user"] for e in entries)

    delta = diff(alice, f"{name}/1", f"{name}/2")
    assert delta["config"]["train.epochs"] == {"a": 6, "b": 2}
    # an attached eval report's numbers win over the manifest's own (the eval re-measures val_loss)
    assert delta["metrics"]["val_loss"]["delta"] == pytest.approx(
        second_eval.metrics["val_loss"] - tiny_eval.metrics["val_loss"])
    steps = (tiny_adapter.metrics["steps"], second_adapter.metrics["steps"])
    assert delta["metrics"]["steps"] == {"a": steps[0], "b": steps[1], "delta": steps[1] - steps[0]}

    info = show(alice, f"{name}@production")
    assert info["version"] == 1 and info["aliases"] == ["production", "staging"]
    assert info["evals"][0]["gates"] == tiny_eval.metrics["gates"]
    lineage = info["lineage"]
    assert lineage["base_model"]["name"] == "tiny-random-llama" and lineage["base_model"]["fingerprint"]
    dataset = lineage["parents"][0]
    assert dataset["kind"] == "dataset" and dataset["content_hash"] == tiny_adapter.manifest["parents"][0][
        "content_hash"]
    assert {Path(s["path"]).name for s in dataset["sources"]} == {"instruct.jsonl", "chat.jsonl"}  # the raw data
    assert all(len(s["sha256"]) == 64 for s in dataset["sources"])

    served, folder = artifact_path(alice, f"registry:{name}@production")  # what serving would load
    assert served.number == 1 and load_artifact(folder).content_hash == tiny_adapter.content_hash
    assert verify(alice).ok
    _tamper_and_detect(alice, entries)


def _tamper_and_detect(session, entries):
    """Edit one line → verify names it; delete one → names the gap; drop the last → names the truncation."""
    log = session.log.path
    original = log.read_text()
    lines = original.splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if json.loads(line)["seq"] == entries[6]["seq"])
    edited = json.loads(lines[target])
    edited["approved_by"] = ["mallory"]
    log.write_text("".join(lines[:target] + [json.dumps(edited, sort_keys=True) + "\n"] + lines[target + 1:]))
    verdict = verify(session)
    assert not verdict.ok and verdict.bad_seq == entries[6]["seq"] and "was edited" in verdict.problem

    log.write_text("".join(lines[:target] + lines[target + 1:]))
    verdict = verify(session)
    assert not verdict.ok and verdict.bad_seq == entries[6]["seq"] and "is missing" in verdict.problem

    log.write_text("".join(lines[:-1]))
    verdict = verify(session)
    assert not verdict.ok and verdict.bad_seq == entries[-1]["seq"] and "truncated" in verdict.problem

    log.write_text(original)
    assert verify(session).ok


def test_force_needs_admin_and_reason_and_is_logged(registry_cfg, model_name, tiny_adapter):
    alice = open_registry(registry_cfg, user="alice")
    register(alice, tiny_adapter.path, model_name)  # no eval attached: production's gate cannot pass
    with pytest.raises(RegistryError, match=r"val_loss <= 50 \(no attached eval report checked"):
        promote(alice, model_name, "production")
    with pytest.raises(RegistryError, match="'alice' is not in registry.admins"):
        promote(alice, model_name, "production", force=True, reason="hotfix")
    admin = open_registry(registry_cfg, user="root-admin")
    with pytest.raises(RegistryError, match="--force needs --reason"):
        promote(admin, model_name, "production", force=True)
    assert promote(admin, model_name, "production", force=True, reason="hotfix").status == "moved"
    last = history(admin, model_name)[-1]
    assert (last["action"], last["forced"], last["user"], last["reason"], last["to"]) == (
        "promote", True, "root-admin", "hotfix", 1)
    assert verify(admin).ok


def test_alias_moved_outside_tuneforge_fails_verify(registry_cfg, model_name, tiny_adapter):
    alice = open_registry(registry_cfg, user="alice")
    register(alice, tiny_adapter.path, model_name)
    alice.backend.set_alias(model_name, "production", 1)  # straight in the backend, no audit entry
    verdict = verify(alice)
    assert not verdict.ok and f"model {model_name!r}: @production points at version 1" in verdict.problem
    alice.backend.delete_alias(model_name, "production")
    assert verify(alice).ok


def test_unknown_references_are_named(registry_cfg, model_name, tiny_adapter):
    alice = open_registry(registry_cfg, user="alice")
    register(alice, tiny_adapter.path, model_name)
    with pytest.raises(RegistryError, match="unknown model 'nope'"):
        resolve(alice, "nope/1")
    with pytest.raises(RegistryError, match=f"model {model_name!r} has no version 7 \\(versions: 1\\)"):
        resolve(alice, f"{model_name}/7")
    with pytest.raises(RegistryError, match=f"model {model_name!r} has no alias 'prod' \\(aliases: none\\)"):
        resolve(alice, f"{model_name}@prod")
    with pytest.raises(RegistryError, match="no promotion of .* to @production is waiting"):
        approve(alice, model_name, "production")
