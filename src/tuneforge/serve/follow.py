"""`tuneforge serve registry:NAME@ALIAS` (or `registry:NAME/3`): the registry version to load, and following
the alias while serving.

The reference is resolved when the server starts to the artifact folder in the registry's store (its
manifest pin checked); the served model name defaults to NAME. An alias (not a pinned `NAME/3`) is then
watched by `AliasFollower`: every `registry.follow_interval_s` it reads the alias (MLflow has no push a
server can rely on, so it polls, as MLflow's own deployment clients do). When the alias has moved:

1. the new version's artifact is loaded into a second engine beside the one serving (its files re-hashed:
   a tampered artifact fails here);
2. that engine must pass the self-test `/ready` uses (a one-token generation);
3. traffic moves: `swap_context` makes the new context the one every arriving request is pinned to; a
   request already pinned to the old one (tokenizer, limits, engine, version header) finishes there;
4. once the old context's last request has ended (at most `serve.request_timeout` later, then the rest is
   aborted) its engine is shut down and dropped, and the memory goes back (gc, CUDA cache, malloc_trim).

A load or self-test that fails keeps the old version serving: a red log line, `tuneforge:model_swaps_total
{result="failed"}`, and `/ready`'s `follow.error` say which version failed and why; the same version is
not tried again until the alias moves elsewhere. The follower runs on its own thread; only step 3 touches
what requests see, and it is one swap under the lock that pins requests.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneforge.core.progress import console
from tuneforge.core.registry_config import RegistryConfig

PREFIX = "registry:"
SELF_TEST_TIMEOUT_S = 30.0  # a new version must answer its one-token self-test within this


@dataclass(frozen=True)
class ResolvedModel:
    """What to load (`path`) and, for a registry reference, which version it is (and the alias it follows)."""

    path: str
    name: str | None = None
    version: int | None = None
    content_hash: str | None = None
    alias: str | None = None

    @property
    def label(self) -> str | None:
        """'support-bot/3' for a registry version, else None."""
        return f"{self.name}/{self.version}" if self.name is not None else None


def registry_config(registry: RegistryConfig | None) -> RegistryConfig:
    """The registry to look references up in: the one given, with TUNEFORGE_REGISTRY_URI's MLflow when it
    names no tracking URI itself (as `tuneforge registry --tracking-uri` reads it)."""
    cfg = registry or RegistryConfig()
    env = os.environ.get("TUNEFORGE_REGISTRY_URI")
    return cfg.model_copy(update={"tracking_uri": env}) if env and not cfg.tracking_uri else cfg


def resolve_model_ref(model_ref: str, registry: RegistryConfig | None = None) -> ResolvedModel:
    """A plain reference as given; `registry:NAME@ALIAS` / `registry:NAME/N` → that version's artifact folder.

    Without a registry config, the embedded registry in ./registry, or TUNEFORGE_REGISTRY_URI's MLflow."""
    if not model_ref.startswith(PREFIX):
        return ResolvedModel(model_ref)
    from tuneforge.registry.open import open_registry
    from tuneforge.registry.versions import artifact_path, parse_ref

    version, folder = artifact_path(open_registry(registry_config(registry)), model_ref)
    alias = parse_ref(model_ref.removeprefix(PREFIX))[2]
    return ResolvedModel(str(folder), version.name, version.number, version.content_hash, alias)


def release_memory() -> None:
    """Give a dropped engine's memory back: collect its cycles, empty CUDA's cache, trim the C heap."""
    from tuneforge.serve import memory

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    memory.trim()


