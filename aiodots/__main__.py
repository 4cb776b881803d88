"""`python -m aiodots`: the command line (needs the `cli` extra)."""

from .cli import run

run(prog_name="aiodots")
