"""backend: llamacpp — the shipped SmolLM2 GGUF run by llama.cpp under tuneforge's engine and API."""

import pytest

pytest.importorskip("llama_cpp", reason="backend llamacpp needs llama-cpp-python (in the dev extra)")

from tuneforge.core.config import ServeConfig  # noqa: E402
from tuneforge.models.generate import SamplingParams, render_prompt  # noqa: E402

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "How do I reset my password?"}]


def _engine(prefix_cache: bool):
    from tuneforge.serve.engine.engine import Engine, EngineLimits
    from tuneforge.serve.engine.llamacpp import llamacpp_engine_parts

    loaded, runner = llamacpp_engine_parts("smollm2-135m", 1024, prefix_cache)
    return Engine(loaded, EngineLimits(max_num_seqs=1, max_model_len=1024), runner=runner).start()


@pytest.fixture(scope="module")
def engine():
    """Every request from a cold cache: bit-reproducible, what the greedy and seed tests need."""
    eng = _engine(prefix_cache=False)
    yield eng
    eng.shutdown()


@pytest.fixture
def cached_engine():
    eng = _engine(prefix_cache=True)
    yield eng
    eng.shutdown()


def llama_greedy(gguf: str, ids: list[int], n: int) -> list[int]:
    """`n` greedy tokens from a fresh llama.cpp context of its own (llama-cpp-python's generate)."""
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=1024, logits_all=False, verbose=False)
    tokens = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        tokens.append(token)
        if len(tokens) == n:
            break
    return tokens


def test_greedy_equals_llama_cpp_own_greedy(engine):
    ids = engine.tokenizer(render_prompt(engine.tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    deltas = list(engine.stream(ids, SamplingParams(max_new_tokens=24, ignore_eos=True)))
    ours = deltas[-1].token_ids
    assert ours == llama_greedy(engine.loaded.info["gguf"], ids, 24)
    assert "".join(d.text for d in deltas) == engine.tokenizer.decode(ours, skip_special_tokens=True)


def test_seeded_sampling_and_stop_controls(engine):
    ids = engine.tokenizer(render_prompt(engine.tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=3, ignore_eos=True,
                            repetition_penalty=1.2)
    first = list(engine.stream(ids, params))[-1].token_ids
    again = list(engine.stream(ids, params))[-1].token_ids
    assert first == again and len(first) == 16
    assert engine.runner.reused_tokens == 0  # prefix_cache off: every prompt evaluated whole
    short = [{"role": "user", "content": "Hi!"}]
    ids = engine.tokenizer(render_prompt(engine.tokenizer, short), add_special_tokens=False)["input_ids"]
    natural = list(engine.stream(ids, SamplingParams(max_new_tokens=200)))[-1]
    assert natural.finish_reason == "stop" and natural.completion_tokens < 200  # end-of-turn token, by id


def test_served_through_the_api_with_the_openai_sdk(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    from tuneforge.pipeline import start_server, stop_server

    # prefix_cache off: the same request twice must give the same bits (a reused prefix need not, see config)
    process, url = start_server("smollm2-135m", ServeConfig(served_model_name="edge", backend="llamacpp",
                                                            max_model_len=1024, prefix_cache=False), tmp_path)
    try:
        client = OpenAI(base_url=url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="edge", messages=QUESTION, max_tokens=12)
        stream = client.chat.completions.create(model="edge", messages=QUESTION, max_tokens=12, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == reply.choices[0].message.content
        with ThreadPoolExecutor(4) as pool:  # one slot: the others wait their turn, none fails
            replies = list(pool.map(lambda _: client.chat.completions.create(model="edge", messages=QUESTION,
                                                                             max_tokens=8), range(4)))
        assert all(r.choices[0].message.content for r in replies)
        import httpx

        bad = httpx.post(f"{url}/completions", json={"model": "edge", "prompt": "hi", "echo": True, "logprobs": 1,
                                                     "max_tokens": 0})
        assert bad.status_code == 400 and "backend native" in bad.json()["error"]["message"]
    finally:
        stop_server(process)


def test_a_new_sequence_reuses_the_cached_prefix_and_answers_as_from_scratch(cached_engine):
    """Two questions share the chat template's system prompt: the second evaluates only what differs, and
    its greedy answer is token for token the one a fresh llama.cpp context gives (llama-server's prompt cache)."""
    engine = cached_engine
    runner = engine.runner
    assert runner.reuses_prefix
    other = [{"role": "user", "content": "Which countries do you deliver to?"}]
    first = engine.tokenizer(render_prompt(engine.tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    second = engine.tokenizer(render_prompt(engine.tokenizer, other), add_special_tokens=False)["input_ids"]
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 10  # the system prompt
    list(engine.stream(first, SamplingParams(max_new_tokens=4)))
    before = runner.reused_tokens
    ours = list(engine.stream(second, SamplingParams(max_new_tokens=16, ignore_eos=True)))[-1].token_ids
    assert runner.reused_tokens - before == shared
    again = list(engine.stream(second, SamplingParams(max_new_tokens=16, ignore_eos=True)))[-1].token_ids
    assert again == ours  # the whole prompt cached but its last token: evaluated again, same answer
    assert ours == llama_greedy(engine.loaded.info["gguf"], second, 16)
