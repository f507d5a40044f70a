"""`tuneforge bench semantic-cache`: would the gateway's semantic cache answer a question with another fact's answer?

Measured on domains of (training questions → their answer, test questions → a key their answer holds), the
format `tuneforge bench recipe` reads — the shipped `examples/domains/*`, or a user's own data. The cached
questions are the training questions; two kinds of queries ask it:

- the test questions, phrased apart from the training ones: a hit is **right** when the cached question it
  meets asks for an answer that holds the test question's key, **wrong** otherwise;
- each training question against the others (leave-one-out): a hit on a question of the same answer is a
  paraphrase caught (right), on another answer's question a wrong hit.

The cached vectors are compared as the store keeps them (int8). Per threshold: hits and wrong hits, with the
gateway's signature rule (numbers, negations, calendar and unit
words, names must match: `gateway.semantic.signature`) and without it, so the rule's worth shows; questions
outside `languages` are not compared, as the gateway would not. Then the lookup's cost: embedding, language
check, and the list read + comparison at 1 / 64 / 256 cached questions, on a real redis-server when one is
installed (else the in-process store).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuneforge.core.errors import ConfigError

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)


@dataclass
class Query:
    text: str
    facts: frozenset[int]  # the answers that answer it (each holds its key)
    exclude: int | None = None  # leave-one-out: the cached question it must not meet (itself)


@dataclass
class Domain:
    name: str
    cached: list[str] = field(default_factory=list)
    cached_fact: list[int] = field(default_factory=list)
    tests: list[Query] = field(default_factory=list)
    skipped_tests: int = 0  # keys no training answer holds


def read_domain(folder: Path) -> Domain:
    """A domain folder: train.jsonl (single-turn chat rows) and test.jsonl / heldout.jsonl ({question, key})."""
    from tuneforge.bench.recipe import domain_files
    from tuneforge.data.formats import read_jsonl

    train, test = domain_files(folder)
    domain, answers = Domain(folder.name), []
    for _, row in read_jsonl(train):
        turns = [m for m in row.get("messages") or [] if m.get("role") in ("user", "assistant")]
        if len(turns) != 2 or turns[0]["role"] != "user":
            continue
        answer = turns[1]["content"].strip()
        if answer not in answers:
            answers.append(answer)
        domain.cached.append(turns[0]["content"])
        domain.cached_fact.append(answers.index(answer))
    if not domain.cached:
        raise ConfigError(f"{train}: no single-turn chat rows (user → assistant) to cache")
    for number, row in read_jsonl(test):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("key"), str):
            raise ConfigError(f"{test}:{number}: a test row needs `question` and `key` (a string its answer holds)")
        holders = frozenset(i for i, answer in enumerate(answers) if row["key"] in answer)
        if holders:
            domain.tests.append(Query(row["question"], holders))
        else:
            domain.skipped_tests += 1
    return domain


def _outcomes(sims: np.ndarray, candidates: list[list[int]], queries: list[Query], cached_fact: list[int],
              threshold: float) -> tuple[int, int]:
    """(hits, wrong hits) at `threshold`: each query meets its nearest allowed cached question."""
    hits = wrong = 0
    for row, (query, allowed) in enumerate(zip(queries, candidates, strict=True)):
        allowed = [c for c in allowed if c != query.exclude]
        if not allowed:
            continue
        best = max(allowed, key=lambda c: sims[row, c])
        if sims[row, best] >= threshold:
            hits += 1
            wrong += cached_fact[best] not in query.facts
    return hits, wrong


def measure_domain(domain: Domain, languages: list[str]) -> dict:
    """Hits and wrong hits per threshold, with and without the signature rule, for both kinds of queries."""
    from tuneforge.gateway.semantic import MAX_PIECES, in_languages, quantized, signature
    from tuneforge.serve.safety.sentences import SENTENCES, pieces

    loo = [Query(q, frozenset([f]), exclude=i)
           for i, (q, f) in enumerate(zip(domain.cached, domain.cached_fact, strict=True))]
    kinds = {"test": domain.tests, "paraphrase (leave-one-out)": loo}
    # the cached side as the store keeps it: int8 (the gateway compares those)
    cached_vectors = np.stack([np.frombuffer(quantized(v), np.int8) for v in SENTENCES.encode(domain.cached)]
                              ).astype(np.float32) / 127.0
    cached_sig = [json.dumps(signature(q)) for q in domain.cached]
    def comparable(text: str) -> bool:  # as the gateway decides (semantic.prepare)
        return len(pieces(text)) <= MAX_PIECES and in_languages(text, languages)

    compared = [comparable(q) for q in domain.cached]
    out: dict = {"domain": domain.name, "cached": len(domain.cached), "facts": len(set(domain.cached_fact)),
                 "skipped_tests": domain.skipped_tests, "kinds": {}}
    for kind, queries in kinds.items():
        usable = [q for q in queries if comparable(q.text)]
        vectors = SENTENCES.encode([q.text for q in usable]) if usable else np.zeros((0, cached_vectors.shape[1]))
        sims = vectors @ cached_vectors.T
        everyone = [i for i in range(len(domain.cached)) if compared[i]]
        same_sig = [[i for i in everyone if cached_sig[i] == json.dumps(signature(q.text))] for q in usable]
        rows = []
        for t in THRESHOLDS:
            hits, wrong = _outcomes(sims, same_sig, usable, domain.cached_fact, t)
            raw_hits, raw_wrong = _outcomes(sims, [everyone] * len(usable), usable, domain.cached_fact, t)
            rows.append({"threshold": t, "hits": hits, "wrong": wrong, "hits_no_signature": raw_hits,
                         "wrong_no_signature": raw_wrong})
        out["kinds"][kind] = {"queries": len(queries), "not_compared": len(queries) - len(usable), "rows": rows}
    return out


async def _lookup_costs(rounds: int = 100) -> dict:
    """p50/p99 ms of a probe (language check + embedding) and of a lookup at 1/64/256 cached questions."""
    from tuneforge.gateway.app import redis_client
    from tuneforge.gateway.cache import ResponseCache
    from tuneforge.gateway.config import CacheConfig
    from tuneforge.gateway.semantic import SemanticCache, warm_up_semantic

    server, url = _redis()
    try:
        warm_up_semantic()
        cfg = CacheConfig(redis_url=url)
        store = ResponseCache(redis_client(url), cfg)
        semantic = SemanticCache(store, cfg.semantic)
        questions = [f"How do I reset the password of my account on the {w} page?" for w in
                     ("settings", "profile", "billing", "security", "login", "help", "admin", "team", "home", "app")]

        def body(text: str) -> dict:
            return {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}

        probes = []
        for i in range(rounds):
            start = time.perf_counter()
            await semantic.probe("t", "v", body(questions[i % len(questions)] + " " * (i // len(questions))), True)
            probes.append(time.perf_counter() - start)
        result: dict = {"probe (language check + embedding)": _quantiles(probes)}
        probe = await semantic.probe("bench", "v", body("Where is my order?"), True)
        assert probe is not None
        stored = 0
        for size in (1, 64, 256):
            while stored < size:
                await semantic.remember(probe, store.name("e", f"{stored:064x}"))
                stored += 1
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                await semantic.lookup(probe)
                times.append(time.perf_counter() - start)
            result[f"lookup, {size} cached"] = _quantiles(times)
        await store.redis.aclose()
        result["store"] = "redis-server" if server is not None else "in-process (no redis-server installed)"
        return result
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def _redis() -> tuple[subprocess.Popen | None, str | None]:
    """A redis-server of the bench's own (none when it is not installed: the in-process store then)."""
    from tuneforge.bench.gateway import _redis as start

    return start(Path(tempfile.mkdtemp(prefix="tuneforge-bench-semantic-")))


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]}


