"""`tuneforge registry …` through typer's CliRunner, over both backends: output, exit codes, named errors."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tuneforge.core.registry_config import RegistryConfig
from tuneforge.registry import RegistryError
from tuneforge.registry.cli import app
from tuneforge.registry.open import current_user

COMMANDS = ["register", "list", "show", "diff", "promote", "approve", "rollback", "history", "verify"]


@pytest.fixture
def tf(registry_cfg, tmp_path):
    """Run a registry command as USER against the test's registry; returns the CliRunner result."""
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"registry": registry_cfg.model_dump(mode="json")}))
    runner = CliRunner()

    def run(user: str, *args: str):
        return runner.invoke(app, [*map(str, args), "-c", str(pipeline)], env={"TUNEFORGE_USER": user,
                                                                                "COLUMNS": "200"})

    return run


def test_cli_story(tf, model_name, tiny_adapter, tiny_eval):
    name = model_name
    first = tf("alice", "register", tiny_adapter.path, "--name", name, "--eval", tiny_eval.path)
    assert first.exit_code == 0, first.output
    assert f"registered {name}/1  adapter {tiny_adapter.content_hash[:12]}" in first.output
    assert "by alice" in first.output
    again = tf("bob", "register", tiny_adapter.path, "--name", name)
    assert "already registered (same content hash): " + f"{name}/1" in again.output

    refused = tf("alice", "promote", f"{name}/1", "--to", "canary")
    assert refused.exit_code == 1
    assert f"promotion of {name}/1 to @canary refused: gate(s) failed: domain_accuracy >= 0.9 (got 0)" in refused.output
    staged = tf("alice", "promote", f"{name}/1", "--to", "staging")
    assert staged.exit_code == 0 and "gate val_loss <= 50:" in staged.output and f"@staging of {name} → version 1" \
        in staged.output
    asked = tf("alice", "promote", f"{name}@staging", "--to", "production")
    assert asked.exit_code == 0 and "waits for approval (0/1)" in asked.output
    self_approved = tf("alice", "approve", name, "--alias", "production")
    assert self_approved.exit_code == 1 and "cannot approve it" in self_approved.output
    approved = tf("bob", "approve", name, "--alias", "production")
    assert approved.exit_code == 0 and f"@production of {name} → version 1 (new alias)" in approved.output

    listed = json.loads(tf("carol", "list", name, "--json").output)
    assert [(v["number"], sorted(v["aliases"])) for v in listed] == [(1, ["production", "staging"])]
    shown = tf("carol", "show", f"{name}@production")
    assert shown.exit_code == 0
    for text in ("aliases: @production, @staging", "gate domain_accuracy >= 0.9: 0 FAIL", "lineage",
                 "base model tiny-random-llama", "raw data", "instruct.jsonl", "dataset"):
        assert text in shown.output, text
    moves = json.loads(tf("carol", "history", name, "--moves", "--json").output)
    assert [(e["alias"], e["user"], e["to"], e.get("approved_by")) for e in moves] == [
        ("staging", "alice", 1, None), ("production", "bob", 1, ["bob"])]
    table = tf("carol", "history", name)
    assert "refused" in table.output and "failed: domain_accuracy" in table.output
    same = tf("carol", "diff", f"{name}/1", f"{name}@production")
    assert same.exit_code == 0 and "(same artifact)" in same.output
    verified = tf("carol", "verify")
    assert verified.exit_code == 0 and "ok:" in verified.output


def test_cli_errors_name_what_is_unknown(tf, model_name, tiny_adapter, tmp_path):
    assert tf("alice", "register", tiny_adapter.path, "--name", model_name).exit_code == 0
    cases = {
        ("show", "nope"): "unknown model 'nope'",
        ("show", f"{model_name}/9"): f"model {model_name!r} has no version 9 (versions: 1)",
        ("show", f"{model_name}@prod"): f"model {model_name!r} has no alias 'prod'",
        ("show", "a/b/c"): "'a/b/c' is not a model reference",
        ("rollback", model_name, "--alias", "production"): f"model {model_name!r} has no alias 'production'",
        ("register", tmp_path / "missing", "--name", model_name): "no such artifact folder",
        ("register", tiny_adapter.path, "--name", "bad name"): "model name 'bad name'",
        ("history", "nope"): "unknown model 'nope'",
        ("promote", model_name, "--to", "production", "--force"): "'alice' is not in registry.admins",
    }
    for args, message in cases.items():
        result = tf("alice", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)


def test_cli_help_names_every_command():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert top.exit_code == 0 and all(c in top.output for c in COMMANDS)
    for command in COMMANDS:
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Example:" in result.output, command


def test_identity_is_never_blank(monkeypatch):
    import getpass

    monkeypatch.setenv("TUNEFORGE_USER", "  ")
    assert current_user(RegistryConfig(user="cfg-user")) == "cfg-user"
    monkeypatch.setenv("TUNEFORGE_USER", "env-user")
    assert current_user(RegistryConfig(user="cfg-user")) == "env-user"
    monkeypatch.delenv("TUNEFORGE_USER")

    def no_user():
        raise OSError("no passwd entry")

    monkeypatch.setattr(getpass, "getuser", no_user)
    with pytest.raises(RegistryError, match="no identity: set TUNEFORGE_USER"):
        current_user(RegistryConfig())
