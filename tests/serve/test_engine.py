"""The native engine in-process on the tiny model: greedy equals HF generate, sampling controls, cancellation,
the watchdog, multi-LoRA in one batch."""

import time

import pytest
import torch

from tuneforge.models.generate import SamplingParams
from tuneforge.serve.engine.engine import Engine, EngineLimits
from tuneforge.serve.engine.sampler import SampleState, apply_penalties, filter_top_k_top_p, sample

PROMPTS = [[1, 5, 9, 200, 3000], [17, 4, 4, 4, 99, 1000, 2000, 3000, 4000, 5000, 6000, 7], [42], list(range(300, 340))]


def hf_greedy(model, ids, n):
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def run_all(engine, jobs, adapters=None):
    """Submit every (ids, params) at once; return the final deltas in order."""
    finals, texts = {}, {}

    def sink_for(i):
        def sink(delta):
            texts[i] = texts.get(i, "") + delta.text
            if delta.finish_reason:
                finals[i] = delta
        return sink

    for i, (ids, params) in enumerate(jobs):
        engine.submit(ids, params, sink_for(i), (adapters or {}).get(i))
    deadline = time.monotonic() + 120
    while len(finals) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(finals) == len(jobs)
    return [finals[i] for i in range(len(jobs))], [texts[i] for i in range(len(jobs))]


@pytest.fixture(scope="module")
def engine(tiny):
    # a small token budget forces chunked prefills interleaved with decodes
    eng = Engine(tiny, EngineLimits(max_num_seqs=3, max_model_len=256, max_num_batched_tokens=9)).start()
    yield eng
    eng.shutdown()


def test_greedy_equals_hf_generate_token_for_token(engine, tiny):
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    finals, _ = run_all(engine, [(ids, params) for ids in PROMPTS])  # 4 requests, 3 slots: one waits
    for ids, final in zip(PROMPTS, finals, strict=True):
        assert final.token_ids == hf_greedy(tiny.model, ids, 12)
        assert final.finish_reason == "length" and final.prompt_tokens == len(ids)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(engine):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    alone, _ = run_all(engine, [(PROMPTS[0], params)])
    crowded, _ = run_all(engine, [(PROMPTS[1], SamplingParams(max_new_tokens=10, temperature=1.0)),
                                  (PROMPTS[0], params), (PROMPTS[2], SamplingParams(max_new_tokens=5))])
    assert alone[0].token_ids == crowded[1].token_ids
    other, _ = run_all(engine, [(PROMPTS[0], SamplingParams(max_new_tokens=10, temperature=1.0, seed=8,
                                                            ignore_eos=True))])
    assert other[0].token_ids != alone[0].token_ids


def test_top_k_1_is_greedy_and_stop_strings_cut_the_text(engine, tiny):
    greedy, texts = run_all(engine, [(PROMPTS[1], SamplingParams(max_new_tokens=8, ignore_eos=True))])
    top1, _ = run_all(engine, [(PROMPTS[1], SamplingParams(max_new_tokens=8, temperature=1.5, top_k=1,
                                                           ignore_eos=True))])
    assert top1[0].token_ids == greedy[0].token_ids
    text = texts[0]
    # a stop string from the second half of the greedy text that is not whitespace
    stop = next(text[i:i + 3] for i in range(len(text) // 2, len(text) - 2) if text[i:i + 3].strip())
    finals, cut = run_all(engine, [(PROMPTS[1], SamplingParams(max_new_tokens=8, stop=[stop], ignore_eos=True))])
    assert cut[0] == text[: text.index(stop)] and finals[0].finish_reason == "stop"


def test_logprobs_are_the_models_own(engine, tiny):
    deltas = list(engine.stream(PROMPTS[0], SamplingParams(max_new_tokens=3, logprobs=2, ignore_eos=True)))
    picks = [p for d in deltas for p in d.logprobs]  # each delta carries the logprobs of the tokens it covers
    ids = PROMPTS[0] + deltas[-1].token_ids
    with torch.no_grad():
        ref = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert [p.token for p in picks] == deltas[-1].token_ids
    for k, pick in enumerate(picks):
        row = ref[len(PROMPTS[0]) - 1 + k]
        assert pick.logprob == pytest.approx(float(row[pick.token]), abs=1e-4)
        assert list(pick.top) == row.topk(2).indices.tolist()


def test_penalties_and_filters_match_hf_processors():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 50, generator=g)
    prompt, output = [1, 2, 3], [3, 4, 4, 9]
    mine = logits[0].clone()
    apply_penalties(mine, SamplingParams(repetition_penalty=1.3), prompt, output)
    ref = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + output]), logits.clone())[0]
    assert torch.allclose(mine, ref)
    mine = logits[0].clone()
    apply_penalties(mine, SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), prompt, output)
    expected = logits[0].clone()
    for token, count in {3: 1, 4: 2, 9: 1}.items():
        expected[token] -= 0.5 + 0.25 * count
    assert torch.allclose(mine, expected)
    for top_p in (0.3, 0.8):
        hf = TopPLogitsWarper(top_p)(None, logits.clone())[0]
        assert torch.equal(torch.isinf(filter_top_k_top_p(logits[0], 0, top_p)), torch.isinf(hf))
    hf = TopKLogitsWarper(5)(None, logits.clone())[0]
    assert torch.equal(torch.isinf(filter_top_k_top_p(logits[0], 5, 1.0)), torch.isinf(hf))
    draws = {sample(logits, [SampleState.create(SamplingParams(temperature=1.0, top_k=3, seed=s))],
                    [([], [])])[0].token for s in range(40)}
    assert draws <= set(logits[0].topk(3).indices.tolist()) and len(draws) > 1


