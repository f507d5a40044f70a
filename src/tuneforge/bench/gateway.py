"""`tuneforge bench gateway`: the same streamed load against an upstream directly and through the gateway,
in one run; the gateway's added TTFT (p50, p99) and its throughput ratio.

Two upstreams: a fast fake (`fake_upstream`: fixed tokens, a few ms per token, no model), so that the
gateway is measured rather than the model, and optionally a real `tuneforge serve` (`--engine MODEL`).
After one uncounted warm-up of each, direct and gateway runs alternate (three rounds of direct, gateway)
so that drift on a shared machine hits both. The gateway runs with a key that has RPM, TPM, parallel and
budget limits (the limits path is exercised on every request), on a real redis-server when one is
installed, else its in-process store.
A third peer, a TCP splice proxy that copies bytes and parses nothing (`splice_proxy`), shows what any
extra hop costs on this machine: the gateway is read against that floor as well as against no hop.
Also reported: the gateway's own measure of the time it adds before a request goes upstream (its
`added_latency_seconds` histogram), and the requests/s one gateway worker forwards from the fake with
no per-token delay (the proxy's own ceiling).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tuneforge.bench import fake_upstream, splice_proxy
from tuneforge.bench.serve import RunSummary, default_prompts, render, run_load
from tuneforge.gateway.process import start_gateway
from tuneforge.pipeline import free_port, stop_server


@dataclass
class Pair:
    label: str
    clients: int
    direct: RunSummary
    gateway: RunSummary
    floor: RunSummary | None = None  # through the splice proxy: what one hop costs here, whatever proxy

    @property
    def floor_ttft_p50(self) -> float | None:
        return None if self.floor is None else self.floor.ttft_ms["p50"] - self.direct.ttft_ms["p50"]

    @property
    def floor_ratio(self) -> float | None:
        if self.floor is None or not self.direct.output_throughput:
            return None
        return self.floor.output_throughput / self.direct.output_throughput

    @property
    def added_ttft_p50(self) -> float:
        return self.gateway.ttft_ms["p50"] - self.direct.ttft_ms["p50"]

    @property
    def added_ttft_p99(self) -> float:
        return self.gateway.ttft_ms["p99"] - self.direct.ttft_ms["p99"]

    @property
    def throughput_ratio(self) -> float:
        return self.gateway.output_throughput / self.direct.output_throughput if self.direct.output_throughput else 0


def _fake(delay_ms: float, tokens: int) -> tuple[subprocess.Popen, str]:
    return fake_upstream.start("--tokens", str(tokens), "--delay-ms", str(delay_ms))


def _redis(workdir: Path) -> tuple[subprocess.Popen | None, str | None]:
    if shutil.which("redis-server") is None:
        return None, None
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            import redis

            redis.Redis(port=port).ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except Exception:
            time.sleep(0.05)
    stop_server(process)
    return None, None


def _gateway(workdir: Path, upstream: str, model: str, redis_url: str | None) -> tuple[subprocess.Popen, str, str]:
    from tuneforge.gateway.keys import KeyPolicy, KeyStore

    db = f"sqlite:///{workdir / 'bench-gateway.db'}"
    key = KeyStore(db).create(KeyPolicy(tenant="bench", rpm=10**6, tpm=10**9, max_parallel=4096,
                                        budget_tokens=10**12))[0]
    cfg = {"database_url": db, "redis_url": redis_url, "cache": {"enabled": False},
           "routes": {"bench": {"variants": {"v1": {"backends": [upstream], "model": model}}, "max_tokens": 4096}}}
    process, url = start_gateway(cfg, workdir)
    return process, url, key


async def _load(url: str, model: str, prompts: list[str], clients: int, per_client: int, max_tokens: int,
                name: str, key: str | None) -> RunSummary:
    return await run_load(url, model, prompts, clients * per_client, clients, max_tokens, name=name,
                          headers={"Authorization": f"Bearer {key}"} if key else None)


def _pair(label: str, direct: str, model: str, gw: str, key: str, clients: int, per_client: int,
          max_tokens: int, floor: str | None = None, rounds: int = 3) -> Pair:
    prompts = default_prompts()
    peers = {"direct": (direct, model, None), "gateway": (gw, "bench", key)}
    if floor is not None:
        peers["splice proxy"] = (floor, model, None)
    runs: dict[str, list[RunSummary]] = {name: [] for name in peers}
    # a warm-up of each, not counted: an engine's first batches of a shape are slow (kernel caches), and
    # connection pools fill
    for url, name, secret in peers.values():
        asyncio.run(_load(url, name, prompts, clients, 1, max_tokens, f"{label} warm-up", secret))
    for _ in range(rounds):
        for peer, (url, name, secret) in peers.items():
            runs[peer].append(asyncio.run(_load(url, name, prompts, clients, per_client, max_tokens,
                                                f"{label} {'direct' if peer == 'direct' else 'via ' + peer}",
                                                secret)))
    spliced = _merge(runs["splice proxy"]) if floor is not None else None
    return Pair(label, clients, _merge(runs["direct"]), _merge(runs["gateway"]), spliced)


def _merge(runs: list[RunSummary]) -> RunSummary:
    """Rounds of one kind: percentiles averaged, counts and throughput pooled."""
    first = runs[0]
    def avg(attr: str) -> dict[str, float]:
        return {k: sum(getattr(r, attr)[k] for r in runs) / len(runs) for k in getattr(first, attr)}
    duration = sum(r.duration for r in runs)
    tokens = sum(r.output_tokens for r in runs)
    done = sum(r.completed for r in runs)
    return RunSummary(first.name, first.concurrency, duration, done, sum(r.failed for r in runs), tokens,
                      tokens / duration, done / duration, avg("ttft_ms"), avg("tpot_ms"), avg("itl_ms"),
                      avg("e2e_ms"), sorted({e for r in runs for e in r.errors}))


def _added_histogram(gw: str) -> dict[str, float]:
    """p50 / p99 of the gateway's own added-latency histogram (ms, bucket upper bounds)."""
    text = httpx.get(gw.removesuffix("/v1") + "/metrics").text
    buckets = []
    for line in text.splitlines():
        if line.startswith("tuneforge_gateway:added_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    def q(p: float) -> float:
        return next((le * 1000 for le, count in buckets if count >= p * total), float("nan"))
    return {"p50": q(0.5), "p99": q(0.99), "count": total}


def _ceiling(fake_url: str, gw: str, key: str, clients: int) -> tuple[float, float]:
    """Requests/s with a zero-delay fake: direct, and through one gateway worker."""
    prompts = ["hi"]
    direct = asyncio.run(_load(fake_url, "fake", prompts, clients, 20, 4, "ceiling direct", None))
    through = asyncio.run(_load(gw, "bench", prompts, clients, 20, 4, "ceiling gateway", key))
    return direct.request_throughput, through.request_throughput


def run(clients: list[int], per_client: int, max_tokens: int, delay_ms: float, engine: str | None,
        output: Path) -> str:
    """Run everything; write results.md into `output` and return it."""
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-gw-"))
    started: list[subprocess.Popen] = []
    try:
        redis_process, redis_url = _redis(work)
        if redis_process:
            started.append(redis_process)
        fake, fake_url = _fake(delay_ms, max_tokens)
        started.append(fake)
        gw_process, gw, key = _gateway(work, fake_url, "fake", redis_url)
        started.append(gw_process)
        splice, splice_url = splice_proxy.start(fake_url)
        started.append(splice)
        pairs = [_pair(f"fake {delay_ms:g} ms/token", fake_url, "fake", gw, key, c, per_client, max_tokens,
                       splice_url) for c in clients]
        added = _added_histogram(gw)
        zero, zero_url = _fake(0.0, 4)
        started.append(zero)
        zgw_process, zgw, zkey = _gateway(work, zero_url, "fake", redis_url)
        started.append(zgw_process)
        ceiling = _ceiling(zero_url, zgw, zkey, max(clients))
        if engine:
            pairs += _engine_pairs(engine, work, redis_url, clients[:1], per_client, max_tokens, started)
        text = _report(pairs, added, ceiling, redis_url is not None)
    finally:
        for process in reversed(started):
            stop_server(process)
        shutil.rmtree(work, ignore_errors=True)
    (output / "results.md").write_text(text + "\n")
    return text


def _engine_pairs(model: str, work: Path, redis_url: str | None, clients: list[int], per_client: int,
                  max_tokens: int, started: list[subprocess.Popen]) -> list[Pair]:
    from tuneforge.core.config import ServeConfig
    from tuneforge.pipeline import start_server

    engine, engine_url = start_server(model, ServeConfig(served_model_name="engine", max_num_seqs=16), work)
    started.append(engine)
    gw_process, gw, key = _gateway(work, engine_url, "engine", redis_url)
    started.append(gw_process)
    splice, splice_url = splice_proxy.start(engine_url)
    started.append(splice)
    return [_pair(f"tuneforge serve {model}", engine_url, "engine", gw, key, c, per_client, max_tokens, splice_url)
            for c in clients]


def _report(pairs: list[Pair], added: dict[str, float], ceiling: tuple[float, float], real_redis: bool) -> str:
    lines = [render([s for p in pairs for s in (p.direct, p.floor, p.gateway) if s is not None]), "",
             "| upstream | clients | added TTFT p50 ms | added TTFT p99 ms | throughput gateway/direct | "
             "splice proxy: added TTFT p50 ms, throughput/direct |", "|---|---|---|---|---|---|"]
    for p in pairs:
        floor = "—" if p.floor is None else f"{p.floor_ttft_p50:+.2f}, ×{p.floor_ratio:.3f}"
        lines.append(f"| {p.label} | {p.clients} | {p.added_ttft_p50:+.2f} | {p.added_ttft_p99:+.2f} | "
                     f"×{p.throughput_ratio:.3f} | {floor} |")
    lines += ["", f"gateway's own added latency before upstream (its histogram, {added['count']:.0f} requests, "
              f"bucket bounds): p50 ≤ {added['p50']:.2f} ms, p99 ≤ {added['p99']:.2f} ms",
              f"one gateway worker, zero-delay fake upstream, 4-token streams: {ceiling[1]:.0f} req/s through the "
              f"gateway vs {ceiling[0]:.0f} req/s direct",
              f"limits store: {'redis-server' if real_redis else 'in-process (fakeredis)'}"]
    return "\n".join(lines)
