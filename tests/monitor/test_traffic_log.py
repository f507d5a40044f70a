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


def test_the_server_logs_answered_requests_stream_or_not(tmp_path, tiny):
    from fastapi.testclient import TestClient

    from tuneforge.core.config import ServeConfig
    from tuneforge.serve.api.app import create_app
    from tuneforge.serve.engine.engine import Engine, EngineLimits
    from tuneforge.serve.server import shutdown_app

    path = tmp_path / "served.jsonl"
    engine = Engine(tiny, EngineLimits(max_num_seqs=4, max_model_len=256), model_name="tiny").start()
    app = create_app(engine, "tiny", ServeConfig(max_tokens=16, traffic_log={"path": str(path), "sample_rate": 1}))
    ask = [{"role": "user", "content": "Mail me at jane.doe@example.com please"}]
    chat = {"model": "tiny", "messages": ask, "max_tokens": 6, "temperature": 0}
    got = []
    with TestClient(app) as client:
        got.append(client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"])
        with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as resp:
            chunks = [json.loads(line[6:]) for line in resp.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        got.append("".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]))
        got.append(client.post("/v1/completions", json={"model": "tiny", "prompt": "Call 415-555-0134 now",
                                                        "max_tokens": 6, "temperature": 0}).json()
                   ["choices"][0]["text"])
        assert client.post("/v1/completions", json={"model": "tiny", "prompt": [1, 2, 3],
                                                    "max_tokens": 2}).status_code == 200  # ids: not logged
        assert client.post("/v1/chat/completions", json={**chat, "max_tokens": 99}).status_code == 400
    shutdown_app(app)  # writes what the log still holds
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Mail me at <EMAIL> please"] * 2 + ["Call <PHONE> now"]
    assert [r["answer"] for r in rows] == got  # the tiny random model's text (no PII in it to scrub)
    assert all(r["model"] == "tiny" for r in rows)
