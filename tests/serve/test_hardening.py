"""`tuneforge serve` as a real process under hostile input: huge bodies, huge prompts, the fuzzer."""

import statistics
import threading
import time

import httpx
import pytest

from tuneforge.core.config import ServeConfig
from tuneforge.pipeline import start_server, stop_server


@pytest.fixture(scope="module")
def server():
    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="tiny", max_tokens=64,
                                                                 max_body_bytes=16 * 2**20))
    yield url.removesuffix("/v1")
    stop_server(process)


def _chat(content: str) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4}


def _health_seconds(root: str) -> float:
    start = time.perf_counter()
    assert httpx.get(f"{root}/health", timeout=60).status_code == 200
    return time.perf_counter() - start


def test_a_body_over_the_limit_is_refused_with_413(tmp_path):
    from fastapi.testclient import TestClient

    from tuneforge.models import load
    from tuneforge.serve.api.app import create_app
    from tuneforge.serve.engine.engine import Engine, EngineLimits

    engine = Engine(load("tiny-random-llama"), EngineLimits(max_num_seqs=2, max_model_len=128)).start()
    try:
        client = TestClient(create_app(engine, "tiny", ServeConfig(max_body_bytes=4096)))
        resp = client.post("/v1/chat/completions", json=_chat("a" * 5000))
        assert resp.status_code == 413 and "max_body_bytes" in resp.json()["error"]["message"]

        def chunked():  # no Content-Length: counted as it arrives
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"b" * 1000
            yield b'"}]}'

        resp = client.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert resp.status_code == 413
        small = client.post("/v1/chat/completions", json=_chat("hi"))
        assert small.status_code == 200
    finally:
        engine.shutdown()


def test_a_10_mb_prompt_is_refused_without_stalling_the_server(server):
    """The reproduction: a 10 MB chat request is refused (400 context_length_exceeded) and, while it and
    prompts just under the early bound are being refused, /health answers as fast as before (relative to a
    baseline taken here: no absolute wall-clock threshold)."""
    baseline = statistics.median(_health_seconds(server) for _ in range(5))
    results: dict[str, httpx.Response] = {}

    def post(name: str, content: str) -> None:
        results[name] = httpx.post(f"{server}/v1/chat/completions", json=_chat(content), timeout=300)

    senders = [threading.Thread(target=post, args=("huge", "word " * 2_000_000))]  # 10 MB
    senders += [threading.Thread(target=post, args=(f"long{i}", "word " * 60_000)) for i in range(3)]  # tokenized
    for sender in senders:
        sender.start()
    during = []
    while any(s.is_alive() for s in senders):
        during.append(_health_seconds(server))
    for sender in senders:
        sender.join()
    for name, resp in results.items():
        assert resp.status_code == 400, (name, resp.text)
        assert resp.json()["error"]["code"] == "context_length_exceeded"
    assert "bytes" in results["huge"].json()["error"]["message"]  # refused by its size, before tokenizing
    assert during, "no /health call overlapped the large requests"
    assert max(during) < max(20 * baseline, baseline + 0.5), (baseline, during)


def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    """schemathesis over /openapi.json (valid and invalid cases, fixed seed): no 5xx, every status code and
    body as declared, every 4xx names its parameter or limit."""
    from tuneforge.bench.fuzz import run_fuzz

    report = run_fuzz(f"{server}/v1", "tiny", cases=300, seed=0)
    assert report.cases >= 250
    assert report.server_errors == 0, report.render()
    assert report.failures == [], report.render()
    # the pinning hook lets the fuzzer reach the engine; how many cases are 200s varies from run to run (29 once
    # of 300, failing a bound of 30): the seed fixes the strategies, not how hypothesis spends its budget
    assert report.statuses[200] >= 10


def test_an_unsupported_method_is_a_405_that_names_the_allowed_ones(server):
    resp = httpx.request("TRACE", f"{server}/v1/chat/completions", timeout=30)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json()["error"]["message"]
