import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.core.config import ServeConfig
from tuneforge.serve.api.app import create_app
from tuneforge.serve.engine.engine import Engine, EngineLimits

MESSAGES = [{"role": "user", "content": "What color is the Quokka lamp?"}]


def _app(tiny, **serve):
    engine = Engine(tiny, EngineLimits(max_num_seqs=4, max_model_len=512), model_name="tiny").start()
    return create_app(engine, "tiny", ServeConfig(max_tokens=64, **serve))


@pytest.fixture(scope="module")
def client(tiny):
    return TestClient(_app(tiny))


def _body(**kw):
    return {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, **kw}


def test_health_and_models(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["in_flight"] == 0
    data = client.get("/v1/models").json()
    assert [m["id"] for m in data["data"]] == ["tiny"]
    assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]


def test_completion_shape_and_usage(client, tiny):
    out = client.post("/v1/chat/completions", json=_body()).json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    prompt = tiny.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert out["usage"]["prompt_tokens"] == len(tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= out["usage"]["completion_tokens"] <= 8
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]


def test_stream_matches_non_stream(client):
    plain = client.post("/v1/chat/completions", json=_body()).json()
    with client.stream("POST", "/v1/chat/completions",
                       json=_body(stream=True, stream_options={"include_usage": True})) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [plain["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_seeded_sampling_is_reproducible(client):
    a = client.post("/v1/chat/completions", json=_body(temperature=1.0, seed=5)).json()
    b = client.post("/v1/chat/completions", json=_body(temperature=1.0, seed=5)).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    # and the temperature is honoured: other seeds, or greedy, answer otherwise
    others = {client.post("/v1/chat/completions", json=_body(temperature=1.0, seed=s)).json()["choices"][0]
              ["message"]["content"] for s in (6, 7, 8)}
    greedy = client.post("/v1/chat/completions", json=_body()).json()["choices"][0]["message"]["content"]
    assert others | {greedy} != {a["choices"][0]["message"]["content"]}
    assert len(others) > 1


@pytest.mark.parametrize("body, status, param, text", [
    (_body(model="gpt-4"), 404, "model", "does not exist"),
    (_body(temperature=3), 400, "temperature", "less than or equal to 2"),
    (_body(max_tokens=1000), 400, "max_tokens", "limit of 64"),
    (_body(n=17), 400, "n", "less than or equal to 16"),
    (_body(messages=[]), 400, "messages", "at least 1"),
    (_body(logprobs=True, top_logprobs=21), 400, "top_logprobs", "less than or equal to 20"),
    (_body(max_tokens=60, messages=[{"role": "user", "content": "word " * 470}]), 400, "max_tokens",
     "context is 512"),
    ({"model": "tiny"}, 400, "messages", "Field required"),
])
def test_errors_use_openai_shape(client, body, status, param, text):
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["param"] == param and text in error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_openai_sdk_against_real_server():
    """The official SDK, unmodified, against `tuneforge serve` running as a real process."""
    from openai import NotFoundError, OpenAI

    from tuneforge.pipeline import start_server, stop_server

    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="tiny"))
    try:
        client = OpenAI(base_url=url, api_key="x")
        assert [m.id for m in client.models.list().data] == ["tiny"]
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6)
        assert reply.usage.completion_tokens >= 1
        stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == reply.choices[0].message.content
        with pytest.raises(NotFoundError):
            client.chat.completions.create(model="nope", messages=MESSAGES)
    finally:
        stop_server(process)
    assert process.returncode is not None


