"""The `tuneforge bench recipe` command (registered in cli.py): domains × recipes on unseen phrasings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.core.config import DEFAULT_MODEL
from tuneforge.core.progress import console

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEFAULT_DOMAINS = "veltra-bank,kestrel-drone,qinghe-clinic"
DEFAULT_RECIPES = "old-default,new-default"


def _domain(name: str) -> Path:
    path = Path(name)
    if path.is_dir():
        return path
    for folder in (EXAMPLES / "domains" / name, EXAMPLES / name):
        if folder.is_dir():
            return folder
    raise typer.BadParameter(f"domain {name!r}: not a folder, nor one of examples/domains/")


def bench_recipe(
    domains: Annotated[str, typer.Option(help="Comma-separated domain folders, or names under examples/domains/ "
                                         "(customer-service: the demo).")] = DEFAULT_DOMAINS,
    recipes: Annotated[str, typer.Option(help="Comma-separated recipes: old-default, demo-block, auto, "
                                         "auto+rewrites, auto+cloze, auto+statements, auto+knowledge, "
                                         "auto+knowledge+replay, auto+knowledge+kl, new-default.")] = DEFAULT_RECIPES,
    model: Annotated[str, typer.Option(help="Base model.")] = DEFAULT_MODEL,
    output: Annotated[Path, typer.Option("--output", "-o", help="Cells, runs and results.md go here.")] = Path(
        "runs/bench-recipe"),
) -> None:
    """Does the recipe teach a new domain? Per domain × recipe: accuracy on the domain's unseen phrasings,
    general accuracy and its change with a 95 % CI, training time. Finished cells are reused.

    Example:  tuneforge bench recipe --domains veltra-bank --recipes old-default,auto,new-default
    """
    from tuneforge.bench.recipe import render, run_bench

    cells = run_bench([_domain(d.strip()) for d in domains.split(",") if d.strip()],
                      [r.strip() for r in recipes.split(",") if r.strip()], output, model)
    console.print(render(cells))
    console.print(f"all finished cells: {output / 'results.md'}")
