"""A real Prometheus (Debian's) scraping a live `tuneforge serve` (tiny model) every second: after a bounded
load, the TTFT histogram read back through Prometheus' HTTP API counts every request and its p99 is the one
the engine's own buckets give; the alert rules load and evaluate; every dashboard query parses and runs; the
image's HEALTHCHECK script tells a live engine from a dead port."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import httpx
import pytest
import yaml
from tests.deploy.deploy_support import DEPLOY, tool
from tests.servers import until as _until

from tuneforge.core.config import ServeConfig
from tuneforge.core.net import free_port
from tuneforge.pipeline import start_server, stop_server

REQUESTS = 12


def _query(base: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def _p99_from_buckets(metrics_text: str) -> float:
    """histogram_quantile(0.99, ...) over the engine's own cumulative TTFT buckets, as Prometheus computes it
    (linear interpolation inside the bucket, the lower bound of the first bucket being 0)."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("tuneforge:time_to_first_token_seconds_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    rank = 0.99 * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            return upper if math.isinf(upper) else lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    raise AssertionError("no bucket reached the rank")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine for the module: only the TTFT test sends requests (the others read, and would see its)."""
    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="tiny", max_tokens=8),
                                tmp_path_factory.mktemp("engine"))
    yield url.removesuffix("/v1")
    stop_server(process)


@pytest.fixture
def prometheus(tmp_path, engine):
    port = free_port()
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp_path / "alerts.yml")],
              "scrape_configs": [{"job_name": "tuneforge-engine",
                                  "static_configs": [{"targets": [engine.removeprefix("http://")]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen([tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            """Prometheus answers /-/ready"""
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until(ready)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_ttft_histogram_read_back_through_prometheus(engine, prometheus):
    def scraped():
        """the engine target is up"""
        return _query(prometheus, 'up{job="tuneforge-engine"} == 1')

    _until(scraped)
    def counted(n: int):
        def check():
            result = _query(prometheus, "sum(tuneforge:time_to_first_token_seconds_count)")
            return result and float(result[0]["value"][1]) == n
        check.__doc__ = f"Prometheus has scraped {n} requests"
        return check

    with httpx.Client(base_url=engine, timeout=120) as client:
        for i in range(REQUESTS):
            answer = client.post("/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": 4,
                "ignore_eos": True, "stream": bool(i % 2)})
            assert answer.status_code == 200
            if i + 1 == REQUESTS // 2:  # half before a scrape, half after: rate() then sees the load grow
                _until(counted(i + 1))
    served = httpx.get(f"{engine}/metrics", timeout=10).text
    _until(counted(REQUESTS))
    p99 = _query(prometheus, "histogram_quantile(0.99, sum by (le) (tuneforge:time_to_first_token_seconds_bucket))")
    assert len(p99) == 1
    assert float(p99[0]["value"][1]) == pytest.approx(_p99_from_buckets(served))
    rated = _query(prometheus, "histogram_quantile(0.99, sum by (le) "
                               "(rate(tuneforge:time_to_first_token_seconds_bucket[1m])))")
    assert len(rated) == 1 and 0 < float(rated[0]["value"][1]) < math.inf
    finished = _query(prometheus, 'sum(tuneforge:request_success_total{finished_reason="length"})')
    assert float(finished[0]["value"][1]) == REQUESTS


def test_alert_rules_and_dashboard_queries_run_on_a_real_prometheus(engine, prometheus):
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    expected = {rule["alert"] for group in groups for rule in group["rules"]}

    def evaluated():
        """every alert rule has been evaluated without error"""
        data = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in data for rule in group["rules"]]
        done = {r["name"] for r in rules if r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")}
        return done == expected and rules

    rules = _until(evaluated)
    assert all(r["state"] == "inactive" for r in rules), rules  # a healthy engine, no drift job: nothing fires
    dashboard = json.loads((DEPLOY / "grafana" / "tuneforge.json").read_text())
    variables = {"$__rate_interval": "1m", "${datasource}": "prometheus", "$model": ".*", "$route": ".*"}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, expr
            _query(prometheus, expr)  # parsed and evaluated by Prometheus itself


def test_the_image_healthcheck_script_tells_a_live_engine_from_a_dead_port(engine):
    script = str(DEPLOY / "healthcheck.py")
    port = engine.rsplit(":", 1)[1]
    live = subprocess.run([sys.executable, script], env={**os.environ, "HEALTH_PORT": port}, capture_output=True)
    assert live.returncode == 0, live.stderr
    dead = subprocess.run([sys.executable, script], env={**os.environ, "HEALTH_PORT": str(free_port())},
                          capture_output=True, text=True)
    assert dead.returncode == 1 and "unhealthy" in dead.stderr