def test_abort_frees_the_slot_at_once(engine):
    got = []
    rid = engine.submit(PROMPTS[3], SamplingParams(max_new_tokens=200, ignore_eos=True), got.append)
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.num_running == 1
    engine.abort(rid)
    while not (got and got[-1].finish_reason) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got[-1].finish_reason == "abort" and got[-1].completion_tokens < 200
    assert engine.num_running == 0 and engine.cache_usage() == 0.0


def test_deadline_ends_a_request_with_timeout(engine):
    got = []
    engine.submit(PROMPTS[3], SamplingParams(max_new_tokens=200, ignore_eos=True), got.append, timeout=0.05)
    deadline = time.monotonic() + 30
    while not (got and got[-1].finish_reason) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert got[-1].finish_reason == "timeout"


def test_watchdog_recovers_from_a_failed_and_a_stuck_step(tiny):
    eng = Engine(tiny, EngineLimits(max_num_seqs=2, max_model_len=128, stuck_timeout=0.5)).start()
    try:
        eng.inject_fault("raise")
        failed, _ = run_all(eng, [(PROMPTS[0], SamplingParams(max_new_tokens=4))])
        assert failed[0].finish_reason == "error" and "injected" in failed[0].error
        eng.inject_fault("hang")
        stuck, _ = run_all(eng, [(PROMPTS[0], SamplingParams(max_new_tokens=4))])
        assert stuck[0].finish_reason == "error" and "restarted" in stuck[0].error and eng.restarts == 1
        fine, _ = run_all(eng, [(PROMPTS[0], SamplingParams(max_new_tokens=4, ignore_eos=True))])
        assert fine[0].finish_reason == "length" and fine[0].token_ids == hf_greedy(tiny.model, PROMPTS[0], 4)
        assert eng.alive()
    finally:
        eng.shutdown()


def _lora(tiny, folder, seed):
    """A LoRA adapter folder for the tiny model with random non-zero weights (PEFT's own format)."""
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                                                     "down_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(folder)
    return model.eval()


def test_multi_lora_requests_share_a_batch_and_each_gets_its_adapter(tiny, tmp_path):
    a = _lora(tiny, tmp_path / "a", 1)
    b = _lora(tiny, tmp_path / "b", 2)
    from tuneforge.models import load

    own = load("tiny-random-llama")  # the engine wraps the targeted layers: not the shared fixture's model
    eng = Engine(own, EngineLimits(max_num_seqs=4, max_model_len=128)).start()
    try:
        eng.load_adapter("a", str(tmp_path / "a"))
        eng.load_adapter("b", str(tmp_path / "b"))
        params = SamplingParams(max_new_tokens=6, ignore_eos=True)
        jobs = [(PROMPTS[1], params)] * 3
        finals, _ = run_all(eng, jobs, adapters={0: "a", 1: "b"})
        assert finals[0].token_ids == hf_greedy(a, PROMPTS[1], 6)
        assert finals[1].token_ids == hf_greedy(b, PROMPTS[1], 6)
        assert finals[2].token_ids == hf_greedy(tiny.model, PROMPTS[1], 6)
        assert len({tuple(f.token_ids) for f in finals}) == 3
        eng.unload_adapter("a")
        assert eng.adapter_names() == ["b"]
        with pytest.raises(ValueError, match="not the served model|another base|does not have"):
            _bad_adapter(eng, tmp_path)
    finally:
        eng.shutdown()


