"""The traffic log: sampled, PII-scrubbed before it reaches the disk, lines whole under concurrent writers."""

from __future__ import annotations

import json
import threading

import pytest

from tuneforge.monitor.traffic import TrafficLog, read_traffic


def test_texts_are_scrubbed_consistently_and_read_back(tmp_path):
    log = TrafficLog(tmp_path / "t.jsonl", sample_rate=1.0)
    messages = [{"role": "system", "content": "You are the support bot."},
                {"role": "user", "content": "I am jane.doe@example.com, card 4111 1111 1111 1111."}]
    assert log.record(messages, answer="We wrote to jane.doe@example.com.", guard_flags=["pii"], model="bot")
    log.close()
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["prompt"] == "I am <EMAIL>, card <CREDIT_CARD>." and row["answer"] == "We wrote to <EMAIL>."
    assert row["model"] == "bot" and "example.com" not in (tmp_path / "t.jsonl").read_text()
    [exchange] = read_traffic(tmp_path / "t.jsonl")
    assert exchange.guard_flags == ["pii"] and exchange.prompt.startswith("I am <EMAIL>")


def test_sampling_keeps_about_the_rate_and_threads_never_interleave_lines(tmp_path):
    log = TrafficLog(tmp_path / "t.jsonl", sample_rate=0.25, seed=3)
    written = []

    def worker(n: int) -> None:
        written.append(sum(log.record(f"question {n}-{i} " + "x" * 2000) for i in range(400)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    rows = read_traffic(tmp_path / "t.jsonl")  # every line parses: none was cut by another
    assert len(rows) == sum(written)
    assert 0.2 * 1600 < len(rows) < 0.3 * 1600


def test_sample_rate_must_be_a_fraction(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        TrafficLog(tmp_path / "t.jsonl", sample_rate=0)
