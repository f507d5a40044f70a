"""`tuneforge bench structured`: what constrained decoding costs, free text vs the same engine under a
JSON schema and a regular expression, in one run.

One process, the engine loop on the main thread as in `tuneforge serve`; a client thread submits the
same prompts free, under a JSON schema and under a regex, at each concurrency, in `repeat` interleaved
rounds (free, schema, regex, free, …) so a machine that slows down mid-run slows every row alike. Both
constraints are written so that no grammar can end before `max_tokens` (the schema needs 50 array items,
the regex 400 characters): every row decodes the same number of tokens, and a row's tokens/s is its
median over the rounds. Reported: output tokens/s, its ratio to free text, time to first token (median)
and the constraint's compile time (once; cached after).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from tuneforge.bench.compress import PROMPTS

SCHEMA = {"type": "object", "properties": {"notes": {
    "type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 50}}, "required": ["notes"]}
REGEX = "[a-z ,.]{400}"


@dataclass
class Row:
    constraint: str  # free | json_schema | regex
    streams: int
    tok_s: float  # output tokens/s, median of the rounds
    ttft_ms: float  # median time to first token over every request of every round
    ratio: float = 1.0  # tok_s / free text's tok_s at the same concurrency
    compile_ms: float = 0.0


def _guided(kind: str) -> Any:
    from tuneforge.models.generate import GuidedDecoding

    if kind == "json_schema":
        return GuidedDecoding(json=json.dumps(SCHEMA))
    if kind == "regex":
        return GuidedDecoding(regex=REGEX)
    return None


def _round(engine: Any, prompts: list[list[int]], kind: str, max_tokens: int) -> tuple[float, list[float]]:
    """Output tokens/s and the TTFTs (s) of `len(prompts)` concurrent generations under `kind`."""
    from tuneforge.models.generate import SamplingParams

    params = SamplingParams(max_new_tokens=max_tokens, ignore_eos=True, guided=_guided(kind))
    done = threading.Semaphore(0)
    counts: list[int] = []
    firsts: list[float] = []
    started = time.perf_counter()

    def sink(delta: Any, seen: list[bool]) -> None:
        if not seen and (delta.text or delta.finish_reason):
            seen.append(True)
            firsts.append(time.perf_counter() - started)
        if delta.finish_reason:
            if delta.finish_reason != "length":
                raise RuntimeError(f"a {kind} request ended with {delta.finish_reason!r}: {delta.error}")
            counts.append(delta.completion_tokens)
            done.release()

    for ids in prompts:
        seen: list[bool] = []
        engine.submit(ids, params, lambda d, s=seen: sink(d, s))
    for _ in prompts:
        done.acquire()
    return sum(counts) / (time.perf_counter() - started), firsts


def run(model: str, streams: tuple[int, ...] = (1, 16), max_tokens: int = 64,
        repeat: int = 3) -> list[Row]:
    """Measure free text, json_schema and regex at each of `streams` (see the module docstring)."""
    from tuneforge.core.config import ServeConfig
    from tuneforge.models.generate import SamplingParams, render_prompt
    from tuneforge.serve.server import build_engine

    engine = build_engine(model, ServeConfig(max_num_seqs=max(streams), max_model_len=1024), "bench",
                          loop_in_thread=False)
    tokenizer = engine.tokenizer
    kinds = ("free", "json_schema", "regex")
    compile_ms: dict[str, float] = {}
    for kind in kinds[1:]:
        t = time.perf_counter()
        engine.prepare(SamplingParams(guided=_guided(kind)))  # what the server does before admission
        compile_ms[kind] = (time.perf_counter() - t) * 1000
    rates: dict[tuple[str, int], list[float]] = {}
    ttfts: dict[tuple[str, int], list[float]] = {}
    failure: list[BaseException] = []

    encoded = [tokenizer(render_prompt(tokenizer, [{"role": "user", "content": text}]),
                         add_special_tokens=False)["input_ids"] for text in PROMPTS]
    prompts = {n: [encoded[i % len(encoded)] for i in range(n)] for n in streams}

    def client() -> None:
        try:
            for kind in kinds:
                _round(engine, encoded[:1], kind, 8)
            for _ in range(repeat):
                for n in streams:
                    for kind in kinds:
                        rate, firsts = _round(engine, prompts[n], kind, max_tokens)
                        rates.setdefault((kind, n), []).append(rate)
                        ttfts.setdefault((kind, n), []).extend(firsts)
        except BaseException as exc:  # reported on the main thread once the loop has stopped
            failure.append(exc)
        finally:
            engine.shutdown()

    worker = threading.Thread(target=client, name="bench-client")
    worker.start()
    engine.run_loop()
    worker.join()
    if failure:
        raise failure[0]
    rows = []
    for n in streams:
        free = statistics.median(rates[("free", n)])
        for kind in kinds:
            rate = statistics.median(rates[(kind, n)])
            rows.append(Row(kind, n, rate, statistics.median(ttfts[(kind, n)]) * 1000, rate / free,
                            compile_ms.get(kind, 0.0)))
    return rows


def render(rows: list[Row], max_tokens: int) -> str:
    lines = ["| constraint | streams | output tok/s | × free text | TTFT p50 | compile (once) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        compiled = f"{r.compile_ms:.1f} ms" if r.constraint != "free" else "-"
        lines.append(f"| {r.constraint} | {r.streams} | {r.tok_s:.1f} | ×{r.ratio:.3f} | {r.ttft_ms:.0f} ms | "
                     f"{compiled} |")
    lines.append(f"\n({max_tokens} output tokens per request, greedy; median of the rounds)")
    return "\n".join(lines)


def as_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
