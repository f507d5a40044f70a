"""`tuneforge serve MODEL`: load a model, build the app, run uvicorn."""

from __future__ import annotations

from pathlib import Path

from tuneforge.core.config import ServeConfig
from tuneforge.core.progress import console
from tuneforge.models import load
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.simple import SimpleEngine


def default_served_name(model_ref: str) -> str:
    """What clients call the model when no name is given: the reference itself, or a folder's name."""
    path = Path(model_ref)
    return path.name if path.exists() else model_ref


def build_app(model_ref: str, cfg: ServeConfig, dtype: str = "float32"):
    """Load `model_ref` and return (app, served name)."""
    loaded = load(model_ref, dtype=dtype)
    name = cfg.served_model_name or default_served_name(model_ref)
    return create_app(SimpleEngine(loaded), name, cfg.max_tokens), name


def serve(model_ref: str, cfg: ServeConfig, dtype: str = "float32") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    app, name = build_app(model_ref, cfg, dtype)
    console.print(f"serving [bold]{model_ref}[/bold] as model [bold]{name!r}[/bold] on "
                  f"http://{cfg.host}:{cfg.port}/v1  (OpenAPI: /docs)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
