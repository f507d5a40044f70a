"""The UI's app in-process (no browser, no worker): forms from the config schema, bad input named by field,
uploads all-or-nothing, the login gate off loopback, the metrics summary."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import yaml
from fastapi.testclient import TestClient
from tests.servers import until

from tuneforge.core.config import EvalConfig, PipelineConfig, TrainConfig, load_pipeline
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
    current = TrainConfig()
    cfg = forms.parse(current, "train", {"train.lr": "2e-3", "train.batch_size": "auto",
                                        "train.max_steps": "", "train.lora.target_modules": "[q, v]"})
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.lora.target_modules) == (2e-3, "auto", None, ["q", "v"])
    with pytest.raises(forms.FormError) as bad:
        forms.parse(current, "train", {"train.lr": "-1", "train.lora.r": "x", "train.nope": "1"})
    assert set(bad.value.fields) == {"train.lr", "train.lora.r", "train.nope"}
    assert "greater than 0" in bad.value.fields["train.lr"] and "'-1'" in bad.value.fields["train.lr"]
    # a page posts every field: only the changed ones join what the config set; a shown default stays unset
    given = TrainConfig.model_validate({"epochs": 2, "lora": {"r": 4}})
    shown = {"train.epochs": "2", "train.lr": str(given.lr), "train.lora.r": "4",
             "train.lora.alpha": str(given.lora.alpha), "train.warmup_ratio": "0.1", "train.packing": True}
    cfg = forms.parse(given, "train", shown)
    assert cfg.model_fields_set == {"epochs", "lora", "warmup_ratio"} and cfg.lora.model_fields_set == {"r"}
    assert (cfg.epochs, cfg.lr, cfg.warmup_ratio, cfg.lora.r) == (2, given.lr, 0.1, 4)


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


class _Form(HTMLParser):
    """What a page's script posts for the form `form_id` (ui.js `collect`): its `[data-field]` inputs as shown."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.values: dict[str, str | bool] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.inside = self.inside or (tag == "form" and a.get("id") == self.form_id)
        name = a.get("data-field")
        if not self.inside:
            return
        if tag == "input" and name:
            self.values[name] = "checked" in a if a.get("type") == "checkbox" else a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and ("selected" in a or self._select not in self.values):
            self.values[self._select] = a.get("value") or ""  # the first option unless one is selected

    def handle_endtag(self, tag: str) -> None:
        self._select = None if tag == "select" else self._select
        self.inside = self.inside and tag != "form"


def _form(client: TestClient, page: str) -> dict[str, str | bool]:
    parser = _Form(f"{page}-form")
    parser.feed(client.get(f"/{page}").text)
    assert parser.values, f"no #{page}-form fields on /{page}"
    return parser.values


def _finished(client: TestClient, job_id: str) -> dict:
    status = until(lambda: (s := client.get(f"/api/jobs/{job_id}").json())["state"] not in ("starting", "running")
                   and s, seconds=600, what=f"job {job_id} to end")
    assert status["state"] == "done", status
    return status


def test_a_ui_job_derives_what_the_config_leaves_unset(tmp_path):
    """The page posts every field as shown; the worker's config still sets only what the YAML set and the form
    changed, so the training recipe chooses lr and epochs and the eval derives its answer budget, as `tuneforge
    run` does from the same YAML, while a YAML value and a changed field are kept."""
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.data.prepare import prepare, read_split
    from tuneforge.eval.budget import budget_for, longest_answer_tokens
    from tuneforge.models.loader import load_tokenizer
    from tuneforge.train.recipe import choose, data_shape

    long_answer = " ".join(f"Step {i}: press the blue Vexo button." for i in range(1, 13))
    rows = [{"instruction": f"Question {i} about Brindle?", "output": f"Brindle answer number {i}."}
            for i in range(8)] + [{"instruction": "How do I reset the Vexo router?", "output": long_answer}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "questions.jsonl").write_text(json.dumps({"question": "How do I reset the Vexo router?",
                                                          "key": "blue Vexo button"}) + "\n")
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "name": "ui-recipe", "output_dir": str(tmp_path / "runs"), "model": {"name": "tiny-random-llama"},
        "data": {"files": ["rows.jsonl"], "validation_fraction": 0.2, "max_length": 512,
                 "knowledge": {"enabled": False}},
        # lr, epochs, warmup_ratio left to the recipe; its auto lr and a short run set under train.auto
        "train": {"batch_size": 4, "lora": {"r": 4, "alpha": 8}, "forgetting": {"methods": []},
                  "auto": {"lr": 0.005, "exposures": 2, "min_steps": 2}},
        "eval": {"questions": "questions.jsonl", "general": False, "compare_base": False},  # max_new_tokens unset
        "registry": {"root": str(tmp_path / "registry")}}))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    dataset = prepare(pipeline.data, pipeline.model, pipeline.run_dir / "dataset")
    client = TestClient(create_app(UIConfig(workspace=tmp_path / "ws", review_db=str(tmp_path / "review.db")),
                                   pipeline))

    values = _form(client, "train")
    assert values["train.lr"] == str(TrainConfig().lr)  # the page shows the default the recipe will replace
    values["train.warmup_ratio"] = "0.2"  # the one field changed in the form
    job = client.post("/api/jobs/train", json={"dataset": str(dataset.path), "values": values}).json()
    adapter = load_artifact(_finished(client, job["id"])["result"]["artifact"])
    recipe = adapter.manifest["recipe"]
    assert recipe["chosen"]["lr"] == 0.005 and "epochs" in recipe["chosen"] and "warmup_ratio" not in recipe["chosen"]
    assert recipe["kept"] == ["forgetting.methods", "lora", "warmup_ratio"]
    # what `tuneforge run` chooses from the same YAML with warmup_ratio set
    cli_train = pipeline.train.model_copy(update={"warmup_ratio": 0.2})  # model_copy marks it set
    assert recipe == choose(cli_train, data_shape(read_split(dataset, "train")))[1]
    trained = adapter.manifest["config"]["train"]
    assert (trained["lr"], trained["epochs"], trained["warmup_ratio"]) == (0.005, recipe["chosen"]["epochs"], 0.2)
    assert (trained["lora"]["r"], trained["batch_size"]) == (4, 4)

    values = _form(client, "eval")
    job = client.post("/api/jobs/eval", json={"model": str(adapter.path), "dataset": str(dataset.path),
                                              "values": values}).json()
    report = load_artifact(_finished(client, job["id"])["result"]["artifact"])
    longest = longest_answer_tokens(read_split(dataset, "train"), load_tokenizer(dataset.manifest["tokenizer"]))
    floor = EvalConfig().max_new_tokens
    assert budget_for(longest, floor) > floor  # the long answer needs more than the fixed budget
    assert report.manifest["config"]["max_new_tokens"] == {"domain": budget_for(longest, floor)}
