"""The scheduler alone, with a fake model runner: plans are plain data, checked step by step."""

import random

import pytest

from tuneforge.serve.engine.scheduler import Scheduler, Sequence, Status

EOS = 0


def fake_runner(plan):
    """'Samples' position + 1 of the last token of each sampling chunk (deterministic, model-free)."""
    return {c.seq.request_id: 1000 + c.start + len(c.tokens) for c in plan.chunks if c.samples}


def seq(rid, n_prompt, max_tokens, stop=frozenset()):
    return Sequence(rid, list(range(1, n_prompt + 1)), max_tokens, stop_token_ids=stop)


def run_to_end(scheduler, steps=1000):
    plans = []
    for _ in range(steps):
        if not scheduler.has_work():
            return plans
        plan = scheduler.schedule()
        plans.append(plan)
        scheduler.update(plan, fake_runner(plan))
    raise AssertionError("did not finish")


def test_requests_join_and_leave_the_running_batch_every_step():
    s = Scheduler(num_slots=4, max_model_len=64, max_num_batched_tokens=64)
    a, b = seq("a", 3, 2), seq("b", 3, 5)
    s.add(a)
    s.add(b)
    first = s.schedule()
    assert [c.seq.request_id for c in first.prefills] == ["a", "b"] and not first.decodes
    s.update(first, fake_runner(first))
    c = seq("c", 4, 3)
    s.add(c)  # joins while a and b decode
    second = s.schedule()
    assert [x.seq.request_id for x in second.decodes] == ["a", "b"]
    assert [x.seq.request_id for x in second.prefills] == ["c"]
    s.update(second, fake_runner(second))
    assert a.status is Status.FINISHED and a.finish_reason == "length" and a.slot is None  # left after 2 tokens
    third = s.schedule()
    assert [x.seq.request_id for x in third.decodes] == ["b", "c"]


def test_long_prompt_is_prefilled_in_chunks_between_decodes():
    s = Scheduler(num_slots=4, max_model_len=128, max_num_batched_tokens=8)
    short = seq("short", 2, 10)
    s.add(short)
    s.update(first := s.schedule(), fake_runner(first))
    long = seq("long", 20, 2)
    s.add(long)
    plans = []
    while long.num_computed < 20:
        plan = s.schedule()
        plans.append(plan)
        assert plan.num_tokens <= 8  # the budget holds every step
        assert [c.seq.request_id for c in plan.decodes] == ["short"]  # the running stream never stalls
        s.update(plan, fake_runner(plan))
    chunks = [(c.start, len(c.tokens)) for p in plans for c in p.prefills]
    assert chunks == [(0, 7), (7, 7), (14, 6)]
    assert [c.samples for p in plans for c in p.prefills] == [False, False, True]  # sample only at the end
    assert long.output_ids == [1000 + 20]


def test_slots_bound_the_batch_and_are_reused_at_once():
    s = Scheduler(num_slots=2, max_model_len=32, max_num_batched_tokens=64)
    for rid in "abc":
        s.add(seq(rid, 2, 3))
    plan = s.schedule()
    assert [c.seq.slot for c in plan.prefills] == [0, 1] and [x.request_id for x in s.waiting] == ["c"]
    s.update(plan, fake_runner(plan))
    s.finish(s.running[0], "abort")  # a cancelled request frees its slot before the next step
    plan = s.schedule()
    assert [c.seq.request_id for c in plan.prefills] == ["c"] and plan.prefills[0].seq.slot == 0


def test_stop_token_and_abort_while_waiting():
    s = Scheduler(num_slots=1, max_model_len=32)
    stopper = seq("stop", 2, 10, stop=frozenset({1000 + 2}))  # the fake runner samples 1002 first
    waiting = seq("w", 2, 5)
    s.add(stopper)
    s.add(waiting)
    s.finish(waiting, "abort")
    run_to_end(s)
    assert stopper.finish_reason == "stop" and stopper.output_ids == [1002]
    assert waiting.finish_reason == "abort" and waiting.output_ids == []


def test_bad_sequences_are_refused():
    s = Scheduler(num_slots=1, max_model_len=16)
    with pytest.raises(ValueError, match="exceed max_model_len 16"):
        s.add(seq("x", 10, 7))
    with pytest.raises(ValueError, match="max_tokens ≥ 1"):
        s.add(seq("y", 3, 0))


def test_random_workload_invariants():
    """Random arrivals/aborts: budget and slots never exceeded, every sequence ends with the right length."""
    rng = random.Random(0)
    s = Scheduler(num_slots=3, max_model_len=64, max_num_batched_tokens=10)
    made, steps = [], 0
    while steps < 400 and (len(made) < 40 or s.has_work()):
        if len(made) < 40 and rng.random() < 0.4:
            made.append(seq(f"r{len(made)}", rng.randint(1, 30), rng.randint(1, 20)))
            s.add(made[-1])
        if s.running and rng.random() < 0.03:
            s.finish(rng.choice(s.running), "abort")
        plan = s.schedule()
        assert plan.num_tokens <= 10
        slots = [c.seq.slot for c in plan.chunks]
        assert len(slots) == len(set(slots)) and all(0 <= x < 3 for x in slots)
        assert len(s.running) <= 3
        s.update(plan, fake_runner(plan))
        steps += 1
    assert not s.has_work() and s.free_slots == 3
    for x in made:
        assert x.status is Status.FINISHED
        if x.finish_reason == "length":
            assert len(x.output_ids) == x.max_tokens
            # each sampled token came from a chunk ending at the sequence's last position
            assert x.output_ids[0] == 1000 + len(x.prompt_ids)
