"""`python -m aiodots`: the command line (needs the `cli` extra)."""

from .cli import main

main(prog_name="aiodots")
