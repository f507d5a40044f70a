"""`tuneforge review …` (the human review queue) and `tuneforge bench safety`, as typer apps the CLI mounts.

The database is `--db URL` (a SQLAlchemy URL; a plain path means a SQLite file), else the
TUNEFORGE_REVIEW_DB environment variable, else review.db in the current folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.serve.safety.review import DEFAULT_URL, ReviewError, ReviewQueue

app = typer.Typer(help="Human review of held answers: list, show, approve, edit, reject, export.",
                  no_args_is_help=True)
bench_app = typer.Typer(help="Safety benchmarks.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL or SQLite file "
                                              "(default: $TUNEFORGE_REVIEW_DB, else review.db).")]
WhoOption = Annotated[str, typer.Option("--who", help="The reviewer's name, written to the audit log.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (written to the audit log).")]


def _queue(db: str | None) -> ReviewQueue:
    url = db or os.environ.get("TUNEFORGE_REVIEW_DB") or DEFAULT_URL
    return ReviewQueue(url if "://" in url else f"sqlite:///{Path(url).resolve()}")


def _fail(exc: ReviewError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command("list")
def list_items(db: DbOption = None, status: Annotated[str, typer.Option(help="pending, approved, edited, "
                                                                         "rejected or all")] = "pending",
               route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
               limit: int = 100) -> None:
    """Held answers, oldest first: id, status, route, flags, the first words of the answer."""
    if status not in ("pending", "approved", "edited", "rejected", "all"):
        raise typer.BadParameter(f"{status!r}: expected pending, approved, edited, rejected or all",
                                 param_hint="--status")
    for item in _queue(db).list(None if status == "all" else status, limit, 0, route):  # type: ignore[arg-type]
        reasons = "; ".join(f["reason"] for f in item.verdict.get("findings", []))[:60]
        answer = " ".join(item.answer.split())[:60]
        typer.echo(f"{item.id}  {item.status:8}  {item.route or '-':12}  {reasons or '-'}  | {answer}")


@app.command("show")
def show(item_id: str, db: DbOption = None) -> None:
    """One item as JSON, with its audit rows."""
    queue = _queue(db)
    try:
        item = queue.get(item_id)
    except ReviewError as exc:
        raise _fail(exc) from exc
    out = {**item.to_dict(), "audit": [e.to_dict() for e in queue.audit(item_id)]}
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


def _decide(item_id: str, decision: str, who: str, reason: str, db: str | None, answer: str | None = None) -> None:
    try:
        item = _queue(db).decide(item_id, decision, who, reason, answer)  # type: ignore[arg-type]
    except ReviewError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{item.id} {item.status} by {item.decided_by}")


@app.command("approve")
def approve(item_id: str, who: WhoOption, reason: ReasonOption = "", db: DbOption = None) -> None:
    """Release the held answer as it is."""
    _decide(item_id, "approve", who, reason, db)


@app.command("edit")
def edit(item_id: str, who: WhoOption, answer: Annotated[str | None, typer.Option(
        help="The corrected answer; '-' reads it from standard input.")] = None,
         answer_file: Annotated[Path | None, typer.Option(help="Read the corrected answer from a file.")] = None,
         reason: ReasonOption = "", db: DbOption = None) -> None:
    """Release a corrected answer instead of the held one."""
    if answer_file is not None:
        answer = answer_file.read_text(encoding="utf-8")
    elif answer == "-":
        answer = typer.get_text_stream("stdin").read()
    if not answer:
        raise typer.BadParameter("give the corrected answer with --answer or --answer-file", param_hint="--answer")
    _decide(item_id, "edit", who, reason, db, answer)


@app.command("reject")
def reject(item_id: str, who: WhoOption, reason: ReasonOption = "", db: DbOption = None) -> None:
    """Never release the held answer."""
    _decide(item_id, "reject", who, reason, db)


@app.command("export")
def export(out: Annotated[Path, typer.Argument(help="JSONL file to write.")], db: DbOption = None,
           fmt: Annotated[str, typer.Option("--format", help="chat or instruction (the data pipeline's "
                                            "formats).")] = "chat",
           route: Annotated[str | None, typer.Option(help="Only this route.")] = None) -> None:
    """Approved and edited answers as training rows (`tuneforge prepare` reads them)."""
    if fmt not in ("chat", "instruction"):
        raise typer.BadParameter(f"{fmt!r}: expected chat or instruction", param_hint="--format")
    rows = _queue(db).export(out, fmt, route)  # type: ignore[arg-type]
    typer.echo(f"wrote {len(rows)} rows to {out}")


@app.command("verify")
def verify(db: DbOption = None) -> None:
    """Check the audit log's hash chain; exit 1 when a row was changed or removed."""
    problems = _queue(db).verify_audit()
    for p in problems:
        typer.echo(p, err=True)
    typer.echo("audit intact" if not problems else f"{len(problems)} problems")
    if problems:
        raise typer.Exit(1)


@bench_app.command("safety")
def bench_safety(out: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path(
        "runs/bench/safety.json"), pii_per_kind: int = 200, latency_samples: int = 300) -> None:
    """Detection and false-positive rates per source and guard, evasions, PII recall, latency p50/p99."""
    from tuneforge.bench.safety import format_report, run_safety_bench

    report = run_safety_bench(out, latency_samples=latency_samples, pii_per_kind=pii_per_kind,
                              progress=lambda m: typer.echo(m, err=True))
    typer.echo(format_report(report))
    typer.echo(f"report: {out}")
