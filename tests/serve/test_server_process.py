"""`tuneforge serve` as a real process on a free port, driven by real clients (openai SDK, httpx)."""

import asyncio
import json
import signal
import time

import httpx
import pytest
from tests.servers import metric

from tuneforge.core.config import ServeConfig
from tuneforge.pipeline import start_server, stop_server

MESSAGES = [{"role": "user", "content": "What color is the Quokka lamp?"}]


def _body(**kw):
    return {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, **kw}


def _until(check, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server(request, tmp_path):
    cfg = ServeConfig(served_model_name="tiny", **getattr(request, "param", {}))
    process, url = start_server("tiny-random-llama", cfg, tmp_path)
    yield process, url
    stop_server(process)


@pytest.mark.parametrize("server", [{"max_num_seqs": 16, "max_waiting": 100}], indirect=True)
def test_100_concurrent_streams_all_succeed(server):
    from openai import AsyncOpenAI

    _, url = server

    async def one(client, i):
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Question {i}?"}], max_tokens=16, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        return text, usage

    async def main():
        async with AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=300) as client:
            return await asyncio.gather(*(one(client, i) for i in range(100)))

    results = asyncio.run(main())
    assert len(results) == 100 and all(usage.completion_tokens == 16 for _, usage in results)
    assert metric(url, 'tuneforge:request_success_total{adapter="",finished_reason="length"') == 100
    assert metric(url, "tuneforge:num_requests_running") == 0


@pytest.mark.parametrize("server", [{"max_num_seqs": 4, "max_waiting": 60, "max_tokens": 2000}], indirect=True)
def test_client_disconnects_free_capacity(server):
    """50 clients (half streaming) give up once the engine runs some of them: aborted, their slots freed."""
    _, url = server

    async def impatient(i, engine_busy):
        body = _body(max_tokens=2000, ignore_eos=True, stream=bool(i % 2))
        async with httpx.AsyncClient(timeout=60) as client:

            async def request():
                if body["stream"]:
                    async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
                        async for _ in resp.aiter_lines():
                            pass
                else:
                    await client.post(f"{url}/chat/completions", json=body)

            task = asyncio.create_task(request())
            await asyncio.wait([task, asyncio.create_task(engine_busy.wait())], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return "finished"
            task.cancel()  # the client hangs up mid-request, as a closed browser tab does
            return "gave up"

    async def main():
        engine_busy = asyncio.Event()  # set once a request runs: a fixed delay raced the engine on a loaded machine

        async def watch():
            while await asyncio.to_thread(metric, url, "tuneforge:num_requests_running") < 1:
                await asyncio.sleep(0.01)
            engine_busy.set()

        watcher = asyncio.create_task(watch())
        outcomes = await asyncio.gather(*(impatient(i, engine_busy) for i in range(50)))
        await watcher
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes.count("gave up") == 50
    fresh = httpx.post(f"{url}/chat/completions", json=_body(max_tokens=4, ignore_eos=True), timeout=120)
    assert fresh.status_code == 200 and fresh.json()["usage"]["completion_tokens"] == 4
    assert _until(lambda: metric(url, "tuneforge:num_requests_running") == 0)
    assert _until(lambda: httpx.get(url.replace("/v1", "/health")).json()["in_flight"] == 0)
    # those that reached the engine were aborted (the others were dropped before submission): none ran on
    assert metric(url, 'tuneforge:request_success_total{adapter="",finished_reason="abort"') >= 1
    assert metric(url, 'tuneforge:request_success_total{adapter="",finished_reason="length"') == 1  # the fresh one


def test_sigterm_drains_in_flight_and_refuses_new_requests(tmp_path):
    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="tiny", max_tokens=400,
                                                                 drain_timeout=60), tmp_path)
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=_body(max_tokens=400, ignore_eos=True,
                                                                         stream=True), timeout=120) as running:
            lines = running.iter_lines()
            next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
            process.send_signal(signal.SIGTERM)
            assert _until(lambda: httpx.get(url.replace("/v1", "/ready")).status_code == 503, 10)
            refused = httpx.post(f"{url}/chat/completions", json=_body(), timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "server_draining"
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        finishes = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in rest[:-1]]
        assert finishes[-1] == "length"  # the in-flight request ran to its end
        assert process.wait(timeout=60) == 0
    finally:
        stop_server(process)


