"""`tuneforge serve --ray` on a real local Ray cluster (`ray start --head`, joined through serve.ray.address as
a second machine would), the tiny model, the OpenAI SDK through Ray's proxy: two replicas answer, load above
the autoscaling target brings up a third, and a replica SIGKILLed mid-load loses no request that had not
started streaming. One cluster for the module; the loads are bounded by request counts and deadlines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tests.servers import until as _until

from tuneforge.core.net import free_port, wait_ready

ray = pytest.importorskip("ray")
from openai import OpenAI  # noqa: E402

BIN = Path(sys.executable).parent
APP = "tuneforge"
LONG = {"max_tokens": 400, "extra_body": {"ignore_eos": True}}  # a request that lasts a while on the tiny model


@pytest.fixture(scope="module")
def cluster():
    """A Ray head (4 logical CPUs) and `tuneforge serve tiny-random-llama --ray` joined to it; yields the base URL."""
    temp = tempfile.mkdtemp(prefix="tfray-")  # short: Ray's socket paths must fit in 107 bytes
    gcs = free_port()
    # Loopback only: no token authentication (Ray 2.5x turns it on and keeps a token in ~/.ray, which a
    # cluster started by an earlier local `ray.init` would then disagree with)
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # for this process's ray.init too
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=4",
                             "--include-dashboard=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                             f"--temp-dir={temp}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    port = free_port()
    server = None
    try:
        address = f"127.0.0.1:{gcs}"
        _until(lambda: head.poll() is not None or _listening(gcs), 60, "ray head")
        assert head.poll() is None, (Path(temp) / "head.log").read_text()
        settings = {"serve.ray.address": address, "serve.max_num_seqs": 2, "serve.max_model_len": 512,
                    "serve.ray.min_replicas": 2, "serve.ray.max_replicas": 3, "serve.ray.num_cpus": 1,
                    "serve.ray.upscale_delay_s": 0, "serve.ray.metrics_interval_s": 0.5,
                    "serve.ray.look_back_period_s": 2, "serve.drain_timeout": 5}
        args = [str(BIN / "tuneforge"), "serve", "tiny-random-llama", "--ray", "--port", str(port),
                "--served-model-name", "tiny"]
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        server = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}/v1/models", server, 240)
        except Exception as exc:
            log.flush()
            pytest.fail(f"{exc}\n{(Path(temp) / 'head.log').read_text()[-4000:]}")
        ray.init(address=address, namespace="tuneforge-test", log_to_driver=False)
        # /v1/models answers once one replica is up; the second may still be loading on a busy machine
        try:
            _until(lambda: _running() >= 2, 240, "2 running replicas", every=0.5)
        except pytest.fail.Exception as exc:
            log.flush()
            pytest.fail(f"{exc} (states {_states()})\n{_serve_logs(temp)}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # deletes the app, then disconnects
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        ray.shutdown()
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _states(app: str = APP) -> dict[str, int]:
    from tuneforge.serve.ray_serve import replica_counts

    return replica_counts(app)


def _serve_logs(temp: str, chars: int = 3000) -> str:
    """The tail of each Ray Serve log (controller, replicas) and of the head's, for a failure message."""
    logs = sorted(Path(temp).glob("session_latest/logs/serve/*.log")) + [Path(temp) / "head.log"]
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs if p.is_file())


def _running(app: str = APP) -> int:
    return _states(app).get("RUNNING", 0)


def _replicas() -> dict[str, int]:
    """Live replica id → process id, from Ray's actor table."""
    from ray._private.state import actors

    out = {}
    for info in actors().values():
        name = info["Name"]
        if info["State"] == "ALIVE" and name.startswith(f"SERVE_REPLICA::{APP}#engine#"):
            out[name.rsplit("#", 1)[1]] = info["Pid"]
    return out


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)  # no SDK retry hides a lost request


def test_two_replicas_answer_through_the_openai_api(cluster):
    assert _running() == 2
    client, seen = _client(cluster), set()
    for i in range(12):
        raw = client.chat.completions.with_raw_response.create(
            model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=8, seed=i)
        answer = raw.parse()
        assert answer.model == "tiny" and answer.choices[0].message.content
        assert answer.usage.completion_tokens > 0
        seen.add(raw.headers["x-tuneforge-replica"])
        if len(seen) == 2:
            break
    assert seen == set(_replicas()), "both replicas answer"


def test_load_above_the_target_brings_up_a_replica(cluster):
    """8 clients of long requests: 8 ongoing over 2 replicas, against a target of 1 each (half of 2 slots)."""
    assert _running() == 2
    client, results, stop = _client(cluster), [], threading.Event()

    def load() -> None:
        for _ in range(30):  # bounded: at most 30 requests per client
            if stop.is_set():
                return
            answer = client.completions.create(model="tiny", prompt="count:", **LONG)
            results.append(answer.usage.completion_tokens)

    clients = [threading.Thread(target=load) for _ in range(8)]
    for c in clients:
        c.start()
    try:
        _until(lambda: _running() == 3, 150, "a third replica RUNNING under load")
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert results and all(n == LONG["max_tokens"] for n in results)
    assert len(_replicas()) == 3


def test_a_killed_replica_loses_no_request_that_had_not_started_streaming(cluster):
    """All slots busy with streams (3 replicas × 2), two more queued in Ray's router; one replica's process
    is SIGKILLed; then four more requests. Every request that had not received a token at the kill finishes."""
    replicas = _until(lambda: _replicas() if len(_replicas()) == 3 else None, 120, "3 live replicas")
    client = _client(cluster)
    started, results, lock = threading.Semaphore(0), {}, threading.Lock()
    killed_at: list[float] = []

    def stream(key: str) -> None:
        first, tokens, replica = None, 0, None
        try:
            raw = client.completions.with_raw_response.create(model="tiny", prompt="count:", stream=True, **LONG)
            replica = raw.headers.get("x-tuneforge-replica")
            finish = None
            for chunk in raw.parse():
                if first is None:
                    first = time.monotonic()
                    started.release()
                tokens += 1
                finish = chunk.choices[0].finish_reason or finish
            outcome = "ok" if finish == "length" else f"finish {finish}"
        except Exception as exc:  # a stream cut by the kill: recorded, judged below
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            results[key] = (first, outcome, replica)

    before = [threading.Thread(target=stream, args=(f"before-{i}",)) for i in range(8)]
    for t in before:
        t.start()
    for _ in range(6):  # six streams under way: every slot is busy, the other two wait in the router
        assert started.acquire(timeout=120), "six streams started"
    victim = sorted(replicas)[0]
    os.kill(replicas[victim], signal.SIGKILL)
    killed_at.append(time.monotonic())
    after = [threading.Thread(target=stream, args=(f"after-{i}",)) for i in range(4)]
    for t in after:
        t.start()
    for t in before + after:
        t.join(timeout=300)
    assert len(results) == 12
    not_started = {k: v for k, v in results.items() if v[0] is None or v[0] > killed_at[0]}
    lost = {k: v[1] for k, v in not_started.items() if v[1] != "ok"}
    print(f"killed replica {victim}; outcomes: {sorted((k, v[1][:60]) for k, v in results.items())}")
    assert len(not_started) >= 6 and not lost, lost
    assert all(v[2] != victim for v in not_started.values())  # they were answered by the others
    # Ray's controller replaces the dead replica
    _until(lambda: len(_replicas()) == 3 and victim not in _replicas(), 120, "the replica replaced")