def test_ready_and_prometheus_metrics(tiny):
    """/ready runs a self-test; /metrics counts what the requests did, with vLLM-style names."""
    client = TestClient(_app(tiny))
    assert client.get("/ready").json() == {"status": "ready", "model": "tiny"}
    out = client.post("/v1/chat/completions", json=_body(max_tokens=3)).json()
    with client.stream("POST", "/v1/chat/completions", json=_body(max_tokens=3, stream=True)) as resp:
        list(resp.iter_lines())
    text = client.get("/metrics").text
    label = 'adapter="",model_name="tiny"'
    assert f'tuneforge:generation_tokens_total{{{label}}} {2 * out["usage"]["completion_tokens"]}.0' in text
    assert f'tuneforge:prompt_tokens_total{{{label}}} {2 * out["usage"]["prompt_tokens"]}.0' in text
    reason = out["choices"][0]["finish_reason"]
    assert f'tuneforge:request_success_total{{adapter="",finished_reason="{reason}",model_name="tiny"}} 2.0' in text
    assert f'tuneforge:time_to_first_token_seconds_count{{{label}}} 2.0' in text
    assert f'tuneforge:e2e_request_latency_seconds_count{{{label}}} 2.0' in text
    assert 'tuneforge:num_requests_running{model_name="tiny"} 0.0' in text
    assert 'tuneforge:num_requests_waiting{model_name="tiny"} 0.0' in text


def test_completions_echo_logprobs_match_a_direct_forward(client, tiny):
    import torch

    prompt = "The capital of France is Paris"
    out = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 0, "echo": True,
                                               "logprobs": 2}).json()
    choice = out["choices"][0]
    ids = tiny.tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    lp = choice["logprobs"]
    assert choice["text"] == prompt and lp["tokens"] == [tiny.tokenizer.decode([i]) for i in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for pos in range(1, len(ids)):
        assert lp["token_logprobs"][pos] == pytest.approx(float(expected[pos - 1, ids[pos]]), abs=1e-4)
        assert len(lp["top_logprobs"][pos]) == 2
    assert lp["text_offset"][1] == len(lp["tokens"][0])
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}


def test_completions_greedy_matches_hf_generate(client, tiny):
    import torch

    prompt = "Once upon a time"
    out = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 6}).json()
    ids = tiny.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                  pad_token_id=tiny.tokenizer.pad_token_id)
    new = ref[0, ids.shape[1]:].tolist()
    if tiny.tokenizer.eos_token_id in new:
        new = new[: new.index(tiny.tokenizer.eos_token_id) + 1]
    assert out["choices"][0]["text"] == tiny.tokenizer.decode(new, skip_special_tokens=True)
    assert out["usage"]["completion_tokens"] == len(new)
    with client.stream("POST", "/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 6,
                                                        "stream": True}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == out["choices"][0]["text"]
    bad = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "stream": True, "echo": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "echo"


