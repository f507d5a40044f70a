"""The UI's app in-process (no browser, no worker): forms from the config schema, bad input named by field,
uploads all-or-nothing, the login gate off loopback, the metrics summary."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import PipelineConfig, TrainConfig, load_pipeline
from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.ui import forms
from tuneforge.ui.app import create_app
from tuneforge.ui.config import UIConfig
from tuneforge.ui.serving import summarize

KEY = "correct-horse-battery-staple"


def _client(tmp_path, **ui) -> TestClient:
    cfg = UIConfig(workspace=tmp_path / "ws", review_db=str(tmp_path / "review.db"), **ui)
    pipeline = PipelineConfig.model_validate({"output_dir": str(tmp_path / "runs"),
                                              "registry": {"root": str(tmp_path / "registry")}})
    return TestClient(create_app(cfg, pipeline))


def test_train_form_is_the_schema_with_the_configs_values():
    """Every scalar field of TrainConfig is in the form, with the value the config holds: no default is
    written in the UI, and a pipeline's value replaces the default."""
    items = forms.build(TrainConfig, TrainConfig().model_dump(mode="json"), "train")
    flat = forms._flat(items)
    defaults = TrainConfig()
    assert flat["train.lr"].value == defaults.lr and flat["train.method"].value == defaults.method
    assert flat["train.method"].options == list(TrainConfig.model_json_schema()["properties"]["method"]["enum"])
    assert flat["train.lora.r"].value == defaults.lora.r and flat["train.max_steps"].nullable
    assert flat["train.gradient_checkpointing"].kind == "checkbox"
    assert flat["train.batch_size"].kind == "yaml"  # int or "auto"
    custom = TrainConfig(lr=0.01, lora={"r": 4})
    flat = forms._flat(forms.build(TrainConfig, custom.model_dump(mode="json"), "train"))
    assert (flat["train.lr"].value, flat["train.lora.r"].value) == (0.01, 4)


def test_submitted_form_validates_like_a_yaml_file():
    current = TrainConfig().model_dump(mode="json")
    cfg = forms.parse(TrainConfig, current, "train", {"train.lr": "2e-3", "train.batch_size": "auto",
                                                      "train.max_steps": "", "train.lora.target_modules": "[q, v]"})
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.lora.target_modules) == (2e-3, "auto", None, ["q", "v"])
    with pytest.raises(forms.FormError) as bad:
        forms.parse(TrainConfig, current, "train", {"train.lr": "-1", "train.lora.r": "x", "train.nope": "1"})
    assert set(bad.value.fields) == {"train.lr", "train.lora.r", "train.nope"}
    assert "greater than 0" in bad.value.fields["train.lr"] and "'-1'" in bad.value.fields["train.lr"]


def test_bad_input_answers_400_naming_the_field_and_starts_nothing(tmp_path):
    client = _client(tmp_path)
    reply = client.put("/api/uploads/rows.jsonl", content=b'{"instruction": "a", "output": "b"}\n[1, 2]\n')
    assert reply.status_code == 400 and reply.json()["fields"] == {
        "file": "rows.jsonl line 2: expected a JSON object per line"}
    assert not list((tmp_path / "ws" / "uploads").iterdir())  # nothing half-written
    assert client.put("/api/uploads/..%2Fescape.jsonl", content=b"{}").status_code in (400, 404)
    assert client.put("/api/uploads/rows.exe", content=b"x").json()["fields"]["file"].startswith("rows.exe: expected")
    good = client.put("/api/uploads/rows.jsonl", content=b'{"instruction": "a", "output": "b"}\n')
    assert good.status_code == 200 and (tmp_path / "ws" / "uploads" / "rows.jsonl").is_file()
    reply = client.post("/api/jobs/prepare", json={"files": [good.json()["path"]],
                                                   "values": {"data.max_length": "4"}})
    assert reply.status_code == 400 and "greater than or equal to 16" in reply.json()["fields"]["data.max_length"]
    reply = client.post("/api/jobs/train", json={"dataset": str(tmp_path / "nowhere"), "values": {}})
    assert reply.status_code == 400 and "not one of the artifacts" in reply.json()["fields"]["dataset"]
    assert client.get("/api/jobs").json() == []  # no worker was started
    for page in ("data", "train", "eval", "registry", "playground", "review", "monitor"):
        assert client.get(f"/{page}").status_code == 200, page


def test_a_non_loopback_bind_needs_a_key_and_checks_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEFORGE_UI_KEY", raising=False)
    with pytest.raises(ConfigError, match="TUNEFORGE_UI_KEY"):
        _client(tmp_path, host="0.0.0.0")
    monkeypatch.setenv("TUNEFORGE_UI_KEY", KEY)
    client = _client(tmp_path, host="0.0.0.0")
    page = client.get("/data", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/static/ui.css").status_code == 200  # the login page needs its assets
    assert client.post("/login", json={"key": KEY[:-1]}).status_code == 401
    assert client.post("/login", json={"key": KEY}).status_code == 200
    assert client.get("/data").status_code == 200 and client.get("/api/jobs").json() == []
    other = _client(tmp_path, host="0.0.0.0")
    assert other.get("/api/jobs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert other.get("/api/jobs", cookies={"tuneforge_ui": "forged"}).status_code == 401


def test_loopback_needs_no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEFORGE_UI_KEY", raising=False)
    assert _client(tmp_path).get("/data").status_code == 200


def test_metrics_summary_from_the_servers_own_registry():
    """The summary reads what `tuneforge serve` exports (monitor.metrics), not a hand-written page."""
    from prometheus_client import generate_latest

    from tuneforge.monitor.metrics import ServingMetrics

    metrics = ServingMetrics()
    labels = {"model_name": "m", "adapter": ""}
    for seconds in (0.01, 0.02, 0.03, 0.5):
        metrics.time_to_first_token.labels(**labels).observe(seconds)
    metrics.generation_tokens.labels(**labels).inc(120)
    metrics.request_success.labels(**labels, finished_reason="stop").inc(3)
    metrics.request_success.labels(**labels, finished_reason="error").inc(1)
    metrics.rejected.labels(model_name="m", status="429").inc(2)
    metrics.waiting.labels(model_name="m").set(5)
    summary = summarize(generate_latest(metrics.registry).decode())
    assert summary["generation_tokens"] == 120 and summary["waiting"] == 5
    assert summary["finished"] == {"stop": 3, "error": 1} and summary["errors"] == 3
    assert summary["ttft"]["count"] == 4 and summary["ttft"]["mean"] == pytest.approx(0.14)
    assert 0.01 <= summary["ttft"]["p50"] <= 0.05 and summary["ttft"]["p95"] > 0.1


def test_ui_config_refuses_bad_values_by_name(tmp_path):
    from tuneforge.core.config import build_config

    with pytest.raises(ConfigError, match="ui.port"):
        build_config(UIConfig, {"port": 70000}, prefix="ui")
    assert load_pipeline(None).train == TrainConfig()


def test_a_job_stopped_while_its_worker_starts_reads_stopped(tmp_path):
    """SIGTERM lands before the worker has imported enough to record its own end (it dies by the default
    action): the manager records the stop, so the job is `stopped`, not left `starting` or called failed."""
    from tuneforge.ui.jobs import Jobs

    jobs = Jobs(tmp_path / "ws")
    job_id = jobs.start("plan", PipelineConfig().model_dump(mode="json"), {})
    status = jobs.stop(job_id)  # at once: the worker is still importing torch
    assert status["state"] == "stopped" and status["finished_at"]
    with pytest.raises(TuneforgeError, match="not running"):
        jobs.stop(job_id)
