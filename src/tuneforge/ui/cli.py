"""`tuneforge ui`: the command (mounted by `tuneforge.cli`)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.core.config import default, load_pipeline
from tuneforge.core.errors import TuneforgeError
from tuneforge.ui.config import UIConfig


def _default(name: str) -> str:
    return f"(default: {default(UIConfig, name)})"


def ui_cmd(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Pipeline YAML: its sections are the forms' starting values, and its run folder "
        "(output_dir/name) is listed with the UI's own artifacts.")] = None,
    host: Annotated[str | None, typer.Option(help=f"Address to bind {_default('host')}. Any other than loopback "
                                             "needs a login key in $TUNEFORGE_UI_KEY (or --key-file).")] = None,
    port: Annotated[int | None, typer.Option(help=f"Port to bind {_default('port')}; 0 picks a free one.")] = None,
    workspace: Annotated[Path | None, typer.Option(
        help=f"Folder of uploads, jobs and the artifacts they make {_default('workspace')}.")] = None,
    server: Annotated[list[str] | None, typer.Option(
        "--server", help="An OpenAI-compatible base URL for the Playground and Monitoring pages, e.g. "
        "http://127.0.0.1:8000/v1 (a `tuneforge serve` or `tuneforge gateway`); repeatable.")] = None,
    review_db: Annotated[str | None, typer.Option(
        "--review-db", help="Review queue database (SQLAlchemy URL or SQLite file); default $TUNEFORGE_REVIEW_DB, "
        "else review.db.")] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="File whose first line is the login key (instead of $TUNEFORGE_UI_KEY).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a pipeline field: --set registry.root=runs/registry (repeatable).")] = None,
) -> None:
    """Open the whole flow in a browser: Data → Train (live curves, stop/resume) → Eval → Registry →
    Playground, plus the review queue and live server metrics.

    Long work (prepare, memory plan, training, eval) runs in worker processes: a reloaded page shows the
    same run. Every asset is served from the package: it works offline.

    Example:  tuneforge ui -c examples/customer-service/pipeline.yaml      then open http://127.0.0.1:7860
    Example:  tuneforge ui --server http://127.0.0.1:8000/v1 --review-db gateway.db
    Example:  TUNEFORGE_UI_KEY=$(openssl rand -hex 16) tuneforge ui --host 0.0.0.0   (login required)
    """
    import uvicorn

    from tuneforge.core.config import build_config
    from tuneforge.core.progress import console
    from tuneforge.ui.app import create_app

    given = {"host": host, "port": port, "workspace": workspace, "servers": server, "review_db": review_db,
             "key_file": key_file}
    ui = build_config(UIConfig, {k: v for k, v in given.items() if v is not None}, prefix="ui")
    pipeline = load_pipeline(config, overrides or [])
    app = create_app(ui, pipeline)
    # bind here so that port 0 (any free port) can be reported before uvicorn takes the socket over
    family = socket.AF_INET6 if ":" in ui.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ui.host, ui.port))
    except OSError as exc:
        sock.close()
        raise TuneforgeError(f"ui: cannot bind {ui.host}:{ui.port} ({exc.strerror})") from None
    shown = "127.0.0.1" if ui.host in ("0.0.0.0", "::") else ui.host
    console.print(f"tuneforge ui on http://{shown}:{sock.getsockname()[1]}  (workspace {ui.workspace.absolute()}"
                  f"{'; login required' if app.state.ui.login_key else ''})", highlight=False)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
