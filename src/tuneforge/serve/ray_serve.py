"""`tuneforge serve MODEL --ray`: engine replicas as a Ray Serve deployment behind Ray's HTTP proxy.

Each replica is a Ray actor that loads the model and runs the same app `tuneforge serve` runs (built by
`server.build_app`, handed to Ray through `serve.ingress` as a builder, so there is one OpenAI API, not a
second one). Ray's proxy and router spread requests over the replicas (power of two choices on their queue
lengths, at most `max_ongoing_requests` per replica; the rest wait in the router), its controller restarts
a replica whose process dies or whose `check_health` fails, and its autoscaler adds and removes replicas
between `min_replicas` and `max_replicas` on ongoing requests per replica (`serve.ray`, see
`core.ray_config` for why the defaults are tied to the engine's batch).

Multi-node is Ray's: `ray start --head` on one machine, `ray start --address HEAD:6379` on the others,
then this command with `--set serve.ray.address=auto` (docs/ray.md).

Every response carries `x-tuneforge-replica` (the Ray replica id that answered) so that an operator, or a
test, can tell replicas apart.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from tuneforge.core.config import ServeConfig
from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.core.progress import console
from tuneforge.core.registry_config import RegistryConfig

DEPLOYMENT = "engine"


class ReplicaHeader:
    """ASGI middleware: `x-tuneforge-replica: <id>` on every HTTP response."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app, self.header = app, (b"x-tuneforge-replica", replica.encode())
        self.state = app.state  # the FastAPI app's: check_health reads the engine from it

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


def _builder(model_ref: str, cfg: dict[str, Any], registry: dict[str, Any] | None):
    """What each replica runs at start: load the model, start the engine (its loop on a thread), build the app.
    Plain data in, so that Ray pickles a closure over dicts, not over config objects."""
    def build() -> Any:
        from ray import serve

        from tuneforge.serve.server import build_app

        serve_cfg = ServeConfig.model_validate(cfg)
        app, _ = build_app(model_ref, serve_cfg, loop_in_thread=True,
                           registry=RegistryConfig.model_validate(registry) if registry is not None else None)
        return ReplicaHeader(app, serve.get_replica_context().replica_id.unique_id)

    return build


def deployment(model_ref: str, cfg: ServeConfig, registry: RegistryConfig | None = None) -> Any:
    """The bound Ray Serve application: one deployment of engine replicas with `cfg.ray`'s autoscaling."""
    from ray import serve

    ray_cfg = cfg.ray
    target, max_ongoing = ray_cfg.resolved(cfg.max_num_seqs)

    @serve.ingress(_builder(model_ref, cfg.model_dump(mode="json", exclude={"api_key", "admin_key"}) |
                            _keys(cfg), registry.model_dump(mode="json") if registry else None))
    class EngineReplica:
        """One engine: Ray calls check_health periodically and restarts the replica when it raises."""

        def check_health(self) -> None:
            engine = self.app.state.engine  # type: ignore[attr-defined]
            if not engine.alive():
                raise RuntimeError(f"engine loop down after {engine.restarts} restart(s)")

    autoscaling = {"min_replicas": ray_cfg.min_replicas, "max_replicas": ray_cfg.max_replicas,
                   "initial_replicas": ray_cfg.initial_replicas, "target_ongoing_requests": target,
                   "upscale_delay_s": ray_cfg.upscale_delay_s, "downscale_delay_s": ray_cfg.downscale_delay_s,
                   "metrics_interval_s": ray_cfg.metrics_interval_s, "look_back_period_s": ray_cfg.look_back_period_s}
    replicas = serve.deployment(
        name=DEPLOYMENT, autoscaling_config=autoscaling, max_ongoing_requests=max_ongoing,
        ray_actor_options={"num_cpus": ray_cfg.num_cpus, "num_gpus": ray_cfg.num_gpus},
        graceful_shutdown_timeout_s=cfg.drain_timeout, health_check_period_s=10, health_check_timeout_s=30,
    )(EngineReplica)
    return replicas.bind()


def _keys(cfg: ServeConfig) -> dict[str, Any]:
    """The API and admin keys as plain strings for the replicas (a dumped config masks SecretStr); the
    environment's TUNEFORGE_API_KEY is resolved here, on the machine where the command runs."""
    api, admin = cfg.keys()
    return {"api_key": api, "admin_key": admin}


def replica_counts(app_name: str) -> dict[str, int]:
    """Replicas of the engine deployment by state (RUNNING, STARTING, …), from Ray Serve's controller."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None or DEPLOYMENT not in app.deployments:
        return {}
    return {str(state): int(n) for state, n in app.deployments[DEPLOYMENT].replica_states.items()}


def serve_ray(model_ref: str, cfg: ServeConfig, registry: RegistryConfig | None = None) -> None:
    """Deploy the replicas on the Ray cluster (`serve.ray.address`; a local one when unset), serve until
    SIGTERM / Ctrl-C, then delete the application (Ray drains each replica for `serve.drain_timeout`)."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ConfigError("tuneforge serve --ray needs Ray Serve: pip install 'tuneforge[ray]'") from None
    from tuneforge.core.net import free_port

    ray_cfg = cfg.ray
    port = cfg.port or free_port(cfg.host)
    if ray_cfg.address is None:  # a one-machine cluster for this process; no dashboard to pay for
        ray.init(namespace="tuneforge", include_dashboard=False)
    else:
        ray.init(address=ray_cfg.address, namespace="tuneforge")
    try:
        serve.start(http_options={"host": cfg.host, "port": port})
        target, max_ongoing = ray_cfg.resolved(cfg.max_num_seqs)
        console.print(f"Ray Serve: deploying {ray_cfg.initial_replicas or ray_cfg.min_replicas} replica(s) of "
                      f"[bold]{model_ref}[/bold] (autoscaling {ray_cfg.min_replicas}-{ray_cfg.max_replicas}, target "
                      f"{target:g} ongoing requests per replica, at most {max_ongoing} each)")
        try:
            serve.run(deployment(model_ref, cfg, registry), name=ray_cfg.app_name, route_prefix="/")
        except RuntimeError as exc:  # a replica failed to start (bad model reference, out of memory, …)
            raise TuneforgeError(f"serve --ray: the deployment did not start: {exc}") from None
        console.print(f"serving on http://{cfg.host}:{port}/v1 through Ray Serve's proxy "
                      f"(replicas: {replica_counts(ray_cfg.app_name)})")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        console.print("stopping: deleting the Ray Serve application (replicas drain)")
        serve.delete(ray_cfg.app_name)
    finally:
        ray.shutdown()
