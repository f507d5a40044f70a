"""`tuneforge monitor …`: drift between live traffic and the training data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuneforge.core.config import default
from tuneforge.core.monitor_config import DriftConfig

app = typer.Typer(help="Monitoring: drift of live traffic away from the training data.", no_args_is_help=True,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})
out = Console(highlight=False, soft_wrap=True)


def _d(name: str) -> str:
    return f"(default: {default(DriftConfig, name)})"


@app.command("drift")
def drift(
    traffic: Annotated[Path, typer.Argument(help="Traffic log (JSONL, one request per line: `prompt` or "
                                            "`messages`, optional `answer` and `guard_flags`).")],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="The training dataset artifact (from "
                                            "`tuneforge data prepare`), a chat JSONL, or a traffic log of a "
                                            "known-good window.")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for drift.json and drift.html.")] = None,
    metrics_out: Annotated[Path | None, typer.Option(
        "--metrics-out", help="Prometheus textfile (e.g. /var/lib/node_exporter/textfile/tuneforge_drift.prom) "
        "with tuneforge:drift_p_value{signal} and tuneforge:drift_detected{signal}.")] = None,
    pushgateway: Annotated[str | None, typer.Option(
        "--pushgateway", help="Pushgateway address (host:port or URL) to push the same gauges to, job "
        "tuneforge_drift.")] = None,
    alpha: Annotated[float | None, typer.Option(help=f"Family-wise false-alarm rate {_d('alpha')}.")] = None,
    permutations: Annotated[int | None, typer.Option(help=f"Permutations per test {_d('permutations')}.")] = None,
    max_reference: Annotated[int | None, typer.Option(help=f"Reference rows drawn {_d('max_reference')}.")] = None,
    max_traffic: Annotated[int | None, typer.Option(help=f"Requests drawn {_d('max_traffic')}.")] = None,
    split: Annotated[str | None, typer.Option(help=f"Dataset split used as reference {_d('split')}.")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Sampling and permutation seed {_d('seed')}.")] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 3 when drift is detected (for cron and "
                                                "CI jobs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary instead of a table.")] = False,
) -> None:
    """Compare live traffic with the training data: embeddings, length, language, unseen words, answers.

    Each signal gets a two-sample test and a p-value; drift is decided with Holm's correction over the
    signals, so a run on traffic like the training data reports drift with probability at most alpha.

    Example:  tuneforge monitor drift traffic.jsonl -r runs/demo/dataset -o runs/drift --metrics-out drift.prom
    """
    from tuneforge.core.config import settings
    from tuneforge.monitor.drift_run import run

    cfg = settings(DriftConfig, None, alpha=alpha, permutations=permutations, max_reference=max_reference,
                   max_traffic=max_traffic, split=split, seed=seed)
    report = run(traffic, reference, cfg, out_dir, metrics_out, pushgateway)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        table = Table(title=f"drift: {report.n_traffic} requests vs {report.n_reference} reference rows "
                      f"(alpha {report.alpha:g}, Holm)")
        for column in ("signal", "test", "reference", "traffic", "p", "adjusted p", "drift"):
            table.add_column(column)
        for s in report.signals:
            if s.skipped:
                table.add_row(s.name, s.test, f"[dim]skipped: {s.skipped}[/dim]", "", "", "", "")
                continue
            table.add_row(s.name, s.test, _short(s.reference), _short(s.traffic), f"{s.p_value:.3g}",
                          f"{s.adjusted_p_value:.3g}", "[bold red]yes[/bold red]" if s.detected else "no")
        out.print(table)
        out.print("[bold red]drift detected[/bold red]" if report.drift else "[green]no drift detected[/green]")
        if out_dir is not None:
            out.print(f"report: {out_dir / 'drift.html'}  summary: {out_dir / 'drift.json'}")
    if fail_on_drift and report.drift:
        sys.exit(3)


def _short(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k}:{share:.0%}" for k, share in list(value.items())[:3])
    return f"{value:.3g}"
