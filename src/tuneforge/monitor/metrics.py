"""Serving metrics with vLLM-style names, so dashboards built for vLLM read them with a prefix change.

Each app gets its own registry (several apps in one process, as in tests, must not collide).
Latency histograms and token counters are labelled by model and adapter ("" for the base model);
the load gauges by model.
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
