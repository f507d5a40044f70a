"""The UI's HTTP app: server-rendered pages (Jinja2) and the small JSON API their script calls.

Every action is a call to a stage's public function: `data.prepare.prepare`, `train.loop.train` /
`memory_plan`, `eval.evaluate.run_eval` (in a worker process, see `ui.jobs`), the registry's `register`,
`promote`, `approve`, `rollback`, `history`, `lineage.show`, the review queue's `decide`. Bad input answers
400 with `{"error": ..., "fields": {dotted field: message}}`, and the page shows it next to the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from tuneforge.core.config import DataConfig, EvalConfig, PipelineConfig, TrainConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.ui import forms, serving, views
from tuneforge.ui.config import UIConfig
from tuneforge.ui.jobs import Jobs

HERE = Path(__file__).parent
UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
COOKIE = "tuneforge_ui"
# sections the forms leave out: data.files/sources are picked in the file list; search and distill have
# their own commands (`train --search`, `compress distill`)
SKIP = {"data": ("files", "sources"), "train": ("search", "distill"), "eval": ()}
PAGES = (("data", "Data"), ("train", "Train"), ("eval", "Eval"), ("registry", "Registry"),
         ("playground", "Playground"), ("review", "Review"), ("monitor", "Monitoring"))


@dataclass
class State:
    """What the app holds: its settings, the pipeline config the forms start from, the jobs."""

    ui: UIConfig
    pipeline: PipelineConfig
    jobs: Jobs
    login_key: str | None
    extra_roots: list[Path] = field(default_factory=list)

    @property
    def uploads(self) -> Path:
        return self.ui.workspace / "uploads"

    def roots(self) -> list[Path]:
        return [self.jobs.artifacts, self.pipeline.run_dir.absolute(), *self.extra_roots]

    def artifacts(self, *kinds: str) -> list[dict[str, Any]]:
        found = views.find_artifacts(self.roots())
        return [a for a in found if not kinds or a["kind"] in kinds]


class LoginGate:
    """One shared key; the session cookie is an HMAC of a fixed label under that key (stdlib `hmac`), every
    comparison `hmac.compare_digest` over SHA-256 digests, so a wrong key takes as long as a right one."""

    def __init__(self, key: str) -> None:
        self._digest = hashlib.sha256(key.encode()).digest()
        self.token = hmac.new(key.encode(), b"tuneforge-ui-session-v1", hashlib.sha256).hexdigest()

    def key_ok(self, given: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)

    def session_ok(self, request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return self.key_ok(bearer[7:].strip())
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                                   hashlib.sha256(self.token.encode()).digest())


def _error(exc: Exception, status: int = 400) -> JSONResponse:
    fields: dict[str, str] = {}
    if isinstance(exc, forms.FormError):
        fields = exc.fields
    elif isinstance(exc, views.FieldError):
        fields = {exc.field: str(exc).split(": ", 1)[1]}
    return JSONResponse({"error": str(exc), "fields": fields}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise TuneforgeError(f"request body: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TuneforgeError("request body: expected a JSON object")
    return data


def check_upload(name: str, content: bytes) -> str:
    """The upload's file name once its content reads as what the name says; an error naming the line if not."""
    clean = Path(name).name
    if clean != name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", clean):
        raise views.FieldError("file", f"{name!r}: use a plain file name (letters, digits, . _ -)")
    if not clean.endswith(UPLOAD_SUFFIXES):
        raise views.FieldError("file", f"{clean}: expected one of {', '.join(UPLOAD_SUFFIXES)}")
    if not content.strip():
        raise views.FieldError("file", f"{clean} is empty")
    if len(content) > MAX_UPLOAD_BYTES:
        raise views.FieldError("file", f"{clean} is over {MAX_UPLOAD_BYTES // 2**20} MiB")
    if clean.endswith((".jsonl", ".json", ".csv", ".tsv", ".txt")):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise views.FieldError("file", f"{clean}: not UTF-8 text (byte {exc.start})") from None
        if clean.endswith(".jsonl"):
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise views.FieldError("file", f"{clean} line {number}: not JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise views.FieldError("file", f"{clean} line {number}: expected a JSON object per line")
        elif clean.endswith(".json"):
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise views.FieldError("file", f"{clean} line {exc.lineno}: not JSON ({exc.msg})") from None
    return clean


def create_app(ui: UIConfig, pipeline: PipelineConfig) -> FastAPI:
    """The UI app over `pipeline`'s sections (the forms' starting values) and `ui`'s workspace."""
    ui = ui.model_copy(update={"workspace": ui.workspace.absolute()})
    state = State(ui=ui, pipeline=pipeline, jobs=Jobs(ui.workspace), login_key=ui.login_key())
    state.uploads.mkdir(parents=True, exist_ok=True)
    gate = LoginGate(state.login_key) if state.login_key else None
    templates = Environment(loader=PackageLoader("tuneforge.ui", "templates"), autoescape=select_autoescape())
    templates.filters["num"] = lambda v, d=4: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else v)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.close()  # a worker this UI started does not outlive it

    app = FastAPI(title="tuneforge ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.ui = state
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def login(request: Request, call_next):
        path = request.url.path
        if gate is None or path.startswith("/static/") or path == "/login" or gate.session_ok(request):
            return await call_next(request)
        if path.startswith("/api/"):
            return JSONResponse({"error": "log in first (POST /login with the UI key)"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(TuneforgeError)
    async def refused(request: Request, exc: TuneforgeError) -> JSONResponse:
        return _error(exc)

    def page(name: str, **context: Any) -> HTMLResponse:
        body = templates.get_template(f"{name}.html").render(
            pages=PAGES, active=name, login=gate is not None, servers=ui.servers, **context)
        return HTMLResponse(body)

    def section(name: str) -> tuple[type, dict[str, Any]]:
        model = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}[name]
        return model, getattr(pipeline, name).model_dump(mode="json")

    def form(name: str) -> list[forms.Field | forms.Group]:
        model, current = section(name)
        return forms.build(model, current, name, SKIP[name])

    # ---- pages -------------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/data", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_page() -> HTMLResponse:
        return page("login")

    @app.post("/login")
    async def login_post(request: Request) -> Response:
        if gate is None:
            return JSONResponse({"ok": True})
        body = await _body(request)
        if not gate.key_ok(str(body.get("key", ""))):
            return JSONResponse({"error": "wrong key", "fields": {"key": "wrong key"}}, status_code=401)
        reply = JSONResponse({"ok": True})
        reply.set_cookie(COOKIE, gate.token, httponly=True, samesite="strict")
        return reply

    @app.get("/data", response_class=HTMLResponse)
    async def data_page(dataset: str | None = None, split: str = "train", n: int = 3) -> HTMLResponse:
        datasets = state.artifacts("dataset")
        chosen = views.pick(datasets, dataset, ("dataset",), "dataset") if dataset else None
        files = sorted(str(p) for p in state.uploads.iterdir() if p.is_file() and not p.name.startswith("."))
        configured = [str(p) for p in pipeline.data.files]
        detail = None
        if chosen is not None:
            detail = {"artifact": chosen, "funnel": views.funnel(chosen), "dedup": views.near_duplicates(chosen),
                      "pii": chosen.metrics.get("pii_found", {}), "lengths": chosen.metrics.get("token_lengths", {}),
                      "contamination": views.contamination(chosen), "split": split,
                      "preview": views.preview(chosen, split, max(1, min(n, 20))),
                      "charts": [c for c in ("funnel.png", "token_lengths.png") if c in chosen.manifest["files"]]}
        return page("data", datasets=datasets, files=files, configured=configured, form=form("data"),
                    detail=detail)

    @app.get("/train", response_class=HTMLResponse)
    async def train_page() -> HTMLResponse:
        return page("train", datasets=state.artifacts("dataset"), form=form("train"),
                    model=pipeline.model.name)

    @app.get("/eval", response_class=HTMLResponse)
    async def eval_page(report: str | None = None) -> HTMLResponse:
        reports = state.artifacts("eval-report")
        chosen = views.pick(reports, report, ("eval-report",), "report") if report else None
        return page("eval", reports=reports, models=state.artifacts("adapter", "model"),
                    datasets=state.artifacts("dataset"), form=form("eval"),
                    report=chosen, view=views.eval_view(chosen) if chosen else None)

    @app.get("/registry", response_class=HTMLResponse)
    async def registry_page(user: str | None = None) -> HTMLResponse:
        from tuneforge.registry.lineage import history, show
        from tuneforge.registry.open import open_registry
        from tuneforge.registry.promote import pending
        from tuneforge.registry.versions import versions

        session = open_registry(pipeline.registry, user=user)
        models = []
        for name in session.backend.models():
            listed = [show(session, v.ref) for v in versions(session, name)]
            models.append({"name": name, "aliases": session.backend.aliases(name), "versions": listed,
                           "pending": pending(session, name), "history": history(session, name)[::-1][:30]})
        return page("registry", models=models, user=session.user,
                    policies={k: v.model_dump() for k, v in pipeline.registry.policies.items()},
                    registrable=state.artifacts("adapter", "model"), reports=state.artifacts("eval-report"),
                    root=str(pipeline.registry.tracking_uri or pipeline.registry.root))

    @app.get("/playground", response_class=HTMLResponse)
    async def playground_page() -> HTMLResponse:
        return page("playground")

    @app.get("/review", response_class=HTMLResponse)
    async def review_page(status: str = "pending") -> HTMLResponse:
        from tuneforge.serve.safety.review import ReviewQueue

        queue = ReviewQueue(ui.review_url())
        try:
            items = queue.list(None if status == "all" else status, limit=100)  # type: ignore[arg-type]
        finally:
            queue.close()
        return page("review", items=items, status=status, db=ui.review_url())

    @app.get("/monitor", response_class=HTMLResponse)
    async def monitor_page() -> HTMLResponse:
        return page("monitor")

    # ---- files and artifacts ---------------------------------------------------------------------------

    @app.put("/api/uploads/{name}")
    async def upload(name: str, request: Request) -> dict[str, Any]:
        content = await request.body()
        clean = check_upload(name, content)
        target = state.uploads / clean
        tmp = state.uploads / f".{clean}.{os.getpid()}.part"
        tmp.write_bytes(content)
        os.replace(tmp, target)  # all or nothing: a half-sent file never sits under its name
        return {"path": str(target), "bytes": len(content)}

    @app.get("/api/artifact-file")
    async def artifact_file(path: str, name: str) -> FileResponse:
        artifact = views.pick(state.artifacts(), path, ("dataset", "adapter", "model", "eval-report"), "path")
        return FileResponse(artifact.file(name))

    # ---- jobs ----------------------------------------------------------------------------------------

    def job_config(name: str, values: dict[str, Any]) -> dict[str, Any]:
        """The sections the worker validates: only what the pipeline file set and the form changed. A full dump
        would reload with every field set, and the training recipe and the eval's answer budget derive only
        the fields left unset (as `tuneforge run` does from the same YAML)."""
        parsed = forms.parse(getattr(pipeline, name), name, values, SKIP[name])
        config = {k: getattr(pipeline, k).model_dump(mode="json", exclude_unset=True)
                  for k in ("model", "data", "train", "eval")}
        config[name] = parsed.model_dump(mode="json", exclude_unset=True)
        return config

    @app.post("/api/jobs/prepare")
    async def start_prepare(request: Request) -> dict[str, Any]:
        body = await _body(request)
        picked = [str(p) for p in body.get("files", [])]
        allowed = {str(p) for p in state.uploads.iterdir()} | {str(p) for p in pipeline.data.files}
        if not picked:
            raise views.FieldError("files", "pick at least one file (upload one above)")
        unknown = [p for p in picked if p not in allowed]
        if unknown:
            raise views.FieldError("files", f"{unknown[0]} is neither uploaded here nor in the pipeline's data.files")
        config = job_config("data", body.get("values", {}))
        config["data"]["files"], config["data"]["sources"] = picked, []
        return state.jobs.status(state.jobs.start("prepare", config, {"files": picked}))

    @app.post("/api/jobs/{kind}")
    async def start_train_or_plan(kind: str, request: Request) -> dict[str, Any]:
        body = await _body(request)
        if kind in ("plan", "train"):
            dataset = views.pick(state.artifacts("dataset"), body.get("dataset"), ("dataset",), "dataset")
            config = job_config("train", body.get("values", {}))
            return state.jobs.status(state.jobs.start(kind, config, {"dataset": str(dataset.path)}))
        if kind == "eval":
            model = views.pick(state.artifacts("adapter", "model"), body.get("model"), ("adapter", "model"), "model")
            dataset_path = body.get("dataset") or None
            evaluated_on = views.pick(state.artifacts("dataset"), dataset_path, ("dataset",), "dataset") \
                if dataset_path else None
            config = job_config("eval", body.get("values", {}))
            inputs = {"model": str(model.path), "dataset": str(evaluated_on.path) if evaluated_on else None}
            return state.jobs.status(state.jobs.start("eval", config, inputs))
        raise TuneforgeError(f"no job kind {kind!r}")

    @app.get("/api/jobs")
    async def list_jobs(kind: str | None = None) -> list[dict[str, Any]]:
        return state.jobs.list(kind)

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str, after: int = 0) -> dict[str, Any]:
        status = state.jobs.status(job_id)
        return {**status, "events": state.jobs.events(job_id, after),
                "log": state.jobs.log_tail(job_id) if status.get("state") == "failed" else ""}

    @app.post("/api/jobs/{job_id}/stop")
    async def stop(job_id: str) -> dict[str, Any]:
        return state.jobs.stop(job_id)

    @app.post("/api/jobs/{job_id}/resume")
    async def resume(job_id: str) -> dict[str, Any]:
        return state.jobs.resume(job_id)

    # ---- registry ------------------------------------------------------------------------------------

    def session(body: dict[str, Any]):
        from tuneforge.registry.open import open_registry

        return open_registry(pipeline.registry, user=str(body.get("user") or "") or None)

    def move(m: Any) -> dict[str, Any]:
        return {"model": m.model, "alias": m.alias, "status": m.status, "to": m.to, "previous": m.previous,
                "gates": m.gates, "approvals_needed": m.approvals_needed, "approved_by": m.approved_by}

    @app.post("/api/registry/register")
    async def register(request: Request) -> dict[str, Any]:
        from tuneforge.registry.versions import register as do_register

        body = await _body(request)
        artifact = views.pick(state.artifacts("adapter", "model"), body.get("artifact"), ("adapter", "model"),
                              "artifact")
        reports = [views.pick(state.artifacts("eval-report"), p, ("eval-report",), "evals").path
                   for p in body.get("evals", []) if p]
        if not str(body.get("name") or "").strip():
            raise views.FieldError("name", "give the model a name, e.g. support-bot")
        version, created = do_register(session(body), artifact.path, str(body["name"]).strip(), reports)
        return {"ref": version.ref, "created": created, "evals": len(version.evals)}

    @app.get("/api/registry/gates")
    async def gates(ref: str, alias: str, user: str | None = None) -> dict[str, Any]:
        from tuneforge.core.registry_config import AliasPolicy
        from tuneforge.registry.promote import check_policy, recorded_gates
        from tuneforge.registry.versions import resolve

        s = session({"user": user})
        version = resolve(s, ref)
        policy = s.cfg.policies.get(alias, AliasPolicy())
        return {"gates": check_policy(policy, recorded_gates(s, version)), "approvals": policy.approvals}

    @app.post("/api/registry/promote")
    async def promote(request: Request) -> dict[str, Any]:
        from tuneforge.registry.promote import promote as do_promote

        body = await _body(request)
        if not str(body.get("alias") or "").strip():
            raise views.FieldError("alias", "which alias, e.g. staging or production")
        return move(do_promote(session(body), str(body.get("ref", "")), str(body["alias"]).strip(),
                               reason=body.get("reason") or None))

    @app.post("/api/registry/approve")
    async def approve(request: Request) -> dict[str, Any]:
        from tuneforge.registry.promote import approve as do_approve

        body = await _body(request)
        return move(do_approve(session(body), str(body.get("name", "")), str(body.get("alias", "")),
                               reason=body.get("reason") or None))

    @app.post("/api/registry/rollback")
    async def rollback(request: Request) -> dict[str, Any]:
        from tuneforge.registry.promote import rollback as do_rollback

        body = await _body(request)
        return move(do_rollback(session(body), str(body.get("name", "")), str(body.get("alias", "")),
                                reason=body.get("reason") or None))

    # ---- playground, monitoring, review --------------------------------------------------------------------

    @app.get("/api/serve/models")
    async def served_models(url: str) -> dict[str, Any]:
        return {"data": await serving.models(url, ui.server_key())}

    @app.post("/api/chat")
    async def chat(request: Request) -> StreamingResponse:
        body = await _body(request)
        url = str(body.pop("url", ""))
        serving.base_url(url)  # a bad url is a 400 here, not a broken stream
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise views.FieldError("messages", "the conversation is empty")
        return StreamingResponse(serving.stream_chat(url, ui.server_key(), body), media_type="text/event-stream")

    @app.post("/api/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await _body(request)
        return await serving.feedback(str(body.get("url", "")), ui.server_key(), str(body.get("response_id", "")),
                                      body.get("score"), str(body.get("comment", "")),  # type: ignore[arg-type]
                                      ui.workspace / "feedback.jsonl")

    @app.get("/api/metrics")
    async def metrics(url: str) -> dict[str, Any]:
        return await serving.metrics(url)

    @app.post("/api/review/{item_id}")
    async def decide(item_id: str, request: Request) -> dict[str, Any]:
        from tuneforge.serve.safety.review import ReviewQueue

        body = await _body(request)
        if not str(body.get("who") or "").strip():
            raise views.FieldError("who", "the reviewer's name goes into the audit log")
        queue = ReviewQueue(ui.review_url())
        try:
            item = queue.decide(item_id, body.get("decision", ""), str(body["who"]).strip(),
                                str(body.get("reason") or ""), body.get("answer"))
        finally:
            queue.close()
        return item.to_dict()

    return app
