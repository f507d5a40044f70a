"""The Playground's and the Monitoring page's side: talk to a running `tuneforge serve` or `tuneforge gateway`.

Chat streams through the UI (the browser never needs the server's key, and no CORS opening is needed):
the server's SSE lines are passed on unchanged. Monitoring reads the server's own `/metrics` with
prometheus-client's parser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tuneforge.core.errors import TuneforgeError
from tuneforge.ui.jobs import now


def base_url(url: str) -> str:
    """`http://host:port/v1` (what the page is given) → `http://host:port`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise TuneforgeError(f"server url {url!r}: expected http://host:port/v1")
    return url.removesuffix("/v1")


def headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def models(url: str, key: str | None) -> list[dict[str, Any]]:
    """The server's model cards (`/v1/models`), each with its `max_model_len` where the server gives it."""
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            reply = await client.get(f"{base_url(url)}/v1/models", headers=headers(key))
        except httpx.TransportError as exc:
            raise TuneforgeError(f"server url {url}: cannot connect ({exc})") from None
    if reply.status_code != 200:
        raise TuneforgeError(f"server url {url}: /v1/models answered {reply.status_code}: {reply.text[:300]}")
    return list(reply.json().get("data", []))


async def stream_chat(url: str, key: str | None, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """The server's streamed chat completion, line by line; a refused request becomes one SSE error event."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as client:
        try:
            async with client.stream("POST", f"{base_url(url)}/v1/chat/completions", headers=headers(key),
                                     json={**body, "stream": True}) as reply:
                if reply.status_code != 200:
                    text = (await reply.aread()).decode(errors="replace")
                    try:
                        message = json.loads(text)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        message = text[:500]
                    yield f"data: {json.dumps({'error': {'message': message, 'status': reply.status_code}})}\n\n"\
                        .encode()
                    return
                async for line in reply.aiter_lines():
                    yield (line + "\n").encode()
        except httpx.TransportError as exc:
            yield f"data: {json.dumps({'error': {'message': f'cannot reach {url}: {exc}'}})}\n\n".encode()


async def feedback(url: str, key: str | None, response_id: str, score: int, comment: str, local: Path
                   ) -> dict[str, Any]:
    """Thumbs up/down: to the gateway's `POST /v1/feedback` when the server has one, else into `local` (a
    plain `tuneforge serve` keeps no feedback); the answer says where it went."""
    if score not in (1, -1):
        raise TuneforgeError("score: 1 (thumbs up) or -1 (thumbs down)")
    if not response_id:
        raise TuneforgeError("response_id: the answer's id is required")
    record = {"response_id": response_id, "score": score, "comment": comment}
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            reply = await client.post(f"{base_url(url)}/v1/feedback", headers=headers(key), json=record)
        except httpx.TransportError as exc:
            raise TuneforgeError(f"server url {url}: cannot connect ({exc})") from None
    if reply.status_code == 200:
        return {"recorded": "gateway", "where": f"{base_url(url)}/v1/feedback"}
    if reply.status_code not in (404, 405):
        raise TuneforgeError(f"the gateway refused the feedback ({reply.status_code}): {reply.text[:300]}")
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(local, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**record, "server": url, "at": now()}) + "\n")
    return {"recorded": "local", "where": str(local)}


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A histogram quantile from cumulative (upper bound, count) buckets, as Prometheus' histogram_quantile."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def summarize(text: str) -> dict[str, Any]:
    """The numbers that say whether a deployment is healthy, from a `/metrics` page (all models summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    finished: dict[str, float] = {}
    rejected: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, sample.value
            if name.endswith("_bucket"):
                le = float(sample.labels["le"])
                series = buckets.setdefault(name.removesuffix("_bucket"), {})
                series[le] = series.get(le, 0.0) + value
            elif name == "tuneforge:request_success_total":
                reason = sample.labels.get("finished_reason", "?")
                finished[reason] = finished.get(reason, 0.0) + value
            elif name == "tuneforge:request_rejected_total":
                status = sample.labels.get("status", "?")
                rejected[status] = rejected.get(status, 0.0) + value
            else:
                totals[name] = totals.get(name, 0.0) + value

    def histogram(name: str) -> dict[str, float | None]:
        series = sorted(buckets.get(f"tuneforge:{name}", {}).items())
        count = totals.get(f"tuneforge:{name}_count", 0.0)
        total = totals.get(f"tuneforge:{name}_sum", 0.0)
        return {"count": count, "mean": total / count if count else None, "p50": _quantile(series, 0.5),
                "p95": _quantile(series, 0.95)}

    errors = sum(v for k, v in finished.items() if k in ("error", "timeout"))
    return {"ttft": histogram("time_to_first_token_seconds"), "itl": histogram("inter_token_latency_seconds"),
            "e2e": histogram("e2e_request_latency_seconds"),
            "generation_tokens": totals.get("tuneforge:generation_tokens_total", 0.0),
            "prompt_tokens": totals.get("tuneforge:prompt_tokens_total", 0.0),
            "running": totals.get("tuneforge:num_requests_running", 0.0),
            "waiting": totals.get("tuneforge:num_requests_waiting", 0.0),
            "kv_cache_usage": totals.get("tuneforge:kv_cache_usage_perc", 0.0),
            "finished": finished, "rejected": rejected, "errors": errors + sum(rejected.values()),
            "engine_restarts": totals.get("tuneforge:engine_restarts_total", 0.0)}


async def metrics(url: str) -> dict[str, Any]:
    """The server's `/metrics` (open without a key), summarized."""
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            reply = await client.get(f"{base_url(url)}/metrics")
        except httpx.TransportError as exc:
            raise TuneforgeError(f"server url {url}: cannot connect ({exc})") from None
    if reply.status_code != 200:
        raise TuneforgeError(f"server url {url}: /metrics answered {reply.status_code}")
    return summarize(reply.text)
