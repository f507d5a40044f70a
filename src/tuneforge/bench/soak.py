"""`tuneforge bench serve --duration S`: a soak test of `tuneforge serve` as a real process.

Closed loop at a fixed concurrency for `duration` seconds: streamed chat requests with mixed prompt
lengths (a question, or several questions run together up to a few hundred tokens) and mixed output
lengths; one request in `disconnect_every` is dropped by its client after a few chunks (the server must
abort it and free its slot). The server's resident memory is sampled every few seconds from /proc.

Pass: no request failed (deliberate disconnects aside), RSS grew < 5 % from the first minute to the
end, and the server's in-flight count is back to 0 once the load stops.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SoakReport:
    duration: float
    concurrency: int
    completed: int = 0
    failed: int = 0
    disconnected: int = 0
    output_tokens: int = 0
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    in_flight_after: int | None = None
    running_after: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float | None:
        """RSS at the end relative to RSS after the first minute (or the first sample of a shorter run)."""
        if len(self.rss_mib) < 2:
            return None
        after_warmup = [mib for t, mib in self.rss_mib if t >= min(60.0, self.duration / 10)]
        first = after_warmup[0] if after_warmup else self.rss_mib[0][1]
        return self.rss_mib[-1][1] / first - 1.0

    def per_minute(self) -> list[tuple[int, float]]:
        """(minute, MiB): the first sample at or after each whole minute of the run."""
        curve: list[tuple[int, float]] = []
        for t, mib in self.rss_mib:
            if not curve or int(t // 60) > curve[-1][0]:
                curve.append((int(t // 60), mib))
        return curve

    @property
    def passed(self) -> bool:
        growth = self.rss_growth
        return self.failed == 0 and growth is not None and growth < 0.05 and self.in_flight_after == 0

    def render(self) -> str:
        growth = self.rss_growth
        first = next((mib for t, mib in self.rss_mib if t >= min(60.0, self.duration / 10)), None)
        return "\n".join([
            f"soak {self.duration:.0f} s at {self.concurrency} clients: {self.completed} completed, {self.failed} "
            f"failed, {self.disconnected} dropped by their client on purpose, {self.output_tokens} output tokens",
            f"server RSS: {first or 0:.0f} MiB after minute 1 → {self.rss_mib[-1][1] if self.rss_mib else 0:.0f} MiB "
            f"at the end ({(growth or 0) * 100:+.1f} %); in flight after the load: {self.in_flight_after} "
            f"(running {self.running_after})",
            "RSS by minute (MiB): " + ", ".join(f"{minute}: {mib:.0f}" for minute, mib in self.per_minute())
            + (f", end: {self.rss_mib[-1][1]:.0f}" if self.rss_mib else ""),
            "PASS" if self.passed else "FAIL", *[f"  error: {e}" for e in self.errors[:5]]])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def mixed_prompts(questions: list[str], rng: random.Random) -> list[str]:
    """Short questions, and long prompts made of several questions run together (up to ~20 of them)."""
    out = list(questions)
    for _ in range(len(questions)):
        out.append(" ".join(rng.sample(questions, k=min(len(questions), rng.randint(4, 20)))))
    return out


async def _one(client, url: str, model: str, prompt: str, max_tokens: int, drop_after: int | None,
               report: SoakReport) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.7}
    chunks = 0
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                report.failed += 1
                report.errors.append(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    report.failed += 1
                    report.errors.append(str(data["error"])[:200])
                    return
                if data.get("usage"):
                    report.output_tokens += int(data["usage"].get("completion_tokens") or 0)
                chunks += 1
                if drop_after is not None and chunks >= drop_after:
                    report.disconnected += 1
                    return  # leaving the block closes the connection mid-stream
    except Exception as exc:  # counted, the soak goes on
        report.failed += 1
        report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return
    report.completed += 1


async def soak(url: str, model: str, pid: int, duration: float, concurrency: int, prompts: list[str],
               max_tokens: int = 128, disconnect_every: int = 10, seed: int = 0,
               sample_every: float = 5.0) -> SoakReport:
    """Drive `url` (served by process `pid`) for `duration` seconds and report (see the module docstring)."""
    import httpx

    rng = random.Random(seed)
    report = SoakReport(duration, concurrency)
    start = time.monotonic()
    end = start + duration
    counter = 0

    async def client_loop(client) -> None:
        nonlocal counter
        while time.monotonic() < end:
            counter += 1
            drop = rng.randint(1, 8) if counter % disconnect_every == 0 else None
            await _one(client, url, model, rng.choice(prompts), rng.randint(16, max_tokens), drop, report)

    async def sampler() -> None:
        while time.monotonic() < end:
            report.rss_mib.append((time.monotonic() - start, rss_mib(pid)))
            await asyncio.sleep(sample_every)

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        await asyncio.gather(sampler(), *[client_loop(client) for _ in range(concurrency)])
        report.rss_mib.append((time.monotonic() - start, rss_mib(pid)))
        root = url.removesuffix("/v1")
        for _ in range(50):  # aborted streams are freed before the next step: give it a moment
            health = (await client.get(f"{root}/health")).json()
            report.in_flight_after, report.running_after = health.get("in_flight"), health.get("running")
            if report.in_flight_after == 0 and report.running_after == 0:
                break
            await asyncio.sleep(0.2)
    return report


def as_json(report: SoakReport) -> str:
    return json.dumps({**asdict(report), "rss_growth": report.rss_growth, "passed": report.passed}, indent=2)