def _bad_adapter(eng, tmp_path):
    """An adapter whose shapes do not fit the served model."""
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 99),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)},
              str(folder / "adapter_model.safetensors"))
    eng.load_adapter("bad", str(folder))


@pytest.mark.slow
def test_smollm2_greedy_equals_hf_generate_in_a_shared_batch():
    """The real model, fp32, three chats decoded together (chunked prefill on): HF generate's tokens exactly."""
    from tuneforge.models import load
    from tuneforge.models.generate import render_prompt

    smol = load("smollm2-135m", dtype="float32")
    chats = ["How do I reset my password?", "Write a haiku about autumn.", "What is 17 times 3?"]
    prompts = [smol.tokenizer(render_prompt(smol.tokenizer, [{"role": "user", "content": q}]),
                              add_special_tokens=False)["input_ids"] for q in chats]
    eng = Engine(smol, EngineLimits(max_num_seqs=3, max_model_len=256, max_num_batched_tokens=16)).start()
    try:
        finals, _ = run_all(eng, [(ids, SamplingParams(max_new_tokens=24, ignore_eos=True)) for ids in prompts])
    finally:
        eng.shutdown()
    for ids, final in zip(prompts, finals, strict=True):
        assert final.token_ids == hf_greedy(smol.model, ids, 24)


def test_a_loop_replaced_by_the_watchdog_keeps_its_caller_waiting(tiny):
    """`run_loop()` (the main thread in `tuneforge serve`) must not return after the watchdog replaced it:
    returning would end the server process."""
    import threading

    eng = Engine(tiny, EngineLimits(max_num_seqs=1, max_model_len=128, stuck_timeout=0.3)).start(loop_in_thread=False)
    caller = threading.Thread(target=eng.run_loop, daemon=True)
    caller.start()
    try:
        eng.inject_fault("hang")  # the step sleeps 3 × 0.3 + 1 s
        stuck, _ = run_all(eng, [(PROMPTS[0], SamplingParams(max_new_tokens=2))])
        assert stuck[0].finish_reason == "error" and eng.restarts == 1
        time.sleep(2.5)  # the hung step has returned; its loop has seen it was replaced
        assert caller.is_alive()
        fine, _ = run_all(eng, [(PROMPTS[0], SamplingParams(max_new_tokens=2, ignore_eos=True))])
        assert fine[0].finish_reason == "length"
    finally:
        eng.shutdown()
    caller.join(timeout=5)
    assert not caller.is_alive()


def test_adopt_loop_moves_a_running_loop_between_steps_without_losing_a_token(tiny):
    """A version swapped in live starts on a thread; `adopt_loop` moves it to the caller (the main thread in
    `tuneforge serve`) in the middle of generations: each still equals HF generate token for token, the
    steps now run on the adopting thread, and the old loop thread has ended."""
    import threading

    eng = Engine(tiny, EngineLimits(max_num_seqs=3, max_model_len=256, max_num_batched_tokens=9)).start()
    first = eng._thread
    steps_on: set[str] = set()
    step = eng._step

    def watched(generation):
        steps_on.add(threading.current_thread().name)
        return step(generation)

    eng._step = watched
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    results: list = []
    runner = threading.Thread(target=lambda: results.append(run_all(eng, [(ids, params) for ids in PROMPTS])))
    runner.start()
    while not steps_on:
        time.sleep(0.001)
    adopter = threading.Thread(target=eng.adopt_loop, name="adopter", daemon=True)
    adopter.start()
    try:
        runner.join(timeout=120)
        finals, _ = results[0]
        for ids, final in zip(PROMPTS, finals, strict=True):
            assert final.token_ids == hf_greedy(tiny.model, ids, 40)
        assert steps_on == {"tuneforge-engine", "adopter"}, steps_on
        assert eng._thread is adopter and not first.is_alive() and eng.restarts == 0
    finally:
        eng.shutdown()
    adopter.join(timeout=5)
    assert not adopter.is_alive()  # adopt_loop returns on shutdown
