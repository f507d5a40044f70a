"""Registry fixtures: a real `mlflow server` (SQLite backend) on a free loopback port per module, eval reports
of the tiny adapters, and `registry_cfg` parametrized over both backends (MLflow and the embedded default)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from tests.servers import postgres

from tuneforge.core.artifacts import create_artifact
from tuneforge.core.registry_config import RegistryConfig
from tuneforge.pipeline import stop_server

# The policies the story runs under: staging needs a passing val_loss gate, production that plus an approval,
# canary a domain_accuracy gate the tiny model fails.
POLICIES = {
    "staging": {"gates": {"val_loss": "<= 50"}},
    "production": {"gates": {"val_loss": "<= 50"}, "approvals": 1},
    "canary": {"gates": {"domain_accuracy": ">= 0.9", "val_loss": "<= 50"}},
}
EVAL_GATES = {"domain_accuracy": ">= 0.9", "val_loss": "<= 50"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """Base URL of a real `mlflow server` process with a SQLite backend store, stopped after the module."""
    if importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("mlflow.server") is None:
        reason = "the mlflow package (its server) is not installed: pip install 'tuneforge[registry]'"
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(folder / "server.log", "w")
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{(folder / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not ready in 120 s:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        stop_server(process)
        log.close()


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server's SQLAlchemy URL; MLflow uses it directly as its SQL store."""
    with postgres() as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_root(tmp_path_factory):
    """One registry folder (audit log, store) per MLflow server: the server's models all chain into its log."""
    return tmp_path_factory.mktemp("mlflow-registry")


@pytest.fixture(params=["mlflow", "embedded"])
def registry_cfg(request, tmp_path):
    """A RegistryConfig on a fresh registry: a real MLflow server, or the embedded default in tmp_path (a test can
    ask for "postgres" too: MLflow's SQL store on a real PostgreSQL server)."""
    if request.param == "mlflow":
        url = request.getfixturevalue("mlflow_server")
        root = request.getfixturevalue("mlflow_root")
        return RegistryConfig(tracking_uri=url, root=root, policies=POLICIES, admins=["root-admin"])
    if request.param == "postgres":  # MLflow's SQL store straight on PostgreSQL, no tracking server
        url = request.getfixturevalue("postgres_url")
        return RegistryConfig(tracking_uri=url, root=tmp_path / "registry", policies=POLICIES, admins=["root-admin"])
    return RegistryConfig(root=tmp_path / "registry", policies=POLICIES, admins=["root-admin"])


@pytest.fixture
def model_name():
    """A model name no other test on the shared MLflow server uses."""
    return f"bot-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tiny_eval(tiny_adapter, tiny_dataset, tiny_config, tmp_path_factory):
    """A real eval report of the tiny adapter: val_loss <= 50 passes, domain_accuracy >= 0.9 fails."""
    from tuneforge.eval.evaluate import run_eval

    cfg = tiny_config.eval.model_copy(update={"max_new_tokens": 4, "general": False, "gates": EVAL_GATES})
    return run_eval(str(tiny_adapter.path), cfg, tmp_path_factory.mktemp("ev") / "eval", tiny_dataset)


@pytest.fixture(scope="session")
def second_adapter(tmp_path_factory, tiny_config, tiny_dataset):
    """Another real adapter of the same data (2 epochs, another learning rate): a second version."""
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"epochs": 2, "lr": 0.01})
    return train(tiny_dataset, tiny_config.model, cfg, tmp_path_factory.mktemp("ad2") / "adapter")


@pytest.fixture(scope="session")
def second_eval(second_adapter, tiny_dataset, tiny_config, tmp_path_factory):
    from tuneforge.eval.evaluate import run_eval

    cfg = tiny_config.eval.model_copy(update={"max_new_tokens": 4, "general": False, "gates": EVAL_GATES})
    return run_eval(str(second_adapter.path), cfg, tmp_path_factory.mktemp("ev2") / "eval", tiny_dataset)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Three model artifacts: the tiny random Llama with seeds 1, 2, 3 (different weights, different answers)."""
    from tuneforge.models.loader import TINY, build_tiny_random_llama, load_tokenizer

    tokenizer = load_tokenizer(TINY)
    folder = tmp_path_factory.mktemp("tiny-models")
    paths = []
    for seed in (1, 2, 3):
        with create_artifact(folder / f"seed{seed}", "model", config={"seed": seed}) as writer:
            build_tiny_random_llama(tokenizer, seed=seed).save_pretrained(writer.path)
            tokenizer.save_pretrained(writer.path)
        paths.append(folder / f"seed{seed}")
    return paths


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """Endpoint URL of a real S3-compatible server process (moto's `moto_server`), stopped after the module."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.fail("moto_server is not installed: pip install 'tuneforge[registry]' (moto[server])")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto_server exited with {process.returncode}")
            try:
                httpx.get(f"{url}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not answer within 60 s")
                time.sleep(0.1)
        yield url
    finally:
        stop_server(process)
        log.close()
