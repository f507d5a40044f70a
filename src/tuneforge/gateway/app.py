"""The gateway's HTTP app: OpenAI's API in front of replicas, with keys, limits, budgets, cache and canary.

A request goes: body bound (413) → key (401) → route and permission (404 / 403) → limits and budget,
reserved atomically (429, `insufficient_quota`) → variant (sticky) and replica (least outstanding) →
cache (hit: answered here) → upstream, streamed through event by event, retried once on another replica
if it failed before its first byte → settle the real tokens → cache, metrics, request log. Every refusal is
decided before a stream starts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tuneforge import __version__
from tuneforge.gateway.auth import KeyCache
from tuneforge.gateway.balancer import Balancer, Replica, Route
from tuneforge.gateway.cache import ResponseCache
from tuneforge.gateway.config import GatewayConfig, SamplingConfig
from tuneforge.gateway.errors import GatewayError
from tuneforge.gateway.guards import Guards, rule_reply
from tuneforge.gateway.hotpath import EventStream, HotPath, parse_json
from tuneforge.gateway.keys import KeyRecord, KeyStore
from tuneforge.gateway.metrics import GatewayMetrics
from tuneforge.gateway.quota import Admission, Quota, QuotaRefused
from tuneforge.gateway.requestlog import RequestLog
from tuneforge.gateway.resp import PipelinedRedis
from tuneforge.gateway.semantic import Probe, SemanticCache
from tuneforge.gateway.upstream import (
    Outcome,
    StreamWatch,
    UpstreamFailed,
    call_json,
    open_stream,
    relay,
    replay,
    session,
)
from tuneforge.monitor.traffic import TrafficLog
from tuneforge.serve.api.wire import BodyLimit, bearer_token, error_body

log = logging.getLogger("tuneforge.gateway")
Answer = Response | EventStream  # what a completion request gets: each is an ASGI app
MESSAGE_OVERHEAD = 16  # tokens a chat template may add per message (role markers, separators)


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def redis_client(url: str | None) -> Any:
    """A Redis client: the real server at `url` (pipelined, `gateway.resp`; redis-py for TLS and sockets), a
    Redis Cluster at `redis+cluster://host:port` (any one node; redis-py's cluster client finds the rest), or
    fakeredis in this process (one gateway instance only)."""
    if url is None:
        import fakeredis

        return fakeredis.FakeAsyncRedis()
    if url.startswith("redis://"):
        return PipelinedRedis(url, timeout_s=1.0)
    if url.startswith(CLUSTER_SCHEMES):
        from redis.asyncio.cluster import RedisCluster

        # every script's keys share one hash tag (quota: the key's lineage; cache: its shard), so each
        # script runs on the one node that owns its slot
        return RedisCluster.from_url(url.replace("+cluster", "", 1), socket_timeout=1.0,
                                     socket_connect_timeout=1.0)
    import redis.asyncio as aioredis

    return aioredis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def prompt_bound(body: dict[str, Any]) -> int:
    """An upper bound on the prompt's tokens without its tokenizer: a token covers at least one byte of
    text for byte-level BPE and SentencePiece vocabularies, plus the template's markers per message."""
    if "messages" in body:
        messages = body["messages"] if isinstance(body["messages"], list) else []
        return len(json.dumps(messages, ensure_ascii=False).encode()) + MESSAGE_OVERHEAD * (len(messages) + 1)
    prompt = body.get("prompt")
    return len(json.dumps(prompt, ensure_ascii=False).encode()) if prompt is not None else 0


def apply_sampling(route: str, limits: SamplingConfig, body: dict[str, Any]) -> None:
    """The route's temperature default put into `body` when it sets none; 400 when it asks for more than
    the route's cap (a parameter is refused, never lowered in silence)."""
    temperature = body.get("temperature")
    if temperature is None:
        if limits.default_temperature is not None:
            body["temperature"] = limits.default_temperature
        return
    if limits.max_temperature is None:
        return  # a bad value is the upstream's 400 to give
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise GatewayError(400, f"temperature: expected a number, got {temperature!r}", "invalid_type",
                           param="temperature")
    if not math.isfinite(temperature):  # json.loads reads NaN and Infinity; NaN > cap is False
        raise GatewayError(400, f"temperature: expected a finite number, got {temperature!r}", "invalid_value",
                           param="temperature")
    if temperature > limits.max_temperature:
        raise GatewayError(400, f"temperature {temperature} is above the limit of `{route}`: at most "
                           f"{limits.max_temperature} (its sampling.max_temperature)", "invalid_value",
                           param="temperature")


class Gateway:
    """The state behind the app: keys, quota, cache, routes, the upstream client, metrics, the log."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.keys = KeyStore(cfg.database_url)
        self.key_cache = KeyCache(self.keys, cfg.key_cache_s)
        self.quota_redis = redis_client(cfg.redis_url)
        cache_url = cfg.cache.redis_url or cfg.redis_url
        self.cache_redis = self.quota_redis if cache_url == cfg.redis_url else redis_client(cache_url)
        self.quota = Quota(self.quota_redis)
        self.cache = ResponseCache(self.cache_redis, cfg.cache)
        self.semantic = SemanticCache(self.cache, cfg.cache.semantic)
        self.balancer = Balancer(cfg)
        self.metrics = GatewayMetrics()
        self.metrics.cache_up.set_function(lambda: 0.0 if self.cache.degraded else 1.0)
        self.log = RequestLog(self.keys.engine)
        self.traffic = TrafficLog.of(cfg.traffic_log)  # sampled prompts and answers for drift monitoring
        self.client: Any = None  # the upstream session: made in the running loop (lifespan)
        self._reviews: Any = None  # the human review queue, opened on first use
        self.probe = httpx.AsyncClient()  # health checks: a few per second, off the request path

    # ---- before upstream ---------------------------------------------------------------------------
    def route_for(self, key: KeyRecord, model: Any) -> Route:
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "model: a string naming the model is required", "invalid_request", param="model")
        route = self.balancer.routes.get(model)
        allowed = [name for name in self.balancer.routes if key.policy.allows(name)]
        if route is None:
            raise GatewayError(404, f"The model `{model}` does not exist; this key may call: {', '.join(allowed)}",
                               "model_not_found", "not_found_error", param="model")
        if not key.policy.allows(model):
            raise GatewayError(403, f"this key may not call `{model}`; it may call: {', '.join(allowed) or 'none'}",
                               "model_not_allowed", "permission_error", param="model")
        return route

    async def admit(self, key: KeyRecord, reserve: int) -> Admission | None:
        p = key.policy
        if not (p.rpm or p.tpm or p.max_parallel or p.budget_tokens):
            return None
        try:
            return await self.quota.admit(key, reserve)
        except QuotaRefused as refused:
            self.metrics.refusals.labels(p.tenant, refused.reason).inc()
            raise refusal(key, refused, reserve) from None
        except Exception as exc:  # the limits store is down: limited keys fail closed, never unmetered
            self.metrics.refusals.labels(p.tenant, "limits_unavailable").inc()
            raise GatewayError(503, f"the limits store is unavailable ({type(exc).__name__}); try again shortly",
                               "limits_unavailable", "server_error", headers={"Retry-After": "1"}) from None

    async def settle(self, key: KeyRecord, admission: Admission | None, tokens: int) -> int | None:
        if admission is None:
            return None
        try:
            used = await self.quota.settle(key, admission, tokens)
        except Exception:  # the store is down: the answer stands; its reservations expire by their TTL
            return None
        if key.policy.budget_tokens:
            self.metrics.budget_used.labels(key.policy.tenant, key.key_id).set(used)
            self.metrics.budget_limit.labels(key.policy.tenant, key.key_id).set(key.policy.budget_tokens)
        return used

    async def hold_for_review(self, call: Call, content: bytes) -> Response | None:
        """Hold a guarded answer for a human when the route's review rule says so: 202 with the review id
        (the caller polls /v1/reviews/{id}); None when it goes out now."""
        from tuneforge.serve.safety import needs_review

        guards = call.guards
        cfg = call.route.config.safety
        if guards is None or cfg is None or cfg.review == "never":
            return None
        verdict = guards.verdict()
        if not needs_review(cfg, verdict):
            return None
        data = json.loads(content)
        choice = (data.get("choices") or [{}])[0]
        answer = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
        messages = call.body.get("messages") or [{"role": "user", "content": call.body.get("prompt", "")}]
        item = await asyncio.to_thread(self.reviews().hold, messages, answer or "", verdict.to_dict(),
                                       route=call.route.name, model=call.variant, placeholders=guards.placeholders,
                                       meta={"tenant": call.key.policy.tenant, "response_id": data.get("id")})
        return JSONResponse({"id": item, "object": "review", "status": "pending", "poll": f"/v1/reviews/{item}",
                             "reasons": verdict.reasons}, status_code=202, headers=call.headers("miss"))

    def reviews(self) -> Any:
        if self._reviews is None:
            from tuneforge.serve.safety.review import ReviewQueue

            self._reviews = ReviewQueue(self.cfg.database_url)
        return self._reviews

    # ---- the request -------------------------------------------------------------------------------
    async def handle(self, authorization: str | None, raw: bytes, path: str) -> Answer:
        """One completion request (its Authorization header, its body) → its answer, an ASGI app."""
        started = time.perf_counter()
        key = await self.key_cache.resolve(authorization)
        body = parse_json(raw)
        route = self.route_for(key, body.get("model"))
        apply_sampling(route.name, route.config.sampling, body)
        if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
            raise GatewayError(400, f"stream_options: expected an object, got {body['stream_options']!r}",
                               "invalid_type", param="stream_options")
        n = body["n"] if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        if not isinstance(body.get("max_tokens"), int) and not isinstance(body.get("max_completion_tokens"), int):
            body["max_tokens"] = route.config.max_tokens  # the reservation below must bound the answer
        wanted: int = body["max_tokens"] if isinstance(body.get("max_tokens"), int) else body["max_completion_tokens"]
        cap = max(1, wanted) * n  # a bad value is the upstream's 400 to give; the reservation stays sound
        admission = await self.admit(key, prompt_bound(body) + cap)
        try:
            guards = None
            if route.config.safety is not None:
                if route.config.safety.review != "never" and body.get("stream"):
                    raise GatewayError(400, f"`{route.name}` holds answers for human review "
                                       f"(review: {route.config.safety.review}): ask with stream: false and poll "
                                       "/v1/reviews/{id} when the answer is held", "stream_not_allowed",
                                       param="stream")
                guards = Guards(route.config.safety, chat=path == "/chat/completions", tenant=key.policy.tenant)
                try:
                    await guards.check_request(body)  # before the cache key and before any upstream
                except GatewayError:
                    self.metrics.refusals.labels(key.policy.tenant, "content_blocked").inc()
                    raise
                if guards.rule_answer is not None:  # a grounded rule answers; the model is not asked
                    self.metrics.refusals.labels(key.policy.tenant, "grounded").inc()
                    await self.settle(key, admission, 0)
                    return rule_reply(guards.rule_answer, body, n, guards.chat, route.name,
                                      {"x-tuneforge-route": route.name, "x-tuneforge-guard": "grounded",
                                       **limit_headers(key, admission)})
            caller = body.get("user") if route.config.sticky_by == "user" and isinstance(body.get("user"), str) \
                else None
            variant = route.variant_for(caller or key.lineage)
            call = Call(self, key, route, variant.name, body, path, admission, cap, started, guards)
            return await call.run(variant)
        except BaseException:
            await self.settle(key, admission, 0)
            raise


class Call:
    """One request through the gateway, from its replica pick to its settlement."""

    def __init__(self, gw: Gateway, key: KeyRecord, route: Route, variant: str, body: dict, path: str,
                 admission: Admission | None, cap: int, started: float, guards: Guards | None = None) -> None:
        self.gw, self.key, self.route, self.variant, self.body, self.path = gw, key, route, variant, body, path
        self.admission, self.cap, self.started, self.guards = admission, cap, started, guards
        self.stream = bool(body.get("stream"))
        self.outcome = Outcome()
        self.cache_name: str | None = None
        self.probe: Probe | None = None  # the question, embedded, when the route has the semantic cache
        self.similarity: float | None = None  # of a semantic hit
        self.replica: Replica | None = None
        # in the traffic log: the answer's text is collected (per choice) only when the request was sampled
        self.texts: dict[int, list[str]] | None = {} if gw.traffic is not None and gw.traffic.sampled() else None

    def headers(self, cache: str) -> dict[str, str]:
        headers = {"x-tuneforge-cache": cache, "x-tuneforge-variant": self.variant,
                   "x-tuneforge-route": self.route.name}
        if self.replica is not None and self.replica.version:
            headers["x-tuneforge-model-version"] = self.replica.version
        if cache == "hit" and self.similarity is not None:
            headers["x-tuneforge-cache-similarity"] = f"{self.similarity:.4f}"
        return {**headers, **limit_headers(self.key, self.admission)}

    async def run(self, variant) -> Answer:  # noqa: ANN001
        gw = self.gw
        self.replica = replica = Route.pick(variant)
        assert replica is not None  # a variant has at least one replica (config)
        if gw.cache.usable(self.route.config, self.body):
            cached = await self.look_up(replica.version or replica.url)
            if cached is not None:
                return await self.from_cache(cached)
        gw.metrics.added.labels(self.route.name).observe(time.perf_counter() - self.started)
        tried: set[str] = set()
        while True:
            upstream = dict(self.body, model=replica.config.model or self.route.name)
            if self.stream:
                upstream["stream_options"] = {**(self.body.get("stream_options") or {}), "include_usage": True}
            try:
                return await self.forward(replica, upstream)
            except UpstreamFailed as failed:
                tried.add(replica.url)
                self.failed(replica, failed)
                nxt = Route.pick(variant, tried)
                if nxt is None:
                    return await self.give_up(failed)
                gw.metrics.retries.labels(self.route.name).inc()
                self.replica = replica = nxt

    async def look_up(self, version: str) -> bytes | None:
        """The cached answer to this request: its exact entry, else (on a route with the semantic cache) the
        entry of the nearest question in its context."""
        gw, tenant = self.gw, self.key.policy.tenant
        self.cache_name = gw.cache.key(tenant, version, self.body)
        cached = await gw.cache.get(self.cache_name)
        result = "hit" if cached is not None else "miss"
        if cached is None and self.route.config.cache_semantic and not gw.cache.degraded:
            try:
                self.probe = await gw.semantic.probe(tenant, version, self.body, self.path == "/chat/completions")
                for name, similarity in await gw.semantic.lookup(self.probe) if self.probe is not None else []:
                    cached = await gw.cache.get(name)
                    if cached is not None:
                        self.similarity, result = similarity, "semantic_hit"
                        break
            except Exception:  # an optimisation: whatever fails in it (encoder, detector), the request goes on
                log.exception("semantic cache lookup failed; answering without it")
                self.probe = None
        gw.metrics.cache.labels(self.route.name, result).inc()
        return cached

    async def cached(self, content: bytes) -> None:
        """An answer for the cache (and its question for the semantic cache)."""
        assert self.cache_name is not None
        await self.gw.cache.put(self.cache_name, content)
        if self.probe is not None and len(content) <= self.gw.cache.largest and not self.gw.cache.degraded:
            await self.gw.semantic.remember(self.probe, self.cache_name)

    def failed(self, replica: Replica, failed: UpstreamFailed) -> None:
        self._leave(replica)
        if failed.eject:
            replica.eject(self.gw.cfg.health.eject_s, failed.why)
            self.gw.metrics.ejections.labels(replica.url).inc()

    async def give_up(self, failed: UpstreamFailed) -> Answer:
        await self.finish(failed.status or 502)
        if failed.status is not None and failed.body:
            return Response(failed.body, status_code=failed.status, media_type="application/json",
                            headers=self.headers("miss"))
        raise GatewayError(502, f"no replica of `{self.route.name}` could answer: {failed.why}", "upstream_error",
                           "server_error")

    async def forward(self, replica: Replica, upstream: dict) -> Answer:
        gw, url = self.gw, f"{replica.url}{self.path}"
        replica.outstanding += 1
        gw.metrics.outstanding.labels(replica.url).set(replica.outstanding)
        if not self.stream:
            reply = await call_json(gw.client, url, upstream, replica.config.api_key, self.outcome)
            self.release(replica)
            if self.cache_name and reply.status_code == 200:
                await self.cached(reply.content)
            content = await self.guarded(reply.content) if reply.status_code == 200 else reply.content
            self.keep_text(content)
            await self.finish(reply.status_code)
            if self.guards is not None and reply.status_code == 200:
                held = await self.gw.hold_for_review(self, content)
                if held is not None:
                    return held
            return Response(content, status_code=reply.status_code, headers=self.headers(self.cache_state()),
                            media_type=reply.headers.get("content-type", "application/json"))
        reply = await open_stream(gw.client, url, upstream, replica.config.api_key, self.outcome)
        if reply.status_code != 200:  # a 4xx from the replica: the client's to read
            self.release(replica)
            await self.finish(reply.status_code)
            return Response(reply.content, status_code=reply.status_code, headers=self.headers("miss"),
                            media_type=reply.headers.get("content-type", "application/json"))
        keep: list[bytes] | None = [] if self.cache_name else None
        events = relay(reply.read, self.watch(), keep, reply.aclose)
        return EventStream(events, self.headers(self.cache_state()), on_close=lambda: self.streamed(replica, keep))

    async def guarded(self, content: bytes, cache: str | None = None) -> bytes:
        """A whole JSON answer through the route's guards; one they block is counted and logged as the 400
        the client gets (its tokens were still spent upstream)."""
        if self.guards is None:
            return content
        try:
            return self.guards.answer(content)
        except GatewayError as blocked:
            await self.finish(blocked.status, cache=cache)
            raise

    def watch(self) -> StreamWatch:
        wants_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        return StreamWatch(self.outcome, wants_usage, self.cap, self.guards, self.texts)

    async def streamed(self, replica: Replica, keep: list[bytes] | None) -> None:
        """The stream is over (done, cut, failed, or the client left): slot back, cache, settle."""
        self.release(replica)
        complete = self.outcome.complete and not self.outcome.cut
        if keep is not None and complete and self.outcome.status == 200:
            await self.cached(b"".join(keep))
        ended = complete or self.outcome.cut or self.outcome.status != 200  # else the client left early
        await self.finish(self.outcome.status if ended else 499)

    def cache_state(self) -> str:
        return "miss" if self.cache_name else "bypass"

    def _leave(self, replica: Replica) -> None:
        replica.outstanding -= 1
        self.gw.metrics.outstanding.labels(replica.url).set(replica.outstanding)

    def release(self, replica: Replica) -> None:
        """The replica answered: its slot back, its time to first byte counted."""
        self._leave(replica)
        if self.outcome.ttft is not None:
            self.gw.metrics.ttft.labels(self.route.name, self.variant, replica.url).observe(self.outcome.ttft)

    async def from_cache(self, cached: bytes) -> Answer:
        """A cached answer, through the same guards and usage handling as a live one."""
        headers = self.headers("hit")
        self.outcome.response_id = _response_id(cached)
        if not self.stream:
            content = await self.guarded(cached, cache="hit")
            self.keep_text(content)
            await self.finish(200, cache="hit")
            held = await self.gw.hold_for_review(self, content) if self.guards is not None else None
            return held or Response(content, media_type="application/json", headers=headers)
        await self.finish(200, cache="hit")
        return EventStream(relay(replay(cached), self.watch(), None), headers,
                           on_close=None if self.texts is None else self.replayed)

    async def replayed(self) -> None:
        """A cached stream went out (its settlement was done before): into the traffic log, if whole."""
        if self.outcome.complete and not self.outcome.cut:
            self.log_traffic("hit")

    def keep_text(self, content: bytes) -> None:
        """A JSON answer's text per choice, when this request goes into the traffic log."""
        if self.texts is None:
            return
        try:
            choices = json.loads(content).get("choices") or []
        except (ValueError, AttributeError):
            return
        for choice in choices:
            if isinstance(choice, dict):
                text = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
                self.texts[int(choice.get("index") or 0)] = [text or ""]

    def log_traffic(self, cache: str) -> None:
        """The request, its first choice's answer and the guards that fired, to the traffic log (off the loop)."""
        assert self.gw.traffic is not None and self.texts is not None
        prompt = self.body.get("messages", self.body.get("prompt"))
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]  # a batch of completions prompts: the first, as its first choice
        if not (isinstance(prompt, str) or isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)):
            return  # token ids: no text to log
        answer = "".join(self.texts[min(self.texts)]) if self.texts else None
        flags = None if self.guards is None else sorted({f.guard for f in self.guards.verdict().findings})
        self.gw.traffic.submit(prompt, answer, flags, model=self.route.name, variant=self.variant,
                               tenant=self.key.policy.tenant, cache=cache)

    async def finish(self, status: int, cache: str | None = None) -> None:
        """Settle the tokens (a cache hit costs none), count, log."""
        gw, p, usage = self.gw, self.key.policy, self.outcome.usage
        prompt, completion = (0, 0) if cache == "hit" else (usage.prompt, usage.completion or usage.counted)
        await gw.settle(self.key, self.admission, prompt + completion)
        backend = self.replica.url if self.replica else ""
        labels = (p.tenant, self.route.name, self.variant, backend)
        gw.metrics.requests.labels(*labels, str(status)).inc()
        if prompt + completion:
            gw.metrics.tokens.labels(*labels, "prompt").inc(prompt)
            gw.metrics.tokens.labels(*labels, "completion").inc(completion)
        latency = time.perf_counter() - self.started
        if self.texts is not None and status == 200 and not (self.stream and cache == "hit"):  # that: `replayed`
            self.log_traffic(cache or self.cache_state())
        if cache != "hit":
            gw.metrics.latency.labels(self.route.name, self.variant, backend).observe(latency)
        if self.outcome.response_id:
            # a hit repeats the stored answer's id; its row gets its own (feedback goes to the original)
            row_id = self.outcome.response_id
            if cache == "hit":
                row_id = f"{row_id}:hit:{uuid4().hex[:12]}"
            gw.log.add(response_id=row_id, ts=time.time(), tenant=p.tenant, key_id=self.key.key_id,
                       route=self.route.name, variant=self.variant, backend=backend, status=status,
                       prompt_tokens=prompt, completion_tokens=completion,
                       ttft_ms=None if self.outcome.ttft is None else self.outcome.ttft * 1000,
                       latency_ms=latency * 1000, cache=cache or self.cache_state())


