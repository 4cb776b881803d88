"""Client instructions per request, counted by valgrind's callgrind: a figure that does
not move with machine load, unlike CPU seconds on a shared two-core machine.

    python -m benchmarks.instructions [--small 500] [--large 2500]

Each client of `benchmarks.throughput` (httpx aside: too slow under valgrind) runs in a
child process under callgrind twice, for `small` and `large` requests, against one
emulator process that valgrind does not slow down. The difference between the two
counts, divided by the difference in requests, is the cost of one request with start-up
and warm-up cancelled out. Needs `valgrind` on PATH.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

from ._emulator import emulator_process

KINDS = ["raw aiohttp", "aiodots create", "aiodots create_many"]


def instructions(kind: str, base_url: str, n: int) -> int:
    result = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, "-m", "benchmarks.throughput", "--child", kind, base_url, str(n),
        ],
        capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if not found:
        raise RuntimeError(f"no callgrind total for {kind}: {result.stderr[-500:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    per_request: dict[str, float] = {}
    with emulator_process() as base_url:
        for kind in KINDS:
            small = instructions(kind, base_url, args.small)
            large = instructions(kind, base_url, args.large)
            per_request[kind] = (large - small) / (args.large - args.small)
    raw = per_request["raw aiohttp"]
    print(f"client instructions per request (callgrind, {args.large} - {args.small} requests)")
    print(f"{'client':<22} {'instr/req':>10} {'vs raw':>7}")
    for kind, count in per_request.items():
        print(f"{kind:<22} {count:>10,.0f} {count / raw:>6.2f}x")
    return per_request


if __name__ == "__main__":
    main()
