"""`tuneforge registry …`: register, list, show, diff, promote, approve, rollback, history, verify.

Each command reads the `registry:` section of `-c PIPELINE.yaml` (or the defaults: the embedded registry in
./registry), `--root` / `--tracking-uri` override it. Who is acting comes from TUNEFORGE_USER, else
`registry.user`, else the OS user. Errors print one line naming what is wrong and exit 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from tuneforge.core.errors import TuneforgeError

app = typer.Typer(
    help="Model registry: versions, aliases, eval-gated promotion with approvals, rollback, audit log.\n\n"
    "Start with [bold]tuneforge registry register runs/demo/adapter --name support-bot --eval runs/demo/eval[/bold].",
    no_args_is_help=True, rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose `registry:` section "
                                                "is used (policies, admins, user, root, tracking_uri).")]
RootOpt = Annotated[Path | None, typer.Option("--root", help="Registry folder: embedded registry, audit log, "
                                              "artifact store (default ./registry).")]
UriOpt = Annotated[str | None, typer.Option("--tracking-uri", envvar="TUNEFORGE_REGISTRY_URI",
                                            help="MLflow server URL or SQL store URI as the store of record "
                                            "(default: none, the embedded registry).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: --set "
                                                  "registry.policies.production.approvals=2 (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", "-m", help="Why; written to the audit log.")]


def _session(config: Path | None, root: Path | None, uri: str | None, overrides: list[str] | None):
    from tuneforge.core.config import load_pipeline
    from tuneforge.registry.open import open_registry

    values = {k: v for k, v in {"registry.root": root, "registry.tracking_uri": uri}.items() if v is not None}
    return open_registry(load_pipeline(config, overrides or [], values).registry)


def _errors(command: Callable[..., None]) -> Callable[..., None]:
    """User errors: one red line on stderr, exit 1, no traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except TuneforgeError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(1) from None

    return run


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
@_errors
def register(
    artifact: Annotated[Path, typer.Argument(help="An adapter or model artifact folder (verified file by file).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name, e.g. support-bot.")],
    evals: Annotated[list[Path] | None, typer.Option("--eval", help="An eval report of this artifact to attach "
                                                     "(its gate results are what promotion checks); repeatable.")
                     ] = None,
    config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None, overrides: SetOpt = None,
) -> None:
    """Register an artifact as the next version of NAME. A tampered artifact is refused; the same content hash
    again returns its existing version (attaching any new --eval).

    Example:  tuneforge registry register runs/demo/adapter --name support-bot --eval runs/demo/eval
    """
    from tuneforge.registry.versions import register as do_register

    session = _session(config, root, tracking_uri, overrides)
    version, created = do_register(session, artifact, name, evals)
    verb = "registered" if created else "already registered (same content hash):"
    out.print(f"{verb} {version.ref}  {version.kind} {version.content_hash[:12]}…  evals attached: "
              f"{len(version.evals)}  by {session.user}")


