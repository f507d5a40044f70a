"""The gateway's config: where its state lives, its routes (public model → variants → replicas), its cache.

One YAML file (`tuneforge gateway serve -c gateway.yaml`); defaults here and nowhere else. A route names the
public model clients pass as `model`; each of its variants (versions, adapters) has a weight for canary splits
and one or more replicas, any OpenAI-compatible base URL (`tuneforge serve`, vLLM, llama-server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneforge.core.errors import ConfigError
from tuneforge.core.monitor_config import TrafficLogConfig
from tuneforge.core.paths import state_dir
from tuneforge.core.safety_config import SafetyConfig

DEFAULT_VARIANT = "default"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantConfig(_Section):
    """One version behind a route: its replicas, its share of traffic, the model name upstream."""

    backends: list[str] = Field(..., min_length=1, description="Base URLs of the replicas, e.g. "
                                "http://127.0.0.1:8001/v1 (each an OpenAI-compatible server).")
    weight: float = Field(100.0, ge=0, description="Share of the route's traffic (relative to the other variants).")
    model: str | None = Field(None, description="`model` sent upstream; default: the route's public name.")
    api_key: str | None = Field(None, description="Bearer key the replicas need (serve.api_key); default none.")
    version: str | None = Field(None, description="Version id for cache keys; default: read from the replica's "
                                "/v1/models (the artifact's content hash when it is a tuneforge server).")


class SamplingConfig(_Section):
    """Limits on a route's sampling, checked before any upstream call (a medical route keeps temperature low).

    A request above a limit is refused with a 400 naming the field and the limit, never lowered in silence.
    """

    max_temperature: float | None = Field(None, ge=0, description="Highest `temperature` a request may ask "
                                          "for; above it → 400. None: no cap.")
    default_temperature: float | None = Field(None, ge=0, description="`temperature` sent upstream when a "
                                              "request sets none. None: max_temperature when a cap is set "
                                              "(an upstream's own default, often 1.0, could be above it), "
                                              "else the upstream's default.")

    @model_validator(mode="after")
    def _default_under_cap(self) -> SamplingConfig:
        if self.max_temperature is not None:
            if self.default_temperature is None:
                self.default_temperature = self.max_temperature
            elif self.default_temperature > self.max_temperature:
                raise ValueError(f"default_temperature {self.default_temperature} is above max_temperature "
                                 f"{self.max_temperature}")
        return self


class RouteConfig(_Section):
    """A public model name → variants (canary / A-B) → replicas."""

    variants: dict[str, VariantConfig] = Field(default_factory=dict, description="Variant name → its replicas "
                                               "and weight, e.g. {v3: {weight: 90, ...}, v4: {weight: 10, ...}}.")
    backends: list[str] = Field(default_factory=list, description="Shorthand for one variant named 'default'.")
    sticky_by: Literal["key", "user"] = Field("key", description="Canary assignment hashes the API key (key) or "
                                              "the request's `user` field, falling back to the key (user).")
    cache: bool = Field(True, description="Cache this route's deterministic answers (temperature 0 or a seed).")
    cache_sampled: bool = Field(False, description="Also cache sampled answers (temperature > 0, no seed).")
    cache_semantic: bool = Field(False, description="Also answer a question from the cache when it is close in "
                                 "meaning to a cached one (cache.semantic: threshold, languages). Off by default: a "
                                 "hit answers a question the model never saw. See docs/gateway.md.")
    max_tokens: int = Field(512, ge=1, description="max_tokens assumed when a request sets none (its token budget "
                            "is reserved from it); set it to the replicas' serve.max_tokens.")
    safety: SafetyConfig | None = Field(None, description="Guards on requests and answers (injection, PII, code, "
                                        "language, topics); none: no guards. See docs/safety.md.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Temperature cap and default, "
                                     "e.g. {max_temperature: 0.3, default_temperature: 0.1}.")

    @model_validator(mode="after")
    def _one_form(self) -> RouteConfig:
        if self.backends and self.variants:
            raise ValueError("give either backends (one variant) or variants, not both")
        if self.backends:
            self.variants = {DEFAULT_VARIANT: VariantConfig(backends=self.backends)}
            self.backends = []
        if not self.variants:
            raise ValueError("a route needs backends or variants")
        if self.cache_semantic and not self.cache:
            raise ValueError("cache_semantic needs cache: true (a semantic hit is an entry of the response cache)")
        if sum(v.weight for v in self.variants.values()) <= 0:
            raise ValueError("the variants' weights add up to 0: no variant would get traffic")
        return self


class SemanticCacheConfig(_Section):
    """The semantic cache, for routes with `cache_semantic: true`: a question close in meaning to a cached one
    (same tenant, model version, sampling, system prompt and earlier turns, same numbers and negations) gets
    the cached answer. Embeddings: the packaged all-MiniLM-L6-v2, offline."""

    threshold: float = Field(0.92, gt=0, le=1, description="Least cosine similarity for a hit. Different questions "
                             "of one domain reach 0.83-0.85 with this encoder (docs/gateway.md); lower it with care.")
    max_entries: int = Field(256, ge=1, le=4096, description="Questions remembered per context (system prompt, "
                             "earlier turns, params); the oldest are forgotten past it. Each costs ~450 bytes "
                             "and is compared on every lookup in that context.")
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1, description="Languages (ISO 639-1) "
                                 "whose questions use it: the encoder was trained on English, and in other "
                                 "scripts unrelated questions look alike (Chinese: different facts at 1.0).")


class CacheConfig(_Section):
    """The response cache (exact match on the normalized request)."""

    enabled: bool = Field(True, description="Serve repeated deterministic requests from the cache.")
    redis_url: str | None = Field(None, description="Redis for the cache; default: the gateway's redis_url. A "
                                  "separate, evictable instance is fine: a cache that is down is bypassed.")
    ttl_s: int = Field(3600, ge=1, description="Seconds an answer stays cached.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Bound on cached bytes; the oldest entries are "
                           "evicted past it.")
    max_entry_bytes: int = Field(1024 * 1024, ge=256, description="Answers larger than this (or than a shard's "
                                 "share, max_bytes / shards) are not cached.")
    shards: int = Field(1, ge=1, le=1024, description="Hash slots the cache is spread over, each with its own "
                        "index and max_bytes/shards of the bound; on Redis Cluster set a few per node.")
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)


class HealthConfig(_Section):
    """Active health checks and passive ejection of replicas."""

    interval_s: float = Field(2.0, gt=0, description="Seconds between /health checks of each replica.")
    eject_s: float = Field(10.0, gt=0, description="Seconds a failing replica stays out before it is tried again.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Connect timeout to a replica.")
    read_timeout_s: float = Field(300.0, gt=0, description="Longest silence from a replica mid-answer.")


class GatewayConfig(_Section):
    """`tuneforge gateway`: keys, limits, cache and routes in front of OpenAI-compatible engines."""

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    database_url: str = Field(default_factory=lambda: f"sqlite:///{state_dir() / 'gateway.db'}", description="Keys, "
                              "feedback and request log (SQLAlchemy URL): SQLite for one machine (default: "
                              "gateway.db in the state dir, $TUNEFORGE_HOME), postgresql+psycopg://… for several.")
    redis_url: str | None = Field(None, description="Redis for limits, budgets and (by default) the cache, shared "
                                  "by every gateway instance: redis://host:6379/0, rediss://… (TLS), or a Redis "
                                  "Cluster as redis+cluster://one-node:port. None: an in-process store — one "
                                  "instance only.")
    routes: dict[str, RouteConfig] = Field(default_factory=dict, description="Public model name → route.")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    traffic_log: TrafficLogConfig = Field(
        default_factory=TrafficLogConfig, description="Sampled, PII-scrubbed requests, answers and guard flags "
        "appended to a JSONL file for `tuneforge monitor drift` (off unless `path` is set)."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body; larger → 413 before "
                                "it is read whole.")
    key_cache_s: float = Field(5.0, ge=0, description="Seconds a looked-up key is trusted before the database is "
                                "asked again (a revoked key stops working within this time).")
    admin_key: str | None = Field(None, description="Bearer key for /admin/* (reviews, variant stats); default the "
                                  "TUNEFORGE_GATEWAY_ADMIN_KEY environment variable; none: admin calls are off.")


def load_gateway(path: Path | None, **overrides: object) -> GatewayConfig:
    """Read a gateway YAML (its top level, or its `gateway:` section); errors name the field and the file."""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        raw = raw.get("gateway", raw) if isinstance(raw, dict) else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of gateway settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # the context: paths inside the config (a grounded rule's known_file) are relative to its file
        return GatewayConfig.model_validate(raw, context={"base_dir": Path(path).parent if path else None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path or 'gateway config'}: {where}: {first['msg']}") from None
