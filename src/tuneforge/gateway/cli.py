"""`tuneforge gateway`: run it, manage its keys, compare the variants of a canary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuneforge.gateway.config import GatewayConfig, load_gateway

app = typer.Typer(help="The production front door: API keys, limits and budgets, response cache, load balancing "
                  "and canary splits in front of OpenAI-compatible engines.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: created and shown once, stored as a hash.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Gateway YAML (routes, redis_url, "
                                                "database_url, cache); see docs/gateway.md.")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="Key database (SQLAlchemy URL); default: the "
                                           "config's database_url.")]


def _cfg(config: Path | None, database_url: str | None = None, **overrides: object) -> GatewayConfig:
    return load_gateway(config, database_url=database_url, **overrides)


@app.command("serve")
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
) -> None:
    """Run the gateway.

    Example:  tuneforge gateway serve -c gateway.yaml --port 8080
    then:     OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="tfk_…").chat.completions.create(...)
    """
    import uvicorn

    from tuneforge.gateway.app import create_app

    cfg = _cfg(config, host=host, port=port)
    if not cfg.routes:
        raise typer.BadParameter("the config has no routes: nothing to serve (see docs/gateway.md)",
                                 param_hint="--config")
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Who the key belongs to (limits, budgets and the cache are per tenant).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="A route the key may call (repeatable); "
                                                    "none: every route.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (prompt + max_tokens reserved at admission).")]
    = None,
    parallel: Annotated[int | None, typer.Option(help="Requests in flight at once.")] = None,
    budget: Annotated[int | None, typer.Option(help="Tokens per period (prompt + completion).")] = None,
    period: Annotated[str, typer.Option(help="Budget period: day or month.")] = "month",
    soft_budget: Annotated[float, typer.Option(help="Warn (x-tuneforge-budget-warning) past this fraction.")] = 0.8,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a key; it is printed once and only its hash is kept.

    Example:  tuneforge gateway keys create --tenant acme -m support-bot --rpm 600 --budget 1000000 --period day
    """
    from tuneforge.gateway.keys import KeyPolicy, KeyStore

    policy = KeyPolicy(tenant=tenant, name=name, models=list(model or []), rpm=rpm, tpm=tpm, max_parallel=parallel,
                       budget_tokens=budget, budget_period=period, soft_budget=soft_budget)  # type: ignore[arg-type]
    key, record = KeyStore(_cfg(config, database_url).database_url).create(policy)
    console.print(f"key id {record.key_id} for tenant {tenant!r} — the key is shown once, keep it now:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """List keys (never their secrets) with their limits and, when the config names a Redis, budget used."""
    from tuneforge.gateway.keys import KeyStore

    cfg = _cfg(config, database_url)
    records = KeyStore(cfg.database_url).list(tenant, revoked)
    used = _budget_used(cfg, records)
    table = Table("key id", "tenant", "name", "models", "rpm", "tpm", "parallel", "budget", "used", "created", "state")
    for r in records:
        p = r.policy
        table.add_row(r.key_id, p.tenant, p.name, ", ".join(p.models) or "all", _n(p.rpm), _n(p.tpm),
                      _n(p.max_parallel), f"{_n(p.budget_tokens)}/{p.budget_period}" if p.budget_tokens else "–",
                      _n(used.get(r.key_id)), time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at)),
                      "revoked" if r.revoked_at else "live")
    console.print(table)


def _n(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _budget_used(cfg: GatewayConfig, records: list) -> dict[str, int]:
    if cfg.redis_url is None:
        return {}
    import asyncio

    from tuneforge.gateway.app import redis_client
    from tuneforge.gateway.quota import Quota

    async def read() -> dict[str, int]:
        quota = Quota(redis_client(cfg.redis_url))
        return {r.key_id: await quota.used(r) for r in records if r.policy.budget_tokens}

    try:
        return asyncio.run(read())
    except Exception as exc:  # the listing is still useful without it
        console.print(f"[yellow]budget usage not shown: Redis at {cfg.redis_url}: {exc}[/yellow]")
        return {}


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")],
                config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Revoke a key; gateways stop accepting it within their key_cache_s (5 s by default)."""
    from tuneforge.gateway.keys import KeyStore

    KeyStore(_cfg(config, database_url).database_url).revoke(key_id)
    console.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")],
                config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Replace a key by a new one with the same tenant, models, limits and budget (counted on, not reset);
    the old one is revoked."""
    from tuneforge.gateway.keys import KeyStore

    key, record = KeyStore(_cfg(config, database_url).database_url).rotate(key_id)
    console.print(f"{key_id} revoked; new key id {record.key_id} — shown once, keep it now:")
    typer.echo(key)


@app.command("compare")
def compare_cmd(
    route: Annotated[str, typer.Argument(help="The route (public model name) whose variants to compare.")],
    hours: Annotated[float, typer.Option(help="Only requests of the last N hours (0: all).")] = 0.0,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Compare a route's variants (canary / A-B): requests, 5xx rate, latency, tokens and thumbs up, with
    95 % intervals, from the gateway's request log and POST /v1/feedback.

    Example:  tuneforge gateway compare support-bot --hours 24 -c gateway.yaml
    """
    from tuneforge.gateway.compare import compare, render
    from tuneforge.gateway.store import connect

    since = time.time() - hours * 3600 if hours > 0 else 0.0
    stats = compare(connect(_cfg(config, database_url).database_url), route, since)
    if not stats:
        raise typer.BadParameter(f"no requests logged for route {route!r}", param_hint="ROUTE")
    typer.echo(render(route, stats))
