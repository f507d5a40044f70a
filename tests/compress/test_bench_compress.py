"""`bench compress`: every variant measured in its own process; the table, JSON and chart are written."""

import json

import pytest

from tuneforge.bench.compress import render, run_bench
from tuneforge.compress.merge import merge
from tuneforge.compress.quantize import quantize
from tuneforge.core.config import CompressConfig, ParityConfig

LOOSE = CompressConfig(parity=ParityConfig(max_prompts=2, max_new_tokens=4, min_agreement=0.0,
                                           max_mean_logit_diff=100.0))


@pytest.fixture(scope="module")
def merged(tiny_adapter, tmp_path_factory):
    return merge(tiny_adapter.path, tmp_path_factory.mktemp("bc") / "merged", LOOSE)


def test_bench_compress_measures_parent_and_variants(merged, tmp_path):
    int4 = quantize(merged.path, tmp_path / "int4", LOOSE, method="int4")
    rows = run_bench(merged.path, [int4.path], tmp_path / "out", max_tokens=8, repeat=2)
    assert [r["name"] for r in rows] == ["bf16 (parent, cast at load)", "int4-weight-only, g32"]
    parent, small = rows
    assert small["size_mib"] < parent["size_mib"]
    for row in rows:  # what the rates are made of is checked exactly in test_decode_rate_counts_every_token
        assert row["tok_s_1"] > 0 and row["tok_s_16"] > 0
        assert 100 < row["peak_ram_mib"] < 8192 and row["peak_ram_mib"] > row["size_mib"]
        for streams in (1, 16):  # the median of two rounds, and the ratio to the parent's median
            runs = row[f"tok_s_{streams}_runs"]
            assert len(runs) == 2 and row[f"tok_s_{streams}"] == pytest.approx(sum(runs) / 2)
            assert row[f"speedup_{streams}"] == pytest.approx(row[f"tok_s_{streams}"] / parent[f"tok_s_{streams}"])
    assert parent["speedup_1"] == 1.0 and f"{small['speedup_1']:.2f} / {small['speedup_16']:.2f}" in render(rows)
    assert small["agreement"] == int4.metrics["parity"]["agreement"] and "agreement" not in parent
    table = (tmp_path / "out" / "tradeoff.md").read_text()
    assert table.strip() == render(rows) and "int4-weight-only, g32" in table
    assert json.loads((tmp_path / "out" / "tradeoff.json").read_text()) == rows
    assert (tmp_path / "out" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".measure-*"))


def test_variant_names_say_what_the_manifest_records():
    from tuneforge.bench.compress import _name

    int4 = {"operation": "quantize", "method": "int4-weight-only", "group_size": 32}
    assert _name(int4, False) == "int4-weight-only, g32"
    assert _name({**int4, "adapter": {"method": "lora"}}, False) == "int4-weight-only, g32 + lora kept"
    assert _name({"operation": "prune", "method": "structured", "sparsity": 0.25}, False) == "pruned structured 0.25"
    assert _name({}, True) == "bf16 (parent, cast at load)"


def test_decode_rate_counts_every_token(monkeypatch):
    """tok/s = every stream's completion tokens over the wall time of the whole batch, with EOS ignored."""
    from types import SimpleNamespace

    import tuneforge.bench.compress as bench
    from tuneforge.models import load_tokenizer
    from tuneforge.models.generate import render_prompt

    clock = [100.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    tokenizer = load_tokenizer("tiny-random-llama")

    class FakeEngine:  # each request takes 0.5 s of the fake clock and finishes at once with its tokens
        def __init__(self):
            self.submitted = []

        def submit(self, ids, params, sink):
            self.submitted.append((ids, params))
            clock[0] += 0.5
            sink(SimpleNamespace(finish_reason=None, completion_tokens=1))  # a delta on the way is not counted
            sink(SimpleNamespace(finish_reason="length", completion_tokens=params.max_new_tokens))

    engine = FakeEngine()
    rate = bench._decode_rate(engine, tokenizer, 16, 8)
    assert rate == pytest.approx(16 * 8 / (16 * 0.5))
    assert len(engine.submitted) == 16 and all(p.ignore_eos and p.max_new_tokens == 8 for _, p in engine.submitted)
    first = render_prompt(tokenizer, [{"role": "user", "content": bench.PROMPTS[0]}])
    assert engine.submitted[0][0] == tokenizer(first, add_special_tokens=False)["input_ids"]
    assert engine.submitted[4][0] == engine.submitted[0][0] != engine.submitted[1][0]  # prompts cycle