def test_lm_eval_local_completions_against_real_server(tmp_path):
    """lm_eval's `local-completions` client on `tuneforge serve` scores like lm_eval on the in-process model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tuneforge.eval.harness import run_harness, shipped_task_dir
    from tuneforge.models import load
    from tuneforge.models.loader import smollm2_tokenizer_dir
    from tuneforge.pipeline import start_server, stop_server

    process, url = start_server("tiny-random-llama", ServeConfig(served_model_name="tiny"))
    try:
        manager = TaskManager(include_path=[str(shipped_task_dir(tmp_path))])
        served = simple_evaluate(
            model="local-completions", tasks=["tuneforge_general_mc"], task_manager=manager,
            model_args={"model": "tiny", "base_url": f"{url}/completions", "tokenizer": str(smollm2_tokenizer_dir()),
                        "num_concurrent": 1, "max_retries": 1, "tokenized_requests": True})
    finally:
        stop_server(process)
    local = run_harness(load("tiny-random-llama"), ["tuneforge_general_mc"], [])
    assert served["results"]["tuneforge_general_mc"]["acc,none"] == local["tuneforge_general_mc"]["acc"]
    assert served["results"]["tuneforge_general_mc"]["sample_len"] == 24


def test_overload_is_refused_with_429_before_headers():
    """One request generating (one slot), one waiting: the rest are refused with 429 + Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tuneforge.pipeline import start_server, stop_server

    cfg = ServeConfig(served_model_name="tiny", max_waiting=1, max_num_seqs=1, max_tokens=2000)
    process, url = start_server("tiny-random-llama", cfg)
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=_body(max_tokens=2000, ignore_eos=True, stream=True),
                          timeout=120) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data: "))  # it holds the engine now
            with ThreadPoolExecutor(4) as pool:
                burst = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions", json=_body(max_tokens=8),
                                                           timeout=120), range(4)))
            assert [line for line in lines if line][-1] == "data: [DONE]"  # the running stream was undisturbed
        assert sorted(r.status_code for r in burst) == [200, 429, 429, 429]  # one waited its turn
        refused = next(r for r in burst if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        stream_refused = None
        with httpx.stream("POST", f"{url}/chat/completions", json=_body(max_tokens=2000, ignore_eos=True, stream=True),
                          timeout=120) as again:
            held = again.iter_lines()  # keep the iterator: dropping it closes the stream (a disconnect)
            next(line for line in held if line.startswith("data: "))
            with ThreadPoolExecutor(2) as pool:
                pair = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions",
                                                          json=_body(max_tokens=8, stream=True), timeout=120),
                                     range(2)))
            stream_refused = next(r for r in pair if r.status_code == 429)
        # refused before any SSE header: a JSON error, not an event stream
        assert stream_refused.headers["content-type"].startswith("application/json")
        # once the burst is over, capacity is back and nothing leaked
        assert httpx.post(f"{url}/chat/completions", json=_body(max_tokens=4), timeout=60).status_code == 200
        metrics = httpx.get(url.replace("/v1", "/metrics")).text
        assert 'tuneforge:num_requests_waiting{model_name="tiny"} 0.0' in metrics
        assert 'tuneforge:num_requests_running{model_name="tiny"} 0.0' in metrics
    finally:
        stop_server(process)


def test_api_key_guards_v1_and_admin_calls_are_off_by_default(tiny, monkeypatch):
    """serve.api_key: /v1/* needs it (401 without, 401 with a wrong one), probes stay open; the runtime-LoRA
    calls are not even routed unless serve.allow_runtime_lora is set, which needs an admin key and roots."""
    monkeypatch.delenv("TUNEFORGE_ADMIN_KEY", raising=False)
    client = TestClient(_app(tiny, api_key="s3cret"))
    no_key = client.post("/v1/chat/completions", json=_body())
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"
    wrong = client.post("/v1/chat/completions", json=_body(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    ok = client.post("/v1/chat/completions", json=_body(), headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
    load = {"lora_name": "x", "lora_path": "/etc"}
    key = {"Authorization": "Bearer s3cret"}
    assert client.post("/v1/load_lora_adapter", json=load, headers=key).status_code == 404
    assert "401" in client.get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]["responses"]
    with pytest.raises(ValueError, match="admin_key"):
        ServeConfig(allow_runtime_lora=True, lora_roots=["/tmp"])
    with pytest.raises(ValueError, match="lora_roots"):
        ServeConfig(allow_runtime_lora=True, admin_key="a")
    assert "s3cret" not in json.dumps(ServeConfig(api_key="s3cret").model_dump(mode="json"))


def test_model_version_is_in_the_card_and_every_response(tiny):
    engine = Engine(tiny, EngineLimits(max_num_seqs=2, max_model_len=128), model_name="tiny").start()
    client = TestClient(create_app(engine, "tiny", ServeConfig(max_tokens=8), version="sha256-abc"))
    models = client.get("/v1/models")
    assert models.json()["data"][0]["version"] == "sha256-abc"
    assert models.headers["x-tuneforge-model-version"] == "sha256-abc"
    with client.stream("POST", "/v1/chat/completions", json=_body(stream=True)) as reply:
        assert reply.headers["x-tuneforge-model-version"] == "sha256-abc"