@pytest.mark.parametrize("server", [{"debug_faults": True, "stuck_timeout": 1.0, "max_tokens": 1500}],
                         indirect=True)
def test_watchdog_restarts_a_stuck_engine_and_fails_its_requests_cleanly(server):
    _, url = server
    base = url.replace("/v1", "")
    with httpx.stream("POST", f"{url}/chat/completions", json=_body(max_tokens=1500, ignore_eos=True, stream=True),
                      timeout=120) as victim:
        lines = victim.iter_lines()
        next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
        assert httpx.post(f"{base}/admin/fault", params={"kind": "hang"}).status_code == 200
        rest = [line for line in lines if line.startswith("data: ")]
    error = json.loads(rest[-2][6:])["error"]
    assert rest[-1] == "data: [DONE]" and error["code"] == "engine_error" and "restarted" in error["message"]
    assert _until(lambda: httpx.get(f"{base}/health").status_code == 200, 30)
    assert httpx.get(f"{base}/health").json()["engine_restarts"] == 1
    httpx.post(f"{base}/admin/fault", params={"kind": "raise"})
    failed = httpx.post(f"{url}/chat/completions", json=_body(), timeout=60)
    assert failed.status_code == 500 and "injected" in failed.json()["error"]["message"]
    again = httpx.post(f"{url}/chat/completions", json=_body(max_tokens=3, ignore_eos=True), timeout=60)
    assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(f"{base}/ready").status_code == 200


def test_multi_lora_over_http(tiny, tmp_path):
    """Adapters from config and loaded at run time; concurrent requests each get their adapter's answer. The API
    needs serve.api_key, admin calls serve.admin_key, and adapters load only from serve.lora_roots."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.serve.test_engine import PROMPTS, _lora, hf_greedy

    models = {"a": _lora(tiny, tmp_path / "a", 1), "b": _lora(tiny, tmp_path / "b", 2), "tiny": tiny.model}
    cfg = ServeConfig(served_model_name="tiny", adapters={"a": str(tmp_path / "a")}, max_num_seqs=8, dtype="float32",
                      api_key="user-key", admin_key="admin-key", allow_runtime_lora=True, lora_roots=[str(tmp_path)])
    user, admin = {"Authorization": "Bearer user-key"}, {"Authorization": "Bearer admin-key"}
    process, url = start_server("tiny-random-llama", cfg, tmp_path)
    try:
        assert "admin-key" not in (tmp_path / "serve.yaml").read_text()  # keys reach the child by environment
        b = {"lora_name": "b", "lora_path": str(tmp_path / "b")}
        assert httpx.post(f"{url}/load_lora_adapter", json=b).status_code == 401
        assert httpx.post(f"{url}/load_lora_adapter", json=b, headers=user).status_code == 401
        outside = httpx.post(f"{url}/load_lora_adapter", headers=admin, json={"lora_name": "c", "lora_path": "/etc"})
        assert outside.status_code == 403 and outside.json()["error"]["param"] == "lora_path"
        loaded = httpx.post(f"{url}/load_lora_adapter", json=b, headers=admin)
        assert loaded.status_code == 200
        assert httpx.get(f"{url}/models").status_code == 401
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert [m["id"] for m in httpx.get(f"{url}/models", headers=user).json()["data"]] == ["tiny", "a", "b"]
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # probes need no key

        def ask(model):
            body = {"model": model, "prompt": PROMPTS[1], "max_tokens": 6, "ignore_eos": True}
            return httpx.post(f"{url}/completions", json=body, headers=user, timeout=60).json()["choices"][0]["text"]

        names = ["a", "b", "tiny"] * 4
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, names))
        for name, answer in zip(names, answers, strict=True):
            assert answer == tiny.tokenizer.decode(hf_greedy(models[name], PROMPTS[1], 6), skip_special_tokens=True)
        gone = httpx.post(f"{url}/unload_lora_adapter", json={"lora_name": "b"}, headers=admin)
        assert gone.status_code == 200
        missing = httpx.post(f"{url}/completions", json={"model": "b", "prompt": "x"}, headers=user)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        nope = {"lora_name": "c", "lora_path": str(tmp_path / "nope")}
        bad = httpx.post(f"{url}/load_lora_adapter", json=nope, headers=admin)
        assert bad.status_code == 400 and "no such adapter folder" in bad.json()["error"]["message"]
    finally:
        stop_server(process)
