"""Liveness, readiness, Prometheus metrics and the model list."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tuneforge.serve.api.context import Context

router = APIRouter()
models = APIRouter()  # under /v1: behind serve.api_key when one is set
STATUS_ONLY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not live / not ready, and why", "content": {"application/json": {}}}}
READY_EVERY_S = 30.0  # a self-test older than this is run again


@router.get("/health", responses=STATUS_ONLY)
async def health(ctx: Context) -> JSONResponse:
    """Liveness: the process is up and the engine loop is running (not dead, not stuck)."""
    engine = ctx.engine
    if not engine.alive():
        return JSONResponse({"status": "engine down", "restarts": engine.restarts}, status_code=503)
    return JSONResponse({"status": "ok", "model": ctx.served_model_name, "in_flight": ctx.state.in_flight,
                         "running": engine.num_running, "waiting": engine.num_waiting,
                         "engine_restarts": engine.restarts})


@router.get("/ready", responses=STATUS_ONLY)
async def readiness(ctx: Context) -> JSONResponse:
    """Ready: not draining, and the engine answered a one-token self-test within the last 30 s. With a
    followed registry alias, `follow` says which version serves and why a newer one is not (a failed load)."""
    if ctx.state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if time.monotonic() - ctx.state.ready_at > READY_EVERY_S:
        error = await ctx.ready_error(10.0)
        if error is not None:
            return JSONResponse({"status": "not ready", "error": error}, status_code=503)
        ctx.state.ready_at = time.monotonic()
    body: dict[str, Any] = {"status": "ready", "model": ctx.served_model_name}
    if ctx.version:
        body["version"] = ctx.version
    if ctx.label:
        body["registry_version"] = ctx.label
    if ctx.state.follow is not None:
        body["follow"] = dict(ctx.state.follow)
    return JSONResponse(body)


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}})
async def prometheus_metrics(ctx: Context) -> Response:
    """Prometheus text format, vLLM-style names under `tuneforge:`."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@models.get("/v1/models")
async def list_models(ctx: Context) -> dict:
    def card(name: str, parent: str | None = None) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": ctx.started, "owned_by": "tuneforge", "root": name,
                "parent": parent, "max_model_len": ctx.engine.max_context}

    base = ctx.served_model_name
    first = {**card(base), **({"version": ctx.version} if ctx.version else {}),
             **({"registry_version": ctx.label} if ctx.label else {})}
    return {"object": "list", "data": [first, *[card(name, base) for name in ctx.engine.adapter_names()]]}
