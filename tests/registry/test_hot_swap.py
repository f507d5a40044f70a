"""`tuneforge serve registry:NAME@production` as a real process follows the alias under load: promoted v1 → v2,
rolled back to v1, then moved to a tampered v3 whose load fails. Every request of a load generator (plain and
streamed) must succeed, its `x-tuneforge-model-version` must say which version answered, and its text must be
that version's (three tiny random models with different seeds answer differently). Against the embedded
registry and a real `mlflow server`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
import yaml
from tests.servers import until

from tuneforge.core.net import free_port, wait_ready
from tuneforge.core.registry_config import RegistryConfig
from tuneforge.pipeline import stop_server
from tuneforge.registry import open_registry
from tuneforge.registry.promote import promote, rollback
from tuneforge.registry.versions import register

QUESTION = [{"role": "user", "content": "What color is the Quokka lamp?"}]


@dataclass
class Answer:
    done_at: float
    version: str | None
    text: str
    error: str | None = None


class Load:
    """A load generator: `plain` + `streamed` client threads asking QUESTION in a loop, at most `max_requests`
    in all and `seconds` long."""

    def __init__(self, url: str, plain: int = 2, streamed: int = 2, max_requests: int = 4000,
                 seconds: float = 90.0) -> None:
        self.url, self.max_requests, self.deadline = url, max_requests, time.monotonic() + seconds
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i < streamed,), daemon=True)
                        for i in range(plain + streamed)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _more(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline and len(self.answers) < self.max_requests

    def _client(self, streamed: bool) -> None:
        # streams run ~50 steps: there are always some in flight when the alias moves
        body = {"model": "bot", "messages": QUESTION, "temperature": 0, "max_tokens": 48 if streamed else 4,
                "stream": streamed, "ignore_eos": True}
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while self._more():
                answer = self._ask(client, body, streamed)
                with self._lock:
                    self.answers.append(answer)

    def _ask(self, client: httpx.Client, body: dict, streamed: bool) -> Answer:
        try:
            if not streamed:
                reply = client.post("/v1/chat/completions", json=body)
                version = reply.headers.get("x-tuneforge-model-version")
                if reply.status_code != 200:
                    return Answer(time.monotonic(), version, "", f"{reply.status_code}: {reply.text}")
                return Answer(time.monotonic(), version, reply.json()["choices"][0]["message"]["content"])
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                version = reply.headers.get("x-tuneforge-model-version")
                if reply.status_code != 200:
                    return Answer(time.monotonic(), version, "", f"{reply.status_code}: {reply.read()!r}")
                text, done = "", False
                for line in reply.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        event = json.loads(line[6:])
                        if "error" in event:
                            return Answer(time.monotonic(), version, text, f"stream error: {event['error']}")
                        text += "".join(c["delta"].get("content") or "" for c in event["choices"])
                return Answer(time.monotonic(), version, text, None if done else "stream ended without [DONE]")
        except httpx.HTTPError as exc:
            return Answer(time.monotonic(), None, "", f"{type(exc).__name__}: {exc}")

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.done_at >= t]

    def wait_for(self, version: str, after: float, count: int = 10, seconds: float = 60.0) -> float:
        """Wait until `count` answers finished after `after` came from `version`; the first one's time."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen = [a for a in self.since(after) if a.version == version]
            if len(seen) >= count:
                return seen[0].done_at
            time.sleep(0.05)
        got = sorted({str(a.version)[:12] for a in self.since(after)})
        raise AssertionError(f"no {count} answers from {version[:12]} within {seconds:.0f} s (got {got})")


