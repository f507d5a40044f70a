"""`tuneforge serve MODEL`: load a model, build the app, run uvicorn."""

from __future__ import annotations

import socket
from pathlib import Path

from tuneforge.core.config import ServeConfig
from tuneforge.core.errors import TuneforgeError
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
    return create_app(SimpleEngine(loaded), name, cfg.max_tokens, cfg.max_waiting), name


def serve(model_ref: str, cfg: ServeConfig, dtype: str = "float32") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    app, name = build_app(model_ref, cfg, dtype)
    # Bind here so port 0 (any free port) can be reported before uvicorn takes the socket over.
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        sock.close()
        raise TuneforgeError(f"serve: cannot bind {cfg.host}:{cfg.port} ({exc.strerror})") from None
    port = sock.getsockname()[1]
    console.print(f"serving [bold]{model_ref}[/bold] as model [bold]{name!r}[/bold] on "
                  f"http://{cfg.host}:{port}/v1  (OpenAPI: /docs)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with sock:
        server.run(sockets=[sock])
