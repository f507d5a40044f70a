"""The gateway's Prometheus metrics, vLLM-style names under `tuneforge_gateway:`.

Latency is split: what the gateway itself adds before the first byte goes upstream (auth, limits, cache,
routing) and what the upstream takes (to its first token, and to its end), per route, variant and replica.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PER_VARIANT = ("route", "variant", "backend")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "tuneforge_gateway:"
        self.requests = Counter(f"{p}requests", "Requests answered", ("tenant", *PER_VARIANT, "status"), registry=r)
        self.tokens = Counter(f"{p}tokens", "Tokens served (prompt + completion)", ("tenant", *PER_VARIANT, "kind"),
                              registry=r)
        self.added = Histogram(f"{p}added_latency_seconds", "Gateway time before the request goes upstream",
                               ("route",), buckets=FAST, registry=r)
        self.ttft = Histogram(f"{p}upstream_time_to_first_token_seconds", "Upstream time to the first byte",
                              PER_VARIANT, buckets=SLOW, registry=r)
        self.latency = Histogram(f"{p}upstream_latency_seconds", "Upstream time to the end of the answer",
                                 PER_VARIANT, buckets=SLOW, registry=r)
        self.cache = Counter(f"{p}cache", "Cache lookups (result: hit, semantic_hit, miss)", ("route", "result"),
                             registry=r)
        self.refusals = Counter(f"{p}refusals", "Requests refused before upstream", ("tenant", "reason"), registry=r)
        self.budget_used = Gauge(f"{p}budget_used_tokens", "Tokens used this period", ("tenant", "key"), registry=r)
        self.budget_limit = Gauge(f"{p}budget_limit_tokens", "The key's token budget per period", ("tenant", "key"),
                                  registry=r)
        self.cache_up = Gauge(f"{p}cache_up", "1 while the response cache's Redis answers, 0 while it is bypassed",
                              registry=r)
        self.ejections = Counter(f"{p}replica_ejections", "Replicas taken out after a failure", ("backend",),
                                 registry=r)
        self.retries = Counter(f"{p}retries", "Requests retried on another replica", ("route",), registry=r)
        self.outstanding = Gauge(f"{p}outstanding_requests", "Requests in flight per replica", ("backend",),
                                 registry=r)
