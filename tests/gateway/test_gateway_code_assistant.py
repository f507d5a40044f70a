"""examples/code-assistant/gateway.yaml as shipped, in front of an upstream whose answer carries a planted
secret: the code route blocks it, streamed or not, and the secret never reaches the client."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from tests.gateway.conftest import auth, chat, create_key

EXAMPLE = Path(__file__).parents[2] / "examples" / "code-assistant"
ROUTE = "tidepool-coder"


def test_the_code_route_blocks_a_planted_secret(tmp_path, upstreams, gateways):
    leak = ('Here you go:\n```python\nAPI_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"\n'
            'client = Client(API_KEY)\n```\n')
    up = upstreams("--text", leak)
    config = yaml.safe_load((EXAMPLE / "gateway.yaml").read_text())
    config["routes"][ROUTE]["backends"] = [up]
    config["database_url"] = db = f"sqlite:///{tmp_path / 'gw.db'}"
    config.pop("port")
    gw = gateways(config)
    key = create_key(db, tenant="harrowgate")

    blocked = chat(gw, key, model=ROUTE, max_tokens=200)
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_blocked"
    assert "sk-live" not in blocked.text
    payload = {"model": ROUTE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{gw}/chat/completions", json=payload, headers=auth(key), timeout=60) as reply:
        body = "".join(reply.iter_text())
    assert "sk-live" not in body and "content_blocked" in body  # the held code block never went out