@app.command("list")
@_errors
def list_cmd(
    name: Annotated[str | None, typer.Argument(help="A model: list its versions (omit: list the models).")] = None,
    as_json: JsonOpt = False, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """List the models with their aliases, or one model's versions.

    Example:  tuneforge registry list support-bot
    """
    from tuneforge.registry.versions import versions

    session = _session(config, root, tracking_uri, overrides)
    if name is None:
        rows = [{"name": m, "versions": len(session.backend.version_tags(m)), "aliases": session.backend.aliases(m)}
                for m in session.backend.models()]
        if as_json:
            return _json(rows)
        table = Table("model", "versions", "aliases")
        for row in rows:
            table.add_row(row["name"], str(row["versions"]),
                          ", ".join(f"@{a}→{n}" for a, n in sorted(row["aliases"].items())))
        return out.print(table)
    aliases = session.backend.aliases(name)
    found = versions(session, name)
    if as_json:
        return _json([{**v.__dict__, "aliases": [a for a, n in aliases.items() if n == v.number]} for v in found])
    table = Table("version", "kind", "content hash", "aliases", "evals", "by", "at")
    for v in found:
        held = ", ".join(f"@{a}" for a, n in sorted(aliases.items()) if n == v.number)
        table.add_row(str(v.number), v.kind, v.content_hash[:12], held, str(len(v.evals)), v.created_by, v.created_at)
    out.print(table)


def _lineage_tree(node: dict[str, Any], tree: Tree) -> None:
    numbers = ", ".join(f"{k}={v:.4g}" for k, v in sorted(node.get("metrics", {}).items())[:6])
    if node.get("missing") is not None:
        branch = tree.add(f"{node['kind']} {node['content_hash'][:12]}…  (manifest not stored: {node.get('path')})")
        return
    branch = tree.add(f"[bold]{node['kind']}[/bold] {node['content_hash'][:12]}…  {node.get('created_at') or ''}"
                      + (f"  [dim]{numbers}[/dim]" if numbers else ""))
    if node.get("base_model"):
        base = node["base_model"]
        branch.add(f"base model {base['name']}  fingerprint {str(base.get('fingerprint'))[:16]}")
    for source in node.get("sources", []) or []:
        branch.add(f"raw data {source.get('path')}  sha256 {str(source.get('sha256'))[:12]}…  "
                   f"{source.get('rows')} rows")
    for parent in node.get("parents", []):
        _lineage_tree(parent, branch)


@app.command()
@_errors
def show(
    ref: Annotated[str, typer.Argument(help="NAME (latest), NAME/VERSION or NAME@ALIAS.")],
    as_json: JsonOpt = False, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Show a version: aliases, attached evals with their numbers and gates, lineage back to the raw data and
    the base model.

    Example:  tuneforge registry show support-bot@production
    """
    from tuneforge.registry.lineage import show as do_show

    info = do_show(_session(config, root, tracking_uri, overrides), ref)
    if as_json:
        return _json(info)
    out.print(f"[bold]{info['name']}/{info['version']}[/bold]  {info['kind']}  {info['content_hash']}\n"
              f"registered by {info['created_by']} at {info['created_at']}  aliases: "
              f"{', '.join('@' + a for a in info['aliases']) or 'none'}\nstored at {info['path']}")
    for alias, request in info["pending"].items():
        out.print(f"waiting for approval to @{alias}: asked by {request['requested_by']}, approved by "
                  f"{', '.join(request['approved_by']) or 'nobody yet'}")
    for report in info["evals"]:
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in sorted(report["metrics"].items())
                            if not k.startswith("base_") and not k.endswith("_delta"))
        out.print(f"eval {report['content_hash'][:12]}…: {numbers}")
        for g in report["gates"]:
            out.print(f"  {_gate_line(g)}")
    tree = Tree("lineage")
    _lineage_tree(info["lineage"], tree)
    out.print(tree)


@app.command()
@_errors
def diff(
    a: Annotated[str, typer.Argument(help="First version, e.g. support-bot/3.")],
    b: Annotated[str, typer.Argument(help="Second version, e.g. support-bot/4.")],
    as_json: JsonOpt = False, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Config keys that differ and metric deltas (manifest and attached evals) from A to B.

    Example:  tuneforge registry diff support-bot/3 support-bot/4
    """
    from tuneforge.registry.lineage import diff as do_diff

    result = do_diff(_session(config, root, tracking_uri, overrides), a, b)
    if as_json:
        return _json(result)
    table = Table("config", result["a"], result["b"], title="config changes" + (
        " (same artifact)" if result["same_artifact"] else ""))
    for key, change in result["config"].items():
        table.add_row(key, str(change["a"]), str(change["b"]))
    out.print(table)
    metrics = Table("metric", result["a"], result["b"], "delta", title="metrics")
    for key, m in result["metrics"].items():
        metrics.add_row(key, *("-" if x is None else f"{x:.4g}" for x in (m["a"], m["b"])),
                        "-" if m["delta"] is None else f"{m['delta']:+.4g}")
    out.print(metrics)


def _gate_line(g: dict[str, Any]) -> str:
    value = "not measured" if g.get("value") is None else f"{g['value']:.4g}"
    return f"gate {g['gate']} {g['rule']}: {value} {'pass' if g['passed'] else 'FAIL'}"


def _report_move(move: Any) -> None:
    for g in move.gates:
        out.print(_gate_line(g))
    if move.status == "pending":
        done = len(move.approved_by)
        out.print(f"{move.model}/{move.to} → @{move.alias} waits for approval ({done}/{move.approvals_needed}): "
                  f"another identity runs `tuneforge registry approve {move.model} --alias {move.alias}`")
    else:
        was = f"(was {move.previous})" if move.previous is not None else "(new alias)"
        out.print(f"@{move.alias} of {move.model} → version {move.to} {was}")


@app.command()
@_errors
def promote(
    ref: Annotated[str, typer.Argument(help="The version: NAME/VERSION or NAME@ALIAS.")],
    to: Annotated[str, typer.Option("--to", help="The alias to point at it, e.g. staging, production.")],
    force: Annotated[bool, typer.Option("--force", help="Skip gates and approvals (admins only, needs "
                                        "--reason; logged as forced).")] = False,
    reason: ReasonOpt = None, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Promote a version to an alias through the alias's policy (registry.policies): its eval gates must have
    passed in an attached eval report; a protected alias then waits for approval by another identity.
    A refusal lists the failing gates and exits 1.

    Example:  tuneforge registry promote support-bot/4 --to production
    """
    from tuneforge.registry.promote import promote as do_promote

    _report_move(do_promote(_session(config, root, tracking_uri, overrides), ref, to, force, reason))


@app.command()
@_errors
def approve(
    name: Annotated[str, typer.Argument(help="The model whose promotion waits.")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="The alias the promotion is to.")],
    reason: ReasonOpt = None, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Approve a waiting promotion, as an identity other than the one who asked (TUNEFORGE_USER).

    Example:  TUNEFORGE_USER=bob tuneforge registry approve support-bot --alias production
    """
    from tuneforge.registry.promote import approve as do_approve

    _report_move(do_approve(_session(config, root, tracking_uri, overrides), name, alias, reason))


@app.command()
@_errors
def rollback(
    name: Annotated[str, typer.Argument(help="The model.")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="The alias to move back, e.g. production.")],
    reason: ReasonOpt = None, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Point an alias back at the version that held it before the current one (as the audit log records).

    Example:  tuneforge registry rollback support-bot --alias production -m "answers got worse"
    """
    from tuneforge.registry.promote import rollback as do_rollback

    _report_move(do_rollback(_session(config, root, tracking_uri, overrides), name, alias, reason))


@app.command()
@_errors
def history(
    name: Annotated[str, typer.Argument(help="The model.")],
    alias: Annotated[str | None, typer.Option("--alias", "-a", help="Only this alias's entries.")] = None,
    moves: Annotated[bool, typer.Option("--moves", help="Only alias moves (promote, rollback).")] = False,
    as_json: JsonOpt = False, config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Every audit entry of a model: who did what when (register, request, approve, promote, refused, rollback).

    Example:  tuneforge registry history support-bot --alias production
    """
    from tuneforge.registry.lineage import history as do_history

    entries = do_history(_session(config, root, tracking_uri, overrides), name, alias, moves)
    if as_json:
        return _json(entries)
    table = Table("seq", "at", "user", "action", "version", "alias", "from→to", "detail")
    for e in entries:
        move = f"{e.get('from')}→{e.get('to')}" if e.get("action") in ("promote", "rollback") else ""
        detail = "; ".join(x for x in (
            "FORCED" if e.get("forced") else "", f"approved by {', '.join(e['approved_by'])}" if e.get(
                "approved_by") else "", f"failed: {', '.join(g['gate'] for g in e.get('gates', []) if not g['passed'])}"
            if e.get("action") == "refused" else "", e.get("reason") or "") if x)
        table.add_row(str(e["seq"]), e["at"], e["user"], e["action"], str(e.get("version") or e.get("to") or ""),
                      e.get("alias") or "", move, detail)
    out.print(table)


@app.command()
@_errors
def verify(config: ConfigOpt = None, root: RootOpt = None, tracking_uri: UriOpt = None,
           overrides: SetOpt = None) -> None:
    """Check the audit log's hash chain, each model's head in the backend, that every alias is where the log's
    moves put it, and every stored manifest against its pin. Exit 1 naming the first bad entry.

    Example:  tuneforge registry verify
    """
    from tuneforge.registry.lineage import verify as do_verify

    session = _session(config, root, tracking_uri, overrides)
    verdict = do_verify(session)
    for warning in verdict.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    if not verdict.ok:
        where = f" (entry {verdict.bad_seq})" if verdict.bad_seq else ""
        raise TuneforgeError(f"audit check failed{where}: {verdict.problem}")
    out.print(f"ok: {verdict.entries} audit entries chained, heads, aliases and manifests match "
              f"({session.log.path})")
