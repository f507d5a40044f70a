"""`tuneforge serve MODEL`: load a model, start the engine, build the app, run uvicorn.

The engine loop runs on the main thread (faster on CPU, see `Engine.start`), uvicorn on another.
SIGTERM (or Ctrl-C) drains: new requests get 503 + Retry-After and /ready says draining, in-flight
requests get `serve.drain_timeout` seconds to finish, whatever is left is aborted, then the server
stops. A second signal stops at once.

`registry:NAME@ALIAS` is followed (`serve/follow.py`): a new holder of the alias gets an engine of its own,
whose loop runs on its own thread (as a watchdog-restarted loop does); the first engine's loop keeps the main
thread until that version is released, then the main thread waits for the server to stop.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from tuneforge.core.config import ServeConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.core.progress import console
from tuneforge.core.registry_config import RegistryConfig
from tuneforge.models import load
from tuneforge.monitor.metrics import ServingMetrics
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.engine import Engine, EngineLimits
from tuneforge.serve.follow import AliasFollower, registry_config, release_memory, resolve_model_ref


def default_served_name(model_ref: str) -> str:
    """What clients call the model when no name is given: the reference itself, or a folder's name."""
    path = Path(model_ref)
    return path.name if path.exists() else model_ref


def serve_dtype(cfg: ServeConfig) -> str:
    if cfg.dtype != "auto":
        return cfg.dtype
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "float16"
    return "bfloat16"


def build_engine(model_ref: str, cfg: ServeConfig, name: str, metrics: ServingMetrics | None = None,
                 loop_in_thread: bool = True) -> Engine:
    """Load `model_ref` for serving and start the native engine over it, with `cfg.adapters` loaded."""
    import torch

    limits = EngineLimits.of(cfg)
    if cfg.backend == "llamacpp":
        from tuneforge.serve.engine.llamacpp import llamacpp_engine_parts

        if cfg.adapters:
            raise TuneforgeError("serve.adapters (multi-LoRA) needs backend native")
        loaded, runner = llamacpp_engine_parts(model_ref, cfg.max_model_len, cfg.prefix_cache)
        return Engine(loaded, limits, metrics, name, runner=runner).start(loop_in_thread)
    if cfg.backend == "vllm":
        from tuneforge.serve.engine.vllm import VllmEngine, lora_rank_for

        if cfg.adapters and cfg.vllm.max_loras == 0:
            raise TuneforgeError("serve.adapters needs LoRA: serve.vllm.max_loras is 0")
        whole = VllmEngine(model_ref, limits, metrics, name, dtype=cfg.dtype, max_loras=cfg.vllm.max_loras,
                           max_lora_rank=lora_rank_for(cfg.adapters, cfg.vllm.max_lora_rank),
                           engine_args=cfg.vllm.engine_args)
        if cfg.adapters:
            from tuneforge.models.loader import weights_fingerprints

            whole.base_fingerprints = weights_fingerprints(model_ref)
            for adapter, path in cfg.adapters.items():
                try:
                    whole.load_adapter(adapter, path)
                except ValueError as exc:
                    whole.shutdown()
                    raise TuneforgeError(f"serve.adapters.{adapter}: {exc}") from None
        return whole  # type: ignore[return-value]  # a whole engine of its own (protocol.ServingEngine)
    loaded = load(model_ref, dtype=serve_dtype(cfg))
    if torch.cuda.is_available():
        loaded.model.to("cuda")
    engine = Engine(loaded, limits, metrics, name)
    if cfg.adapters:
        from tuneforge.models.loader import weights_fingerprints

        engine.base_fingerprints = weights_fingerprints(model_ref)
        for adapter, path in cfg.adapters.items():
            try:
                engine.load_adapter(adapter, path)
            except ValueError as exc:
                raise TuneforgeError(f"serve.adapters.{adapter}: {exc}") from None
    return engine.start(loop_in_thread)


def build_app(model_ref: str, cfg: ServeConfig, loop_in_thread: bool = True, registry: RegistryConfig | None = None):
    """Load `model_ref` (a `registry:NAME@ALIAS` resolved first), start its engine and return (app, served name).

    An alias is then followed every `registry.follow_interval_s` (0: not followed); stop it all with
    `shutdown_app`."""
    registry = registry_config(registry)
    resolved = resolve_model_ref(model_ref, registry)
    name = cfg.served_model_name or resolved.name or default_served_name(model_ref)
    if resolved.label:
        console.print(f"{model_ref} is {resolved.label} ({str(resolved.content_hash)[:12]}…) at {resolved.path}")
    metrics = ServingMetrics()
    engine = build_engine(resolved.path, cfg, name, metrics, loop_in_thread)
    app = create_app(engine, name, cfg, metrics, version=model_version(resolved.path, resolved.content_hash),
                     label=resolved.label)
    app.state.follower = None
    if resolved.alias is not None and registry.follow_interval_s > 0:
        app.state.follower = AliasFollower(app, resolved, registry, lambda path: build_engine(
            path, cfg, name, metrics, loop_in_thread=True), cfg.request_timeout).start()
        console.print(f"following @{resolved.alias} of {resolved.name!r} every {registry.follow_interval_s:g} s")
    return app, name


