"""Concurrent registration with real processes: four processes, released together by a barrier, register two
artifacts (two processes each) under one name. Same content ends as one version (both processes get its
number, one of them `created`); different contents get distinct numbers. On the embedded registry (file lock)
and on a real `mlflow server` (lowest number wins, the duplicate is deleted)."""

from __future__ import annotations

import multiprocessing

import pytest

from tuneforge.core.registry_config import RegistryConfig
from tuneforge.registry import open_registry
from tuneforge.registry.lineage import verify
from tuneforge.registry.versions import versions


def _register(cfg_json: str, artifact: str, name: str, user: str, barrier, results) -> None:
    from tuneforge.registry.versions import register

    session = open_registry(RegistryConfig.model_validate_json(cfg_json), user=user)
    barrier.wait(timeout=120)  # everything imported and connected: start at the same moment
    version, created = register(session, artifact, name)
    results.put((user, artifact, version.number, version.content_hash, created))


@pytest.fixture(params=["embedded", "mlflow"])
def race_cfg(request, tmp_path):
    if request.param == "mlflow":
        return RegistryConfig(tracking_uri=request.getfixturevalue("mlflow_server"), root=tmp_path / "registry")
    return RegistryConfig(root=tmp_path / "registry")


def test_concurrent_registration(race_cfg, tiny_models, model_name):
    context = multiprocessing.get_context("spawn")  # fresh interpreters: real separate processes
    barrier, results = context.Barrier(4), context.Queue()
    artifacts = [str(tiny_models[0]), str(tiny_models[0]), str(tiny_models[1]), str(tiny_models[1])]
    workers = [context.Process(target=_register, args=(race_cfg.model_dump_json(), artifact, model_name,
                                                       f"user{i}", barrier, results))
               for i, artifact in enumerate(artifacts)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    got = [results.get(timeout=5) for _ in workers]

    by_artifact: dict[str, list[tuple[int, bool]]] = {}
    for _, artifact, number, _, created in got:
        by_artifact.setdefault(artifact, []).append((number, created))
    for artifact, outcomes in by_artifact.items():
        assert len({n for n, _ in outcomes}) == 1, f"{artifact} got two versions: {outcomes}"
        assert sorted(c for _, c in outcomes) == [False, True], f"exactly one process creates it: {outcomes}"
    numbers = {outcomes[0][0] for outcomes in by_artifact.values()}
    assert len(numbers) == 2, f"two contents must get distinct numbers: {by_artifact}"

    session = open_registry(race_cfg, user="checker")
    registered = versions(session, model_name)
    assert sorted(v.number for v in registered) == sorted(numbers)
    assert len({v.content_hash for v in registered}) == 2
    registrations = [e for e in session.log.entries(model_name) if e["action"] == "register"]
    assert sorted(e["version"] for e in registrations) == sorted(numbers)  # one audit entry per version
    assert verify(session).ok