def _response_id(content: bytes) -> str | None:
    """The `id` of a stored answer: a JSON body, or the first event of a stream."""
    if content.startswith(b"data: "):
        content = content[6:].split(b"\n\n", 1)[0]
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def limit_headers(key: KeyRecord, admission: Admission | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits the key has."""
    p, out = key.policy, {}
    if p.rpm:
        out["x-ratelimit-limit-requests"] = str(p.rpm)
        if admission and admission.rpm_left is not None:
            out["x-ratelimit-remaining-requests"] = str(int(admission.rpm_left))
    if p.tpm:
        out["x-ratelimit-limit-tokens"] = str(p.tpm)
        if admission and admission.tpm_left is not None:
            out["x-ratelimit-remaining-tokens"] = str(int(admission.tpm_left))
    if p.budget_tokens and admission is not None:
        left = max(0, p.budget_tokens - admission.budget_used)
        out["x-tuneforge-budget-remaining"] = str(left)
        if admission.budget_used >= p.soft_budget * p.budget_tokens:
            out["x-tuneforge-budget-warning"] = (f"{admission.budget_used} of {p.budget_tokens} tokens used this "
                                                 f"{p.budget_period} (soft limit {p.soft_budget:.0%})")
    return out


def refusal(key: KeyRecord, refused: QuotaRefused, reserve: int) -> GatewayError:
    p = key.policy
    retry = {"Retry-After": str(max(1, refused.retry_after)), **limit_headers(key, None)}
    if refused.reason == "rpm":
        return GatewayError(429, f"Rate limit reached: {p.rpm} requests per minute for this key; retry in "
                            f"{refused.retry_after} s", "rate_limit_exceeded", "requests", headers=retry)
    if refused.reason == "tpm":
        return GatewayError(429, f"Rate limit reached: {p.tpm} tokens per minute for this key (this request "
                            f"reserves {reserve}: prompt + max_tokens); retry in {refused.retry_after} s",
                            "rate_limit_exceeded", "tokens", headers=retry)
    if refused.reason == "parallel":
        return GatewayError(429, f"this key already has {p.max_parallel} requests in flight (its max_parallel)",
                            "too_many_parallel_requests", "requests", headers=retry)
    if refused.reason == "budget":
        return GatewayError(429, f"this key's budget of {p.budget_tokens} tokens per {p.budget_period} is used up "
                            f"({refused.used} used)", "insufficient_quota", "insufficient_quota")
    left = max(0, (p.budget_tokens or 0) - refused.used - refused.reserved)
    return GatewayError(429, f"this request reserves {reserve} tokens (prompt + max_tokens) but the key's budget "
                        f"has {left} left this {p.budget_period}; lower max_tokens or wait",
                        "insufficient_quota", "insufficient_quota", param="max_tokens",
                        headers={"Retry-After": str(refused.retry_after)})


async def _json_body(request: Request) -> dict[str, Any]:
    return parse_json(await request.body())


def create_app(cfg: GatewayConfig) -> HotPath:
    """The gateway as an ASGI app: the completion endpoints on the plain-ASGI hot path, the rest on FastAPI
    (the returned app's `.app`)."""
    gw = Gateway(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        gw.client = session(cfg.health.connect_timeout_s, cfg.health.read_timeout_s)
        if any(r.safety and r.safety.injection.enabled and r.safety.injection.classifier for r in cfg.routes.values()):
            from tuneforge.serve.safety import warm_up

            await asyncio.to_thread(warm_up)  # the injection classifier loads now, not on a first request
        grounded = [rule for r in cfg.routes.values() if r.safety for rule in r.safety.topics.grounded]
        if grounded:
            from tuneforge.serve.safety.grounded import warm_up_grounded

            await asyncio.to_thread(warm_up_grounded, grounded)  # the encoder and the known questions' embeddings
        if cfg.cache.enabled and any(r.cache and r.cache_semantic for r in cfg.routes.values()):
            from tuneforge.gateway.semantic import warm_up_semantic

            await asyncio.to_thread(warm_up_semantic)
        await gw.balancer.check_all(gw.probe)
        gw.balancer.start(gw.probe)
        gw.log.start()
        cache_watch = asyncio.create_task(gw.cache.watch()) if cfg.cache.enabled else None
        try:
            yield
        finally:
            await gw.balancer.stop()
            if cache_watch is not None:
                cache_watch.cancel()
            await gw.log.stop()
            if gw.traffic is not None:
                await asyncio.to_thread(gw.traffic.close)
            await gw.client.close()
            await gw.probe.aclose()
            for store in {id(gw.quota_redis): gw.quota_redis, id(gw.cache_redis): gw.cache_redis}.values():
                await store.aclose()

    app = FastAPI(title="tuneforge gateway", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible gateway: keys, limits, budgets, cache, load balancing, canary.")
    app.state.gateway = gw
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes, setting="gateway.max_body_bytes")

    @app.exception_handler(GatewayError)
    async def _refused(_: Request, exc: GatewayError) -> JSONResponse:
        return exc.response()

    # answered by HotPath before FastAPI sees them; declared here for the OpenAPI schema
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await gw.handle(request.headers.get("authorization"), await request.body(), "/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await gw.handle(request.headers.get("authorization"), await request.body(), "/completions")

    if any(r.safety and r.safety.review != "never" for r in cfg.routes.values()):
        _reviews(app, gw)  # before _operations: its /v1/{rest} catch-all would shadow /v1/reviews
    _operations(app, gw)
    return HotPath(app, gw.handle, cfg.max_body_bytes)


def _reviews(app: FastAPI, gw: Gateway) -> None:
    """Callers poll held answers with their key (/v1/reviews/{id}); reviewers decide with the admin key
    (/admin/review/…, their name in `X-Reviewer`), only when one is configured."""
    import os

    from tuneforge.serve.safety.review_api import result_router, review_router

    async def tenant(request: Request) -> str:
        return (await gw.key_cache.resolve(request.headers.get("authorization"))).policy.tenant

    app.include_router(result_router(gw.reviews(), tenant=tenant))
    admin_key = gw.cfg.admin_key or os.environ.get("TUNEFORGE_GATEWAY_ADMIN_KEY")
    if not admin_key:
        return

    def reviewer(request: Request) -> str:
        token = bearer_token(request.headers.get("authorization")) or ""
        if not hmac.compare_digest(token.encode(), admin_key.encode()):
            raise GatewayError(401, "reviewing needs the gateway's admin key", "invalid_api_key",
                               "authentication_error")
        return request.headers.get("x-reviewer") or "admin"

    app.include_router(review_router(gw.reviews(), reviewer=reviewer, prefix="/admin/review"))


def _operations(app: FastAPI, gw: Gateway) -> None:
    """Models, feedback, probes and metrics."""

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        key = await gw.key_cache.resolve(request.headers.get("authorization"))
        names = [n for n in gw.balancer.routes if key.policy.allows(n)]
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "tuneforge"} for n in names]}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        """Thumbs up (+1) or down (-1) on an answer, by its response id: compared per variant."""
        key = await gw.key_cache.resolve(request.headers.get("authorization"))
        body = await _json_body(request)
        rid, score = body.get("response_id"), body.get("score")
        if not isinstance(rid, str) or not rid:
            raise GatewayError(400, "response_id: the `id` of an answer is required", "invalid_request",
                               param="response_id")
        if score not in (1, -1) or isinstance(score, bool):
            raise GatewayError(400, "score: 1 (thumbs up) or -1 (thumbs down)", "invalid_request", param="score")
        await gw.log.flush()
        row = await asyncio.to_thread(gw.log.known, rid)
        if row is None or row["tenant"] != key.policy.tenant:
            raise GatewayError(404, f"no answer with id {rid!r} for this tenant", "not_found", "not_found_error",
                               param="response_id")
        comment = body.get("comment")
        text = comment[:2000] if isinstance(comment, str) else ""
        await asyncio.to_thread(gw.log.record_feedback, rid, key.key_id, score, text)
        return {"status": "recorded", "response_id": rid, "variant": row["variant"]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Ready when every route has a replica up; `degraded` (still 200) when the cache is bypassed or a
        replica is out."""
        now = time.monotonic()
        routes = {name: {"up": sum(r.up(now) for r in route.replicas()), "replicas": len(route.replicas()),
                         "out": {r.url: r.last_error for r in route.replicas() if not r.up(now)}}
                  for name, route in gw.balancer.routes.items()}
        if any(r["up"] == 0 for r in routes.values()):
            return JSONResponse({"status": "not ready", "routes": routes}, status_code=503)
        degraded = gw.cache.degraded or any(r["out"] for r in routes.values())
        return JSONResponse({"status": "degraded" if degraded else "ready",
                             "cache": "bypassed" if gw.cache.degraded else "ok", "routes": routes})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST"])
    async def unknown(rest: str) -> JSONResponse:
        return JSONResponse(error_body(f"/v1/{rest} is not served by this gateway", "not_found_error",
                                       code="not_found"), status_code=404)