def engines(app) -> list:
    """Every engine the app holds: the serving one, and an old version's while its last requests finish."""
    return [ctx.engine for ctx in app.state.live.loaded]


def shutdown_app(app) -> None:
    """Stop following, shut every engine down, write what the traffic log still holds."""
    follower = getattr(app.state, "follower", None)
    if follower is not None:
        follower.stop()
    for engine in engines(app):
        engine.shutdown()
    if app.state.context.traffic is not None:
        app.state.context.traffic.close()


def model_version(path: str, known: str | None = None) -> str | None:
    """What the served model is, for caches and clients: the artifact's content hash (a registry version's
    is known already); None for a built-in name or a plain Hugging Face folder."""
    from tuneforge.core.artifacts import is_artifact, load_artifact

    if known:
        return known
    return load_artifact(path, verify=False).content_hash if is_artifact(path) else None


def _drain(server, app, grace: float) -> None:
    """Refuse new work, let in-flight requests finish for `grace` seconds, abort the rest, stop."""
    state = app.state.serve
    state.draining = True
    console.print(f"draining: {state.in_flight} request(s) in flight, up to {grace:g} s")
    deadline = time.monotonic() + grace
    while state.in_flight > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if state.in_flight > 0:
        console.print(f"drain timeout: aborting {state.in_flight} request(s)")
        for engine in engines(app):
            engine.abort_all()
        time.sleep(0.2)  # let the aborted streams send their last chunk
    server.should_exit = True


def serve(model_ref: str, cfg: ServeConfig, registry: RegistryConfig | None = None) -> None:
    """Serve until SIGTERM / Ctrl-C, then drain. The engine loop runs on the main thread, HTTP on another.
    `registry` is where a `registry:NAME@ALIAS` reference is looked up."""
    import uvicorn

    from tuneforge.serve import memory

    memory.limit_arenas()  # before the threads that would each get an arena start
    app, name = build_app(model_ref, cfg, loop_in_thread=False, registry=registry)
    engine = app.state.engine  # the first version's: its loop runs on this thread (below)
    # Bind here so port 0 (any free port) can be reported before uvicorn takes the socket over.
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        sock.close()
        shutdown_app(app)
        raise TuneforgeError(f"serve: cannot bind {cfg.host}:{cfg.port} ({exc.strerror})") from None
    port = sock.getsockname()[1]
    console.print(f"serving [bold]{model_ref}[/bold] as model [bold]{name!r}[/bold] on "
                  f"http://{cfg.host}:{port}/v1  (OpenAPI: /docs) | {cfg.backend} backend: {engine.max_num_seqs} "
                  f"slots × {engine.max_context} tokens, KV cache {engine.cache_bytes / 2**20:.0f} MiB, "
                  f"{getattr(engine, 'runner', engine).dtype}".replace("torch.", ""))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    stopped = threading.Event()

    def http() -> None:
        try:
            with sock:
                server.run(sockets=[sock])
        finally:
            shutdown_app(app)  # the HTTP side is gone (drained or failed): end the engine loops too
            stopped.set()

    def on_signal(signum, frame) -> None:  # first signal drains, a second one exits now
        if app.state.serve.draining:
            server.force_exit = server.should_exit = True
            shutdown_app(app)
            return
        threading.Thread(target=_drain, args=(server, app, cfg.drain_timeout), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    http_thread = threading.Thread(target=http, name="tuneforge-http", daemon=True)
    http_thread.start()
    stop_trimming = threading.Event()
    if cfg.malloc_trim_every > 0:
        memory.trim_every(cfg.malloc_trim_every, stop_trimming)
    run_loop, engine = engine.run_loop, None  # hold no reference: a swap must be able to free this version
    while True:
        run_loop()  # returns when this version is swapped out (its engine shut down) or the server stops
        del run_loop
        release_memory()  # its last reference was this frame's
        engine = app.state.engine  # the version swapped in: its loop started on a thread, beside the old one
        if stopped.is_set() or not hasattr(engine, "adopt_loop") or engine.stopped:  # (a vLLM engine has its own)
            break
        console.print(f"follow: engine loop of {app.state.context.label or 'the new version'} moved to the "
                      "main thread")
        run_loop, engine = engine.adopt_loop, None
    engine = None
    stopped.wait()
    stop_trimming.set()
    http_thread.join(timeout=10)
