"""deploy/prometheus: the alert rules parse (`promtool check rules`), each alert fires on its unit series and
stays quiet on the healthy ones (`promtool test rules`), and every metric they read is one the code exports."""

from __future__ import annotations

import re
import subprocess

import yaml
from tests.deploy.deploy_support import DEPLOY, promql_metric_names, tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
UNIT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
# what the issue asks an operator to be woken up by → the alerts that cover it
REQUIRED = {
    "TTFT p99 over the 500 ms SLO": "TuneforgeTTFTHighP99",
    "generation error rate > 0.1 %": "TuneforgeGenerationErrorRate",
    "queue growing for N minutes": "TuneforgeQueueGrowing",
    "engine restarts": "TuneforgeEngineRestarted",
    "replica down": "TuneforgeReplicaDown",
    "gateway budget near exhaustion": "TuneforgeGatewayBudgetNearExhaustion",
    "cache degraded": "TuneforgeGatewayCacheDegraded",
    "drift over threshold": "TuneforgeDriftDetected",
}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_and_unit_tests_the_rules():
    checked = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout
    tested = subprocess.run([tool("promtool"), "test", "rules", UNIT_TESTS.name], cwd=UNIT_TESTS.parent,
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_test_fails_when_an_alert_would_not_fire(tmp_path):
    """The unit tests can fail: the same series against a TTFT SLO raised to 2 s no longer fire."""
    text = RULES.read_text().replace("rate(tuneforge:time_to_first_token_seconds_bucket[5m]))) > 0.5",
                                     "rate(tuneforge:time_to_first_token_seconds_bucket[5m]))) > 2")
    assert text != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(text)
    (tmp_path / "alerts_test.yml").write_text(UNIT_TESTS.read_text())
    tested = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert tested.returncode != 0 and "TuneforgeTTFTHighP99" in tested.stdout + tested.stderr


def test_every_alert_has_firing_and_quiet_unit_series():
    alerts = {rule["alert"] for rule in _rules()}
    assert set(REQUIRED.values()) <= alerts
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == alerts, f"alerts never seen firing in alerts_test.yml: {sorted(alerts - fired)}"
    # quiet: an eval before `for:` has passed, or after the window; the other alerts are quiet next to a
    # firing series (a healthy instance in the same test whose alert would fail it)
    assert quiet >= {a for a in alerts if a not in {"TuneforgeGatewayErrorRate", "TuneforgeGatewayBudgetExhausted"}}


def test_rules_read_only_metrics_the_code_exports(exported):
    for rule in _rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, which no code exports"
        for text in rule.get("annotations", {}).values():  # `query` templates name metrics too
            for query in re.findall(r"printf `([^`]*)`", text):
                assert promql_metric_names(query.replace("%q", '"x"')) <= exported, (rule["alert"], query)


def test_the_name_check_catches_an_unknown_metric(exported):
    assert promql_metric_names('sum by (le) (rate(tuneforge:ttft_seconds_bucket{model_name=~"$model"}[5m]))') == \
        {"tuneforge:ttft_seconds_bucket"}
    assert "tuneforge:ttft_seconds_bucket" not in exported
    assert {"tuneforge:time_to_first_token_seconds_bucket", "tuneforge:request_success_total",
            "tuneforge_gateway:refusals_total", "tuneforge:drift_detected"} <= exported
