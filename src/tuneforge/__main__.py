"""`python -m tuneforge` runs the CLI."""

from tuneforge.cli import main

main()
