"""Serving metrics with vLLM-style names, so dashboards built for vLLM read them with a prefix change.

Each app gets its own registry (several apps in one process, as in tests, must not collide).
Latency histograms and token counters are labelled by model and adapter ("" for the base model);
the load gauges by model. The version served is an info gauge (`model_version_info{version=…} 1`, the
Prometheus convention for build and version facts): a label on every series would split each one at
every swap; join on `model_name` to break any series down by version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
                   80.0)


@dataclass
class ServingMetrics:
    """The counters, gauges and histograms one server exposes on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["model_name", "adapter"]
        r = self.registry

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(f"tuneforge:{name}", doc, labels, buckets=LATENCY_BUCKETS, registry=r)

        self.time_to_first_token = histogram("time_to_first_token_seconds", "Time to first token.")
        self.inter_token_latency = histogram("inter_token_latency_seconds", "Time between output tokens.")
        self.e2e_latency = histogram("e2e_request_latency_seconds", "End-to-end request latency.")
        self.queue_time = histogram("request_queue_time_seconds", "Time from arrival to the first scheduled step.")
        self.running = Gauge("tuneforge:num_requests_running", "Requests being generated.", ["model_name"],
                             registry=r)
        self.waiting = Gauge("tuneforge:num_requests_waiting", "Requests waiting for a cache slot.",
                             ["model_name"], registry=r)
        self.cache_usage = Gauge("tuneforge:kv_cache_usage_perc", "Fraction of KV-cache slots in use (0-1).",
                                 ["model_name"], registry=r)
        self.prompt_tokens = Counter("tuneforge:prompt_tokens", "Prompt tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("tuneforge:generation_tokens", "Tokens generated.", labels, registry=r)
        self.request_success = Counter("tuneforge:request_success", "Finished requests by finish reason.",
                                       [*labels, "finished_reason"], registry=r)
        self.rejected = Counter("tuneforge:request_rejected", "Requests refused before admission, by status.",
                                ["model_name", "status"], registry=r)
        self.engine_restarts = Counter("tuneforge:engine_restarts", "Engine loops restarted by the watchdog.",
                                       ["model_name"], registry=r)
        self.model_version = Gauge("tuneforge:model_version_info", "1 for the version being served: its content "
                                   "hash and registry version ('support-bot/3', '' outside the registry).",
                                   ["model_name", "version", "registry_version"], registry=r)
        self.model_swaps = Counter("tuneforge:model_swaps", "Switches to another version of a followed registry "
                                   "alias, by result (ok; failed: the old version kept serving).",
                                   ["model_name", "result"], registry=r)
        self.model_swap_seconds = Gauge("tuneforge:model_swap_seconds", "The last switch: seconds from seeing the "
                                        "alias move to traffic on the new version (load + self-test).",
                                        ["model_name"], registry=r)
        self.versions_loaded = Gauge("tuneforge:model_versions_loaded", "Model versions in memory (2 while an "
                                     "old one finishes its requests beside the new one).", ["model_name"],
                                     registry=r)

    def served_version(self, model_name: str, version: str | None, label: str | None,
                       replaces: tuple[str | None, str | None] | None = None) -> None:
        """Mark `version` as served (and the one it `replaces`, (version, label), as not any more)."""
        if replaces is not None and replaces[0] is not None and replaces != (version, label):
            self.model_version.remove(model_name, replaces[0], replaces[1] or "")
        if version is not None:
            self.model_version.labels(model_name=model_name, version=version, registry_version=label or "").set(1)

    def observe_queue(self, labels: dict[str, str], seconds: float) -> None:
        self.queue_time.labels(**labels).observe(seconds)

    def observe_first_token(self, labels: dict[str, str], seconds: float) -> None:
        self.time_to_first_token.labels(**labels).observe(seconds)

    def observe_inter_token(self, labels: dict[str, str], seconds: float) -> None:
        self.inter_token_latency.labels(**labels).observe(seconds)

    def observe_finished(self, labels: dict[str, str], reason: str, prompt_tokens: int, generated: int,
                         seconds: float) -> None:
        self.prompt_tokens.labels(**labels).inc(prompt_tokens)
        self.generation_tokens.labels(**labels).inc(generated)
        self.request_success.labels(**labels, finished_reason=reason).inc()
        self.e2e_latency.labels(**labels).observe(seconds)

    def set_load(self, model_name: str, running: int, waiting: int, cache_usage: float) -> None:
        self.running.labels(model_name=model_name).set(running)
        self.waiting.labels(model_name=model_name).set(waiting)
        self.cache_usage.labels(model_name=model_name).set(cache_usage)
