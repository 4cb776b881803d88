"""Client instructions per request, counted by valgrind's callgrind: a figure that does
not move with machine load, unlike CPU seconds on a shared two-core machine.

    python -m benchmarks.instructions [--small 500] [--large 2500] [--rounds 3] [--uvloop]
                                      [--clients "aiodots create_many,..."]

Each client of `benchmarks.throughput` (httpx aside: too slow under valgrind) runs in a
child process under callgrind twice, for `small` and `large` requests, against one
emulator process that valgrind does not slow down. The difference between the two
counts, divided by the difference in requests, is the cost of one request with start-up
and warm-up cancelled out. Each aiodots client is compared with the raw aiohttp client
doing the same request by hand (`throughput.RAW_OF`). Needs `valgrind` on PATH.

The clients are measured `--rounds` times in alternation and each is reported by its
median, with the spread of its rounds beside it. On asyncio a client's count moves by
1-2% from run to run; on uvloop by up to 8% (how many requests one turn of its C loop
serves settles differently from process to process), so one round there can put a
client on either side of a target.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess

from ._emulator import emulator_process
from .throughput import RAW_OF, TARGETS, child_command

KINDS = [
    "raw aiohttp", "aiodots create", "aiodots create_many",
    "raw aiohttp retrieve", "aiodots retrieve",
    "raw aiohttp list_page", "aiodots list_page",
]


def instructions(kind: str, base_url: str, n: int, use_uvloop: bool = False) -> int:
    result = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            *child_command(kind, base_url, n, use_uvloop),
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="run every client on uvloop")
    parser.add_argument("--clients", help="a comma-separated subset of: " + ", ".join(KINDS))
    args = parser.parse_args(argv)
    kinds = args.clients.split(",") if args.clients else KINDS
    kinds = [RAW_OF[k] for k in kinds if RAW_OF[k] not in kinds] + kinds
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    rounds: dict[str, list[float]] = {kind: [] for kind in kinds}
    with emulator_process() as base_url:
        for _ in range(args.rounds):
            for kind in kinds:
                small = instructions(kind, base_url, args.small, args.uvloop)
                large = instructions(kind, base_url, args.large, args.uvloop)
                rounds[kind].append((large - small) / (args.large - args.small))
    per_request = {kind: statistics.median(counts) for kind, counts in rounds.items()}
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"client instructions per request (callgrind, {args.large} - {args.small} requests, "
          f"{loop} event loop, median of {args.rounds} rounds)")
    print(f"{'client':<22} {'instr/req':>10} {'rounds (min-max)':>18} {'vs raw':>7}  target")
    for kind, count in per_request.items():
        ratio = count / per_request[RAW_OF[kind]]
        target = TARGETS.get(kind)
        verdict = "" if target is None else (
            f"<={target[1]:.2f}: {'met' if ratio <= target[1] else 'NOT met'}"
        )
        spread = f"{min(rounds[kind]) / 1000:,.1f}k-{max(rounds[kind]) / 1000:,.1f}k"
        print(f"{kind:<22} {count:>10,.0f} {spread:>18} {ratio:>6.2f}x  {verdict}")
    return per_request


if __name__ == "__main__":
    main()