class AliasFollower:
    """Watches `resolved.alias` of `resolved.name` and moves `app`'s traffic to each new holder.

    `load(path)` builds and starts an engine over an artifact folder (the server's `build_engine`)."""

    def __init__(self, app: Any, resolved: ResolvedModel, registry: RegistryConfig, load: Callable[[str], Any],
                 request_timeout: float) -> None:
        from tuneforge.registry.open import open_registry

        assert resolved.name is not None and resolved.alias is not None and resolved.version is not None
        self.app, self.load, self.request_timeout = app, load, request_timeout
        self.name, self.alias = resolved.name, resolved.alias
        self.serving: int = resolved.version
        self.failed: int | None = None  # the holder whose load failed: not retried until the alias moves on
        self.interval = registry.follow_interval_s
        self.session = open_registry(registry, user="tuneforge-serve")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status: dict[str, Any] = {"alias": f"{self.name}@{self.alias}", "serving": f"{self.name}/{self.serving}",
                                       "interval_s": self.interval, "checked_at": None, "error": None,
                                       "swaps": 0, "last_swap_s": None}
        self._publish()

    @property
    def metrics(self) -> Any:
        return self.app.state.context.metrics

    def _publish(self) -> None:
        self.app.state.serve.follow = dict(self.status)

    def start(self) -> AliasFollower:
        self._thread = threading.Thread(target=self._run, name="tuneforge-follow", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the registry unreachable, or anything else: keep serving, say so
                self._report(f"cannot follow @{self.alias} of {self.name!r} (still serving "
                             f"{self.name}/{self.serving}): {type(exc).__name__}: {exc}")

    def check(self) -> str:
        """Look at the alias once and act: 'same', 'gone' (no holder), 'failed' (kept before), 'swapped'."""
        holder = self.session.backend.aliases(self.name).get(self.alias)
        self.status["checked_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        if holder is None:
            self._report(f"@{self.alias} of {self.name!r} holds no version; still serving {self.name}/{self.serving}")
            return "gone"
        if holder == self.serving:
            self.failed = None
            self.status["error"] = None
            self._publish()
            return "same"
        if holder == self.failed:
            self._publish()
            return "failed"
        return self.swap(holder)

    def _report(self, message: str) -> None:
        if self.status.get("error") != message:
            console.print(f"[red]follow:[/red] {message}")
        self.status["error"] = message
        self._publish()

    def swap(self, number: int) -> str:
        """Load `number` beside the serving version, self-test it, move traffic, release the old one."""
        from tuneforge.registry.versions import artifact_path
        from tuneforge.serve.api.app import swap_context

        seen = time.monotonic()
        was = f"{self.name}/{self.serving}"
        console.print(f"follow: @{self.alias} of {self.name!r} moved to version {number} (serving {was}); "
                      "loading it beside")
        engine = None
        try:
            version, folder = artifact_path(self.session, f"{self.name}/{number}")
            engine = self.load(str(folder))
            new = self.app.state.context.beside(engine, version.content_hash, version.ref)
            error = asyncio.run(new.ready_error(SELF_TEST_TIMEOUT_S))
            if error is not None:
                raise RuntimeError(f"the self-test failed: {error}")
        except Exception as exc:  # the old version goes on serving
            if engine is not None:
                engine.shutdown()
            del engine
            release_memory()
            self.failed = number
            self.metrics.model_swaps.labels(model_name=self.app.state.context.served_model_name,
                                            result="failed").inc()
            self._report(f"{self.name}/{number} (now @{self.alias}) failed to load; still serving {was}: "
                         f"{type(exc).__name__}: {exc}")
            return "failed"
        old = swap_context(self.app, new)
        switched = time.monotonic() - seen
        self.serving, self.failed = number, None
        self.metrics.model_swaps.labels(model_name=new.served_model_name, result="ok").inc()
        self.metrics.model_swap_seconds.labels(model_name=new.served_model_name).set(switched)
        self.status.update(serving=version.ref, error=None, swaps=self.status["swaps"] + 1, last_swap_s=switched)
        self._publish()
        del new
        console.print(f"follow: traffic on {version.ref} ({version.content_hash[:12]}…) {switched:.2f} s after "
                      f"the alias moved; {old.pins} request(s) finishing on {was}")
        self._retire(old, was)
        return "swapped"

    def _retire(self, old: Any, label: str) -> None:
        """Wait for the old context's last request, then shut its engine down and let it be collected."""
        live = self.app.state.live
        started = time.monotonic()
        if not live.wait_unpinned(old, self.request_timeout + 5):
            console.print(f"[yellow]follow: {old.pins} request(s) still on {label} after "
                          f"{self.request_timeout:.0f} s; aborting them[/yellow]")
            old.engine.abort_all()
            live.wait_unpinned(old, 10)
        old.engine.shutdown()
        live.forget(old)
        del old
        release_memory()
        console.print(f"follow: {label} released {time.monotonic() - started:.2f} s after the switch")