def _metrics(base: str) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("tuneforge:model_"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def _until(check, seconds: float = 60.0):
    return until(check, seconds, every=0.05)


@pytest.fixture(params=["embedded", "mlflow"])
def follow_cfg(request, tmp_path):
    uri = request.getfixturevalue("mlflow_server") if request.param == "mlflow" else None
    return RegistryConfig(tracking_uri=uri, root=tmp_path / "registry", policies={}, follow_interval_s=0.2)


def test_serve_follows_the_alias_under_load(follow_cfg, tiny_models, tmp_path, model_name):
    session = open_registry(follow_cfg, user="alice")
    v1, _ = register(session, tiny_models[0], model_name)
    v2, _ = register(session, tiny_models[1], model_name)
    promote(session, f"{model_name}/1", "production")

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "serve": {"served_model_name": "bot", "dtype": "float32", "max_num_seqs": 4, "max_model_len": 128,
                  "max_tokens": 64},
        "registry": follow_cfg.model_dump(mode="json")}))
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", f"registry:{model_name}@production",
                                    "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/ready", process, 120)
        card = httpx.get(f"{base}/v1/models").json()["data"][0]
        assert (card["version"], card["registry_version"]) == (v1.content_hash, f"{model_name}/1")
        with Load(base) as load:
            started = time.monotonic()
            load.wait_for(v1.content_hash, started)

            promoted = time.monotonic()
            promote(session, f"{model_name}/2", "production")
            first_v2 = load.wait_for(v2.content_hash, promoted)
            _until(lambda: _metrics(base).get('tuneforge:model_versions_loaded{model_name="bot"}') == 1.0)
            card = httpx.get(f"{base}/v1/models").json()["data"][0]
            assert (card["version"], card["registry_version"]) == (v2.content_hash, f"{model_name}/2")

            rolled = time.monotonic()
            rollback(session, model_name, "production", reason="answers got worse")
            first_back = load.wait_for(v1.content_hash, rolled, count=20)
            assert all(a.version == v1.content_hash for a in load.since(first_back + 1.0))  # v2 fully gone

            v3, _ = register(session, tiny_models[2], model_name)
            weights = session.store.local_path(v3.content_hash) / "model.safetensors"
            with open(weights, "ab") as handle:  # tampered in the store, after registration
                handle.write(b"\0" * 16)
            moved = time.monotonic()
            promote(session, f"{model_name}/3", "production")
            ready = _until(lambda: (r := httpx.get(f"{base}/ready").json())["follow"]["error"] and r)
            load.wait_for(v1.content_hash, time.monotonic(), count=20)
            ended = time.monotonic()
        answers = load.answers
        metrics = _metrics(base)
    finally:
        stop_server(process)
    server_log = log.read_text()

    failures = [a for a in answers if a.error or a.version is None]
    assert not failures, f"{len(failures)} of {len(answers)} requests failed: {failures[:3]}\n{server_log[-3000:]}"
    texts: dict[str, set[str]] = {}
    for a in answers:
        texts.setdefault(str(a.version), set()).add(a.text[:8])  # streamed answers are longer: compare a prefix
    assert set(texts) == {v1.content_hash, v2.content_hash}, "no answer may come from the tampered v3"
    assert not texts[v1.content_hash] & texts[v2.content_hash], f"v1 and v2 answered alike: {texts}"
    assert all(a.version == v1.content_hash for a in answers if a.done_at > moved + 1.0 and a.done_at > rolled)

    assert ready["status"] == "ready" and ready["registry_version"] == f"{model_name}/1"
    assert f"{model_name}/3 (now @production) failed to load; still serving {model_name}/1" in ready["follow"]["error"]
    assert "failed to load" in server_log
    # once v1 was released, v2's loop (started on a thread, beside v1) moved to the faster main thread
    assert f"follow: engine loop of {model_name}/2 moved to the main thread" in server_log
    finishing = [int(n) for n in re.findall(r"(\d+) request\(s\) finishing on", server_log)]
    assert len(finishing) == 2 and max(finishing) >= 1, f"no request was in flight across a swap: {finishing}"
    assert metrics['tuneforge:model_swaps_total{model_name="bot",result="ok"}'] == 2
    assert metrics['tuneforge:model_swaps_total{model_name="bot",result="failed"}'] == 1
    info = (f'tuneforge:model_version_info{{model_name="bot",registry_version="{model_name}/1",'
            f'version="{v1.content_hash}"}}')
    assert metrics[info] == 1 and metrics['tuneforge:model_versions_loaded{model_name="bot"}'] == 1
    assert not any(k.startswith("tuneforge:model_version_info") and v1.content_hash not in k for k in metrics)

    swap_s = metrics['tuneforge:model_swap_seconds{model_name="bot"}']
    print(f"\nhot swap on {'MLflow' if follow_cfg.tracking_uri else 'the embedded registry'}: {len(answers)} requests "
          f"in {ended - started:.1f} s, {len(failures)} failed; first v2 answer {first_v2 - promoted:.2f} s after "
          f"promote, first v1 answer {first_back - rolled:.2f} s after rollback (server: last swap "
          f"{swap_s:.2f} s load+self-test); tampered v3 "
          f"refused, v1 kept serving; requests finishing on the old version at each switch: {finishing}")