def render(domains: list[dict], costs: dict | None, languages: list[str]) -> str:
    lines = ["# Semantic cache: wrong hits per threshold", "",
             f"Cached: each domain's training questions. Languages compared: {', '.join(languages)}. "
             "`hits / wrong` with the signature rule (the gateway's), then without it.", ""]
    for d in domains:
        lines += [f"## {d['domain']} ({d['cached']} questions, {d['facts']} answers"
                  + (f"; {d['skipped_tests']} test rows whose key no answer holds, skipped" if d["skipped_tests"]
                     else "") + ")", ""]
        for kind, data in d["kinds"].items():
            lines += [f"{kind}: {data['queries']} queries"
                      + (f", {data['not_compared']} not compared (language)" if data["not_compared"] else ""), "",
                      "| threshold | hits / wrong | without signature: hits / wrong |", "| --- | --- | --- |"]
            lines += [f"| {r['threshold']:.2f} | {r['hits']} / {r['wrong']} | {r['hits_no_signature']} / "
                      f"{r['wrong_no_signature']} |" for r in data["rows"]]
            lines.append("")
    if costs is not None:
        lines += [f"## Cost per lookup ({costs['store']})", "", "| step | p50 ms | p99 ms |", "| --- | --- | --- |"]
        lines += [f"| {name} | {q['p50']:.2f} | {q['p99']:.2f} |" for name, q in costs.items() if name != "store"]
    return "\n".join(lines) + "\n"


def run(folders: list[Path], languages: list[str], output: Path, cost: bool = True) -> str:
    domains = [measure_domain(read_domain(folder), languages) for folder in folders]
    costs = asyncio.run(_lookup_costs()) if cost else None
    report = render(domains, costs, languages)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(report)
    (output / "results.json").write_text(json.dumps({"domains": domains, "costs": costs}, indent=2))
    return report
