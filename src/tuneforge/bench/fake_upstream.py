"""A fast fake OpenAI-compatible upstream: fixed tokens, no model, so that a benchmark of the gateway
measures the gateway. `python -m tuneforge.bench.fake_upstream --port 9001 [--delay-ms 5] [--ignore-max-tokens]`.

Answers chat and text completions, streamed or not, with `usage` as OpenAI reports it (the usage event
when `stream_options.include_usage` is set), and /health and /v1/models as a tuneforge server does.
`--text` answers that text in 3-character pieces; `--ignore-max-tokens` sends every piece whatever the
request asks (a misbehaving upstream, for the gateway's budget cut-off); `--version` is the model card's
version (the cache's key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def create_app(tokens: int, delay_ms: float, ignore_max_tokens: bool, version: str,
               text: str | None = None) -> FastAPI:
    app = FastAPI()
    state: dict = {"requests": 0, "last": None}  # the last request's body, for tests of what the gateway sent

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "in_flight": 0, "requests": state["requests"], "last_request": state["last"]}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "fake", "object": "model", "version": version}]}

    async def answer(request: Request, chat: bool) -> Response:
        state["requests"] += 1
        body = json.loads(await request.body())
        state["last"] = body
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)] if text else ["tok "] * tokens
        n = len(pieces) if ignore_max_tokens else min(len(pieces), int(body.get("max_tokens") or len(pieces)))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        if not body.get("stream"):
            await asyncio.sleep(delay_ms / 1000 * n)
            answer = "".join(pieces[:n])
            choice = ({"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": answer, "finish_reason": "length"})
            return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": body.get("model"), "choices": [choice],
                                 "usage": usage})

        async def events():
            kind = "chat.completion.chunk" if chat else "text_completion"
            for i in range(n):
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                part = {"index": 0, "delta": {"content": pieces[i]}} if chat else {"index": 0, "text": pieces[i]}
                part["finish_reason"] = "length" if i == n - 1 else None
                chunk = {"id": rid, "object": kind, "model": body.get("model"), "choices": [part]}
                yield f"data: {json.dumps(chunk)}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({'id': rid, 'object': kind, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, False)

    return app


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """This fake as a process on a free port, with these command-line arguments; (process, base URL /v1)
    once its /health answers."""
    from tuneforge.core.net import free_port, wait_ready

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.bench.fake_upstream", "--port", str(port), *args],
                               stdout=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/health", process, 120)
    return process, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer (capped by max_tokens)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause before each streamed token")
    parser.add_argument("--ignore-max-tokens", action="store_true")
    parser.add_argument("--version", default="fake-v1")
    parser.add_argument("--text", default=None, help="answer this text (in 3-character pieces) instead of tokens")
    args = parser.parse_args()
    app = create_app(args.tokens, args.delay_ms, args.ignore_max_tokens, args.version, args.text)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
