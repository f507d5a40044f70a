"""`python -m tuneforge.registry …`: the registry commands on their own (`tuneforge registry …` once mounted)."""

from tuneforge.registry.cli import app

app(prog_name="tuneforge registry")
