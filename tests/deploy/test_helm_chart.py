"""deploy/helm/tuneforge: `helm lint`, `helm template` rendered and validated against the Kubernetes API
schemas (kubernetes-validate, strict: unknown fields fail), and what the chart promises checked on the output:
probes, a grace period longer than the drain, the HPA on the queue, routes the gateway's own loader accepts."""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from tests.deploy.deploy_support import DEPLOY, tool

from tuneforge.core.config import ServeConfig
from tuneforge.gateway.config import GatewayConfig

CHART = DEPLOY / "helm" / "tuneforge"
K8S_VERSION = "1.30.0"
CRDS = {"ServiceMonitor", "ScaledObject"}  # not in the core schemas: their fields are checked below


def render(*sets: str) -> dict[tuple[str, str], dict]:
    args = [tool("helm"), "template", "tf", str(CHART), "--namespace", "llm"]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def test_helm_lint_passes():
    linted = subprocess.run([tool("helm"), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


@pytest.mark.parametrize("sets", [(), ("autoscaling.keda.enabled=true",),
                                  ("autoscaling.enabled=false", "gateway.enabled=false", "redis.enabled=false",
                                   "monitoring.serviceMonitor.enabled=false")], ids=["default", "keda", "bare"])
def test_rendered_manifests_match_the_kubernetes_schemas(sets):
    rendered = render(*sets)
    for (kind, _name), manifest in rendered.items():
        if kind in CRDS:
            continue
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)  # raises on a wrong field or type


def test_the_schema_check_rejects_a_misspelled_probe():
    engine = render()[("Deployment", "tf-tuneforge-engine")]
    engine["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/ready"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(engine, K8S_VERSION, strict=True)


@pytest.mark.parametrize("drain", [30, 300])
def test_engine_probes_and_a_grace_period_longer_than_the_drain(drain):
    rendered = render(f"engine.drainTimeoutSeconds={drain}")
    serve = yaml.safe_load(rendered[("ConfigMap", "tf-tuneforge-engine")]["data"]["serve.yaml"])["serve"]
    cfg = ServeConfig.model_validate(serve)  # the engine accepts its config file
    assert cfg.drain_timeout == drain
    pod = rendered[("Deployment", "tf-tuneforge-engine")]["spec"]["template"]["spec"]
    engine = pod["containers"][0]
    pre_stop = int(engine["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg.drain_timeout
    assert engine["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert engine["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = engine["startupProbe"]
    assert startup["httpGet"]["path"] == "/health" and startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert engine["resources"]["requests"] and engine["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] and engine["securityContext"]["readOnlyRootFilesystem"]
    assert engine["args"][:2] == ["serve", "smollm2-135m"] and "/etc/tuneforge/serve.yaml" in engine["args"]


def test_pdb_and_hpa_on_the_queue():
    rendered = render()
    pdb = rendered[("PodDisruptionBudget", "tf-tuneforge-engine")]
    engine = rendered[("Deployment", "tf-tuneforge-engine")]
    assert pdb["spec"]["selector"]["matchLabels"] == engine["spec"]["selector"]["matchLabels"]
    assert "replicas" not in engine["spec"]  # the HPA owns the count
    hpa = rendered[("HorizontalPodAutoscaler", "tf-tuneforge-engine")]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == "tf-tuneforge-engine"
    metrics = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert metrics == {"tuneforge_num_requests_waiting", "tuneforge_kv_cache_usage_perc"}
    adapter = yaml.safe_load((DEPLOY / "helm" / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"][0]
    assert adapter["name"]["as"] == "tuneforge_${1}" and "num_requests_waiting" in adapter["seriesQuery"]
    keda = render("autoscaling.keda.enabled=true")
    assert ("HorizontalPodAutoscaler", "tf-tuneforge-engine") not in keda
    trigger = keda[("ScaledObject", "tf-tuneforge-engine")]["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and "tuneforge:num_requests_waiting" in trigger["metadata"]["query"]


def test_gateway_routes_configmap_loads_and_names_the_engine_service():
    rendered = render()
    raw = yaml.safe_load(rendered[("ConfigMap", "tf-tuneforge-gateway")]["data"]["gateway.yaml"])["gateway"]
    cfg = GatewayConfig.model_validate(raw)  # what load_gateway does with the mounted file
    engine_service = rendered[("Service", "tf-tuneforge-engine")]
    redis_service = rendered[("Service", "tf-tuneforge-redis")]
    (route,) = cfg.routes.values()
    (backend,) = [urlsplit(u) for v in route.variants.values() for u in v.backends]
    assert backend.hostname == engine_service["metadata"]["name"]
    assert backend.port == engine_service["spec"]["ports"][0]["port"]
    assert urlsplit(cfg.redis_url or "").hostname == redis_service["metadata"]["name"]
    gateway = rendered[("Deployment", "tf-tuneforge-gateway")]["spec"]["template"]["spec"]
    assert gateway["containers"][0]["args"] == ["gateway", "serve", "-c", "/etc/tuneforge/gateway.yaml"]
    assert gateway["volumes"][0]["configMap"]["name"] == "tf-tuneforge-gateway"
    custom = render("gateway.routes.chat.backends[0]=http://vllm:8000/v1")
    raw = yaml.safe_load(custom[("ConfigMap", "tf-tuneforge-gateway")]["data"]["gateway.yaml"])["gateway"]
    assert GatewayConfig.model_validate(raw).routes["chat"].variants["default"].backends == ["http://vllm:8000/v1"]


def test_service_monitors_scrape_with_the_alert_rules_job_names():
    rendered = render()
    for component in ("engine", "gateway"):
        monitor = rendered[("ServiceMonitor", f"tf-tuneforge-{component}")]
        service = rendered[("Service", f"tf-tuneforge-{component}")]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == f"tuneforge-{component}"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert 'job=~"tuneforge-engine|tuneforge-gateway"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
