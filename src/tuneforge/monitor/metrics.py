"""Serving metrics with vLLM-style names, so dashboards built for vLLM read them with a prefix change.

Each app gets its own registry (several apps in one process, as in tests, must not collide).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


@dataclass
class ServingMetrics:
    """The counters, gauges and histograms one server exposes on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["model_name"]
        r = self.registry
        self.time_to_first_token = Histogram("tuneforge:time_to_first_token_seconds", "Time to first token.",
                                             labels, buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token_latency = Histogram("tuneforge:inter_token_latency_seconds", "Time between tokens.",
                                             labels, buckets=LATENCY_BUCKETS, registry=r)
        self.e2e_latency = Histogram("tuneforge:e2e_request_latency_seconds", "End-to-end request latency.",
                                     labels, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("tuneforge:request_queue_time_seconds", "Time waiting for the engine.",
                                    labels, buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge("tuneforge:num_requests_running", "Requests being generated.", labels, registry=r)
        self.waiting = Gauge("tuneforge:num_requests_waiting", "Requests waiting for the engine.", labels,
                             registry=r)
        self.prompt_tokens = Counter("tuneforge:prompt_tokens", "Prompt tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("tuneforge:generation_tokens", "Tokens generated.", labels, registry=r)
        self.request_success = Counter("tuneforge:request_success", "Finished requests by finish reason.",
                                       [*labels, "finished_reason"], registry=r)
