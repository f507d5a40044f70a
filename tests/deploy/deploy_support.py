"""What the deploy tests share: the metric names the code exports (read from its own registries, not a list
kept by hand), the metric names a PromQL expression reads, and the deploy tools (`make setup` installs them)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Series Prometheus makes itself for every target (not exported by any code of ours).
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}


def _families(registry) -> set[str]:
    """Every series name a prometheus_client registry exposes, children or not (a labelled metric with no
    children yet still has its family in collect())."""
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def exported_metric_names() -> set[str]:
    """The names on the engine's and the gateway's /metrics and in the drift job's textfile."""
    from tuneforge.gateway.metrics import GatewayMetrics
    from tuneforge.monitor import drift
    from tuneforge.monitor.metrics import ServingMetrics

    report = drift.DriftReport(reference="reference", traffic="traffic", n_reference=1, n_traffic=1, alpha=0.05)
    return (_families(ServingMetrics().registry) | _families(GatewayMetrics().registry)
            | _families(drift.metrics_registry(report)))


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, grouping lists, ranges,
    Grafana variables and function / aggregation names are taken out, what is left are metric names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call is None and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def tool(name: str) -> str:
    """A deploy tool: the venv's (helm, hadolint) or the system's (promtool, prometheus from Debian)."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:/usr/bin:/usr/local/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: `make setup` installs it")
    return found
