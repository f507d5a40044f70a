"""`tuneforge run PIPELINE.yaml`: prepare → train → eval → serve smoke test, artifacts under output_dir/name.

The orchestrator only passes artifacts between the stages' public functions. A stage left out of
`stages` reuses the artifact an earlier run left in the run folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tuneforge.core.artifacts import Artifact, is_artifact, load_artifact
from tuneforge.core.config import PipelineConfig, ServeConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.core.net import free_port, wait_ready
from tuneforge.core.progress import console


@dataclass
class RunResult:
    """Where a run's artifacts went and what the smoke test answered."""

    run_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    answers: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    registered: str | None = None  # NAME/VERSION when registry.name is set
    refused: str | None = None  # why registry.promote_to refused it (failing gates), when it did


def start_server(model_ref: str, cfg: ServeConfig, workdir: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start `tuneforge serve` as a real process on a free loopback port; return it and its base URL.

    The whole `serve:` section goes to the child as a config file (in `workdir`, or a temp folder removed
    once the child has read it).
    """
    port = free_port()
    name = cfg.served_model_name or "tuneforge-model"
    folder = Path(workdir or tempfile.mkdtemp(prefix="tuneforge-serve-"))
    config_file = folder / "serve.yaml"
    config_file.write_text(yaml.safe_dump({"serve": cfg.model_dump(mode="json", exclude={"api_key", "admin_key"})}))
    command = [sys.executable, "-m", "tuneforge", "serve", model_ref, "--config", str(config_file),
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", name]
    api_key, admin_key = cfg.keys()  # through the environment: never written to the config file
    keys = {k: v for k, v in (("TUNEFORGE_API_KEY", api_key), ("TUNEFORGE_ADMIN_KEY", admin_key)) if v}
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1", **keys})
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process)
    except BaseException:
        stop_server(process)
        raise
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return process, f"http://127.0.0.1:{port}/v1"


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def smoke_test(model_ref: str, cfg: ServeConfig, questions: list[str]) -> list[tuple[str, str]]:
    """Serve `model_ref` behind `tuneforge gateway`, as in production: the engine with its own key, the
    gateway in front with a demo tenant's key (a daily token budget), then ask `questions` through the
    gateway with the official openai SDK — the first question twice, the second time from the cache."""
    import secrets

    from openai import OpenAI
    from pydantic import SecretStr

    from tuneforge.gateway.keys import KeyPolicy, KeyStore
    from tuneforge.gateway.process import start_gateway

    engine_key = cfg.keys()[0] or secrets.token_urlsafe(24)
    process, base_url = start_server(model_ref, cfg.model_copy(update={"api_key": SecretStr(engine_key)}))
    folder = Path(tempfile.mkdtemp(prefix="tuneforge-demo-gateway-"))
    gateway = None
    try:
        name = cfg.served_model_name or "tuneforge-model"
        db = f"sqlite:///{folder / 'gateway.db'}"
        key, _ = KeyStore(db).create(KeyPolicy(tenant="demo", name="tuneforge run", budget_tokens=200_000,
                                               budget_period="day"))
        route = {"variants": {"v1": {"backends": [base_url], "model": name, "api_key": engine_key}},
                 "max_tokens": cfg.max_tokens}
        gateway, gateway_url = start_gateway({"database_url": db, "routes": {name: route}}, folder)
        client = OpenAI(base_url=gateway_url, api_key=key)
        answers = []
        for i, question in enumerate([*questions[:1], *questions]):
            reply = client.chat.completions.with_raw_response.create(
                model=name, messages=[{"role": "user", "content": question}], max_tokens=96, temperature=0)
            if i == 0:
                continue  # asked again next: that one comes from the gateway's cache
            answer = reply.parse().choices[0].message.content or ""
            answers.append((question, answer))
            if i == 1:
                left, cache = reply.headers.get("x-tuneforge-budget-remaining"), reply.headers.get("x-tuneforge-cache")
                console.print(f"through the gateway (tenant demo, {left} tokens of today's budget left): the "
                              f"repeated first question was a cache {cache}")
        return answers
    finally:
        if gateway is not None:
            stop_server(gateway)
        stop_server(process)
        shutil.rmtree(folder, ignore_errors=True)


def decontaminated(dataset: Artifact, questions: Path | None) -> Path | None:
    """The dataset's decontaminated copy of an evaluation file, when `data.contamination.drop` made one."""
    if questions is None:
        return None
    for item in dataset.metrics.get("contamination", []):
        if item.get("decontaminated") and Path(item["file"]) == Path(questions):
            return dataset.file(item["decontaminated"])
    return None


def _reuse(path: Path, kind: str) -> Artifact:
    if not is_artifact(path):
        raise TuneforgeError(f"stage needs the {kind} artifact at {path}; add its stage to `stages`")
    return load_artifact(path, kind=kind)


def register_run(cfg: PipelineConfig, model: Path, report: Path | None) -> str:
    """Register the run's model (its eval report attached) as `registry.name`, then promote it to
    `registry.promote_to` through that alias's policy; returns the version (NAME/N)."""
    from tuneforge.registry.open import open_registry
    from tuneforge.registry.promote import failing_text, promote
    from tuneforge.registry.versions import register

    if not is_artifact(model):
        raise TuneforgeError(f"registry.name is set but there is no model artifact at {model} to register")
    session = open_registry(cfg.registry)
    version, created = register(session, model, str(cfg.registry.name), [report] if report else [])
    console.print(f"{'registered' if created else 'already registered:'} {version.ref} "
                  f"({version.content_hash[:12]}…, {len(version.evals)} eval report(s)) by {session.user}")
    alias = cfg.registry.promote_to
    if alias and session.backend.aliases(version.name).get(alias) != version.number:
        move = promote(session, version.ref, alias)
        if move.status == "pending":
            console.print(f"{version.ref} → @{alias} waits for {move.approvals_needed} approval(s)")
        else:
            console.print(f"@{alias} → {version.ref}; gates: {failing_text(move.gates) or 'all passed'}")
    return version.ref


def run_pipeline(cfg: PipelineConfig) -> RunResult:
    """Run the configured stages in order."""
    from tuneforge.data.prepare import prepare
    from tuneforge.data.report import placeholder_note
    from tuneforge.eval.evaluate import run_eval
    from tuneforge.train.loop import train

    result = RunResult(run_dir=cfg.run_dir)
    paths = {name: (cfg.run_dir / name).absolute() for name in ("dataset", "adapter", "eval")}
    dataset = adapter = None

    def timed(stage: str):
        console.rule(f"[bold]{stage}")
        return time.perf_counter()

    if "prepare" in cfg.stages:
        t = timed("prepare")
        dataset = prepare(cfg.data, cfg.model, paths["dataset"])
        result.artifacts["dataset"] = dataset.path
        result.seconds["prepare"] = time.perf_counter() - t
        m = dataset.metrics
        console.print(f"dataset: {m['rows_train']} train / {m['rows_validation']} validation rows, "
                      f"{m['target_tokens_train']} target tokens → {dataset.path}")
        note = placeholder_note(m)
        if note:
            console.print(f"[yellow]{note}[/yellow]", highlight=False)
    if "train" in cfg.stages:
        t = timed("train")
        dataset = dataset or _reuse(paths["dataset"], "dataset")
        adapter = train(dataset, cfg.model, cfg.train, paths["adapter"])
        result.artifacts["adapter"] = adapter.path
        result.seconds["train"] = time.perf_counter() - t
    model_ref = str(adapter.path) if adapter else (
        str(paths["adapter"]) if is_artifact(paths["adapter"]) else cfg.model.name)
    if "eval" in cfg.stages:
        t = timed("eval")
        if dataset is None and is_artifact(paths["dataset"]):
            dataset = load_artifact(paths["dataset"], kind="dataset")
        eval_cfg = cfg.eval
        clean_copy = decontaminated(dataset, cfg.eval.questions) if dataset else None
        if clean_copy is not None:
            console.print(f"evaluating on the decontaminated copy {clean_copy}")
            eval_cfg = cfg.eval.model_copy(update={"questions": clean_copy})
        report = run_eval(model_ref, eval_cfg, paths["eval"], dataset, cfg.model.dtype)
        result.artifacts["eval"] = report.path
        result.seconds["eval"] = time.perf_counter() - t
        if cfg.eval.diagnose.enabled:  # say the likely cause and the knob when the tuning did not work
            from tuneforge.eval.diagnose import print_diagnosis

            print_diagnosis(report, model_ref, dataset, cfg.eval.diagnose)
    if cfg.registry.name:
        from tuneforge.registry.protocol import GatesFailed

        t = timed("registry")
        try:
            result.registered = register_run(cfg, Path(model_ref), result.artifacts.get("eval") or (
                paths["eval"] if is_artifact(paths["eval"]) else None))
        except GatesFailed as refusal:  # registered, not promoted: said here, and `run --gate` exits 1
            result.registered, result.refused = refusal.ref, str(refusal)
            console.print(f"[red]{refusal}[/red]", highlight=False)
        result.seconds["registry"] = time.perf_counter() - t
    if "serve" in cfg.stages and cfg.serve.smoke_questions:
        t = timed("serve")
        result.answers = smoke_test(model_ref, cfg.serve, cfg.serve.smoke_questions)
        result.seconds["serve"] = time.perf_counter() - t
    return result
