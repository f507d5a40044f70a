"""deploy/grafana/tuneforge.json: every panel query (and template variable) reads only metrics the code
exports, and the dashboard covers what an operator watches (latency percentiles, throughput, load, KV cache,
errors by reason, per tenant / route / variant / adapter, cache hit ratio, drift). Prometheus itself parses
each query in test_prometheus_live.py."""

from __future__ import annotations

import json
import re

from tests.deploy.deploy_support import DEPLOY, promql_metric_names

DASHBOARD = json.loads((DEPLOY / "grafana" / "tuneforge.json").read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] if p["type"] != "row" for t in p["targets"]]


def test_every_panel_reads_only_exported_metrics(exported):
    queries = panel_queries()
    assert len({title for title, _ in queries}) >= 20
    for title, expr in queries:
        names = promql_metric_names(expr)
        assert names, (title, expr)
        assert names <= exported, f"panel {title!r} reads {sorted(names - exported)}, which no code exports"
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\(([^,]+),", variable["query"]["query"])
            assert metric.strip() in exported, variable["name"]


def test_the_dashboard_covers_what_the_issue_lists():
    read = {name for _, expr in panel_queries() for name in promql_metric_names(expr)}
    assert {f"tuneforge:{m}_seconds_bucket" for m in ("time_to_first_token", "inter_token_latency",
                                                       "e2e_request_latency")} <= read
    assert {"tuneforge:generation_tokens_total", "tuneforge:num_requests_running", "tuneforge:num_requests_waiting",
            "tuneforge:kv_cache_usage_perc", "tuneforge:request_success_total", "tuneforge_gateway:cache_total",
            "tuneforge:drift_p_value", "tuneforge:drift_detected"} <= read
    grouped = " ".join(expr for _, expr in panel_queries())
    for label in ("finished_reason", "tenant", "route", "variant", "adapter", "backend"):
        assert re.search(rf"by \([^)]*\b{label}\b", grouped), f"no panel breaks down by {label}"
    assert any("histogram_quantile(0.99" in expr for _, expr in panel_queries())
    assert 'result="hit"' in grouped  # the hit ratio: hits over all lookups
