"""`tuneforge bench serve`'s comparison plumbing: peer choice, skipping, the per-server loop, ratios (no servers)."""

import pytest
from typer.testing import CliRunner

from tuneforge.bench import serve as bench
from tuneforge.cli import app
from tuneforge.core.errors import TuneforgeError


def summary(name: str, concurrency: int, tok_s: float, ttft_ms: float = 100.0) -> bench.RunSummary:
    pct = {"mean": ttft_ms, "p50": ttft_ms, "p90": ttft_ms, "p99": ttft_ms}
    return bench.RunSummary(name=name, concurrency=concurrency, duration=1.0, completed=1, failed=0,
                            output_tokens=int(tok_s), output_throughput=tok_s, request_throughput=1.0,
                            ttft_ms=pct, tpot_ms=pct, itl_ms=pct, e2e_ms=pct)


@pytest.fixture
def no_vllm(monkeypatch):
    def absent():
        raise TuneforgeError("no vllm")

    monkeypatch.setattr("tuneforge.serve.engine.vllm.vllm_python", absent)


def test_parse_peers_keeps_order_once_each_and_names_the_choices():
    assert bench.parse_peers("vllm, llama-server,vllm") == ["vllm", "llama-server"]
    assert bench.parse_peers("") == []
    with pytest.raises(ValueError, match="sglang.*llama-server, vllm"):
        bench.parse_peers("vllm,sglang")


def test_vllm_without_its_venv_is_skipped_with_how_to_get_it(no_vllm):
    runnable, skipped = bench.available_peers(["llama-server", "vllm"], "smollm2-135m")
    assert runnable == ["llama-server"]
    assert len(skipped) == 1 and "vllm skipped" in skipped[0] and "make setup-vllm" in skipped[0]


def test_vllm_runs_where_it_is_installed(monkeypatch, tmp_path):
    monkeypatch.setattr("tuneforge.serve.engine.vllm.vllm_python", lambda: "/opt/vllm/bin/python")
    monkeypatch.setattr("tuneforge.serve.engine.vllm.hf_folder", lambda ref: tmp_path)
    assert bench.available_peers(["vllm"], "smollm2-135m") == (["vllm"], [])


def test_vllm_gets_tuneforge_limits_bf16_and_the_same_threads():
    command = bench.vllm_command("py", bench.Path("/m"), 8123, 16, 2048, 512)
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert flags["--model"] == "/m" and flags["--dtype"] == "bfloat16" and flags["--max-num-seqs"] == "16"
    assert flags["--max-model-len"] == "2048" and flags["--max-num-batched-tokens"] == "512"
    assert flags["--served-model-name"] == "bench" and flags["--port"] == "8123"
    env = bench.vllm_env(2, [3, 1, 2])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1,2" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(bench.VLLM_KV_GIB)


def test_compare_runs_tuneforge_then_each_chosen_peer(monkeypatch, tmp_path):
    ran = []

    def measure(name, start, prompts, concurrencies, num_prompts, max_tokens):
        ran.append((name, start.func.__name__))
        return [summary(name, c, 1.0) for c in concurrencies]

    monkeypatch.setattr(bench, "_measure", measure)
    out = bench.compare("smollm2-135m", [1, 16], {1: 4, 16: 64}, 64, tmp_path, peers=["vllm", "llama-server"])
    assert ran == [("tuneforge", "start_server"), ("vllm", "_start_vllm"), ("llama-server", "_start_llama_server")]
    assert [(s.name, s.concurrency) for s in out][:2] == [("tuneforge", 1), ("tuneforge", 16)]
    ran.clear()
    bench.compare("smollm2-135m", [1], {1: 4}, 64, tmp_path, peers=[])
    assert [name for name, _ in ran] == ["tuneforge"]


def test_a_server_is_stopped_when_its_load_fails(monkeypatch):
    stopped = []

    async def broken(*args, **kwargs):
        raise RuntimeError("load generator died")

    monkeypatch.setattr(bench, "run_load", broken)
    monkeypatch.setattr("tuneforge.pipeline.stop_server", stopped.append)
    with pytest.raises(RuntimeError):
        bench._measure("vllm", lambda: ("the process", "http://x/v1"), ["hi"], [1], {1: 1}, 4)
    assert stopped == ["the process"]


def test_ratio_lines_one_per_peer_and_concurrency():
    runs = [summary("tuneforge", 1, 50.0, 50.0), summary("tuneforge", 16, 300.0),
            summary("vllm", 1, 100.0, 100.0), summary("vllm", 16, 200.0), summary("llama-server", 16, 150.0)]
    lines = bench.ratio_lines(runs)
    assert lines[0].startswith("1 client(s): tuneforge/vllm output tok/s ×0.50, TTFT p50 ×0.50")
    assert lines[1].startswith("16 client(s): tuneforge/vllm output tok/s ×1.50")
    assert lines[2].startswith("16 client(s): tuneforge/llama-server output tok/s ×2.00")
    assert len(lines) == 3


def test_cli_skips_a_missing_peer_and_refuses_an_unknown_one(monkeypatch, tmp_path, no_vllm):
    asked = {}

    def compare(model, levels, counts, max_tokens, workdir, overrides, peers):
        asked.update(levels=levels, counts=counts, peers=peers)
        return [summary(name, c, 10.0) for name in ("tuneforge", *peers) for c in levels]

    monkeypatch.setattr(bench, "compare", compare)
    runner = CliRunner()
    out = runner.invoke(app, ["bench", "serve", "--concurrency", "1,16", "--max-tokens", "8", "-o", str(tmp_path)],
                        env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert asked == {"levels": [1, 16], "counts": {1: 4, 16: 64}, "peers": ["llama-server"]}
    assert "vllm skipped" in out.output and "make setup-vllm" in out.output
    assert "16 client(s): tuneforge/llama-server output tok/s ×1.00" in (tmp_path / "results.md").read_text()
    out = runner.invoke(app, ["bench", "serve", "--peers", "llama-server,sglang", "-o", str(tmp_path)])
    assert out.exit_code == 2 and "sglang" in out.output
