"""Replicas behind a route: least outstanding requests, active health checks, passive ejection, canary.

Each replica counts the requests this gateway has outstanding on it; a pick takes the healthy replica with
the fewest (ties broken at random, so that equal replicas share the load). A replica is ejected for
`health.eject_s` when a request on it fails to connect, times out or gets a 5xx, and when its `/health`
does not answer 200; the health loop brings it back once `/health` answers again. When every replica of
a variant is out, the least recently ejected one is tried anyway (better a likely failure than a certain one).

Canary: a route's variants split its traffic by weight; the split is sticky — a stable hash of the
route and the caller (its key, or its `user` field) picks the variant, so one caller sees one version.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, field

import httpx

from tuneforge.gateway.config import GatewayConfig, RouteConfig, VariantConfig
from tuneforge.gateway.upstream import headers_for


@dataclass
class Replica:
    url: str  # the base URL, ending in /v1
    route: str
    variant: str
    config: VariantConfig
    outstanding: int = 0
    ejected_until: float = 0.0
    version: str | None = None  # from config, or the replica's /v1/models
    last_error: str | None = None

    @property
    def root(self) -> str:
        """The server's root (health checks live there, not under /v1)."""
        return self.url.rstrip("/").removesuffix("/v1")

    def up(self, now: float) -> bool:
        return now >= self.ejected_until

    def eject(self, seconds: float, why: str) -> None:
        self.ejected_until, self.last_error = time.monotonic() + seconds, why


@dataclass
class Variant:
    name: str
    weight: float
    replicas: list[Replica] = field(default_factory=list)


class Route:
    """One public model: its variants and their replicas."""

    def __init__(self, name: str, config: RouteConfig) -> None:
        self.name, self.config = name, config
        self.variants = [Variant(v, c.weight, [Replica(u.rstrip("/"), name, v, c, version=c.version)
                                                for u in c.backends]) for v, c in config.variants.items()]
        self._total = sum(v.weight for v in self.variants)

    def variant_for(self, caller: str) -> Variant:
        """The variant `caller` is assigned to: a stable hash of route and caller into the weights."""
        digest = hashlib.blake2b(f"{self.name}\0{caller}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64 * self._total
        for variant in self.variants:
            if point < variant.weight:
                return variant
            point -= variant.weight
        return self.variants[-1]

    @staticmethod
    def pick(variant: Variant, exclude: set[str] = frozenset()) -> Replica | None:  # type: ignore[assignment]
        """The healthy replica with the fewest outstanding requests (None when only excluded ones are left)."""
        candidates = [r for r in variant.replicas if r.url not in exclude]
        if not candidates:
            return None
        now = time.monotonic()
        healthy = [r for r in candidates if r.up(now)] or [min(candidates, key=lambda r: r.ejected_until)]
        fewest = min(r.outstanding for r in healthy)
        return random.choice([r for r in healthy if r.outstanding == fewest])

    def replicas(self) -> list[Replica]:
        return [r for v in self.variants for r in v.replicas]


class Balancer:
    """Every route, and the loop that health-checks every replica."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.routes = {name: Route(name, rc) for name, rc in cfg.routes.items()}
        self._task: asyncio.Task | None = None

    def replicas(self) -> list[Replica]:
        return [r for route in self.routes.values() for r in route.replicas()]

    async def check(self, client: httpx.AsyncClient, replica: Replica) -> None:
        """One active check: /health must answer 200; the model card gives the version when none is set."""
        timeout = self.cfg.health.connect_timeout_s
        try:
            health = await client.get(f"{replica.root}/health", timeout=timeout)
            if health.status_code != 200:
                raise httpx.HTTPError(f"/health answered {health.status_code}")
            if replica.config.version is None:
                replica.version = await self._version(client, replica, timeout)
            if replica.ejected_until:
                replica.ejected_until, replica.last_error = 0.0, None
        except (httpx.HTTPError, ValueError) as exc:
            replica.eject(self.cfg.health.eject_s, f"health check: {type(exc).__name__}: {exc}")

    @staticmethod
    async def _version(client: httpx.AsyncClient, replica: Replica, timeout: float) -> str | None:
        """The replica's model version: the card's `version` (tuneforge: the artifact's content hash), else
        a hash of the card's identity fields (id, root, parent — vLLM and llama-server have no version)."""
        reply = await client.get(f"{replica.url}/models", headers=headers_for(replica.config.api_key), timeout=timeout)
        if reply.status_code != 200:
            return None
        wanted = replica.config.model or replica.route
        cards = reply.json().get("data", [])
        card = next((c for c in cards if c.get("id") == wanted), cards[0] if cards else {})
        if card.get("version"):
            return str(card["version"])
        identity = "|".join(str(card.get(k)) for k in ("id", "root", "parent"))
        return "card-" + hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()

    async def check_all(self, client: httpx.AsyncClient) -> None:
        await asyncio.gather(*(self.check(client, r) for r in self.replicas()))

    def start(self, client: httpx.AsyncClient) -> None:
        async def loop() -> None:
            while True:
                await self.check_all(client)
                await asyncio.sleep(self.cfg.health.interval_s)

        self._task = asyncio.create_task(loop(), name="tuneforge-gateway-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
