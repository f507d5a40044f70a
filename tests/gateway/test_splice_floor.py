"""The benchmark's floor peer: the splice proxy passes a stream through unchanged."""

from __future__ import annotations

import json

import httpx

from tuneforge.bench import splice_proxy
from tuneforge.pipeline import stop_server


def _stream(url: str) -> tuple[str, int]:
    payload = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=payload, timeout=30) as reply:
        assert reply.status_code == 200
        lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    return "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e["choices"]), len(events)


def test_the_splice_proxy_passes_streams_through_unchanged(upstreams):
    direct = upstreams("--text", "one two three four five")
    process, proxied = splice_proxy.start(direct)
    try:
        assert _stream(proxied) == _stream(direct)
        assert _stream(proxied)[0] == "one two three four five"
    finally:
        stop_server(process)
