"""The OpenAI-compatible HTTP app over an engine: it only assembles the parts.

Per endpoint a protocol (request and response models), a serving module (request → engine jobs →
response) and a router: `chat/`, `completions/`; `health.py` (liveness, readiness, metrics, models) and
`admin.py` (LoRA adapters at run time, test faults). What they share — admission, early limits, tokenizing
off the event loop, running jobs while watching the client — is `context.ServingContext`; errors are
`errors.py`, body and prompt bounds `limits.py`. `swap_context` moves traffic to another version's engine
(`serve/follow.py` calls it when a followed registry alias moves).
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI

from tuneforge import __version__
from tuneforge.core.config import ServeConfig
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.monitor.traffic import TrafficLog
from tuneforge.serve.api import admin, health
from tuneforge.serve.api.auth import require_admin_key, require_api_key
from tuneforge.serve.api.chat.router import router as chat_router
from tuneforge.serve.api.completions.router import router as completions_router
from tuneforge.serve.api.context import LiveContext, PinContext, ServingContext
from tuneforge.serve.api.errors import install_handlers
from tuneforge.serve.api.protocol import error_responses
from tuneforge.serve.api.wire import BodyLimit
from tuneforge.serve.engine.protocol import ServingEngine


def create_app(engine: ServingEngine, served_model_name: str, cfg: ServeConfig | None = None,
               metrics: ServingMetrics | None = None, version: str | None = None, label: str | None = None) -> FastAPI:
    """Build the app around a started engine; `served_model_name` is what clients pass as `model`; `version`
    (the artifact's content hash) is in the model card and every response's `x-tuneforge-model-version`;
    `label` is the registry version ('support-bot/3') when the model came from the registry."""
    cfg = cfg or ServeConfig()
    app = FastAPI(title="tuneforge", version=__version__,
                  description="OpenAI-compatible endpoint for a tuneforge model, with continuous batching.")
    metrics = metrics or engine.metrics or ServingMetrics()
    engine.metrics = metrics
    context = ServingContext(engine, served_model_name, cfg, metrics)
    context.started, context.version, context.label = int(time.time()), version, label
    context.traffic = TrafficLog.of(cfg.traffic_log)
    app.state.live = LiveContext(context)
    app.state.context = context  # the current one (swap_context replaces it)
    app.state.serve = context.state  # the server's drain reads and sets it
    app.state.engine = engine
    metrics.served_version(served_model_name, version, label)
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(PinContext, live=app.state.live)  # outermost: a 413 carries the version too
    app.include_router(health.router)
    keyed = context.keys[0] is not None
    for router in (health.models, chat_router, completions_router):
        app.include_router(router, dependencies=[Depends(require_api_key)] if keyed else None,
                           responses=error_responses(401) if keyed else None)
    admin_routers = [r for r, on in ((admin.router, cfg.allow_runtime_lora), (admin.faults, cfg.debug_faults)) if on]
    for router in admin_routers:
        app.include_router(router, dependencies=[Depends(require_admin_key)], responses=error_responses(401))
    return app


def swap_context(app: FastAPI, new: ServingContext) -> ServingContext:
    """Send every request from now on to `new` (another version's engine, already self-tested); returns the
    context it replaces, whose requests in flight go on there (`app.state.live.wait_unpinned`)."""
    old = app.state.live.swap(new)
    app.state.context, app.state.engine = new, new.engine
    new.metrics.served_version(new.served_model_name, new.version, new.label, replaces=(old.version, old.label))
    return old
