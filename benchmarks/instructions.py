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
under 1% from run to run. On uvloop a process settles into one of two regimes of the
garbage collector, whatever the client: 7-10 young collections per 2,000 requests, or
28-30 (the number asyncio always gives). Each young collection walks the objects of the
hundred requests in flight, and the busier regime costs raw aiohttp and aiodots alike
about 35k instructions more per request (8%). So each round of an aiodots client is set
against the round of its raw client nearest to it in collections per request (the same
regime), and its ratio is the median over its rounds: a median of counts from mixed
regimes once put a client at 1.16x that was at 1.08x in either regime.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
from typing import NamedTuple

from ._emulator import emulator_process
from .throughput import RAW_OF, TARGETS, child_command, child_result

KINDS = [
    "raw aiohttp", "aiodots create", "aiodots create_many",
    "raw aiohttp retrieve", "aiodots retrieve",
    "raw aiohttp list_page", "aiodots list_page",
]


class Run(NamedTuple):
    instructions: int
    gc_collections: int  #: in the client's measured window (`throughput.child`)


class Round(NamedTuple):
    per_request: float  #: instructions, the large run's less the small run's
    collections_per_1k: float  #: garbage collections per 1,000 requests, likewise


def instructions(kind: str, base_url: str, n: int, use_uvloop: bool = False) -> Run:
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
    return Run(int(found.group(1)), child_result(result.stdout)["gc_collections"])


def same_regime_ratio(mine: list[Round], raws: list[Round]) -> float:
    """The median, over this client's rounds, of its count against the raw client's round
    nearest to it in garbage collections per request."""
    return statistics.median(
        r.per_request
        / min(raws, key=lambda raw: abs(raw.collections_per_1k - r.collections_per_1k)).per_request
        for r in mine
    )


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
    rounds: dict[str, list[Round]] = {kind: [] for kind in kinds}
    requests = args.large - args.small
    with emulator_process() as base_url:
        for _ in range(args.rounds):
            for kind in kinds:
                small = instructions(kind, base_url, args.small, args.uvloop)
                large = instructions(kind, base_url, args.large, args.uvloop)
                rounds[kind].append(Round(
                    (large.instructions - small.instructions) / requests,
                    (large.gc_collections - small.gc_collections) * 1000 / requests,
                ))
    per_request = {
        kind: statistics.median(r.per_request for r in counts) for kind, counts in rounds.items()
    }
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"client instructions per request (callgrind, {args.large} - {args.small} requests, "
          f"{loop} event loop, median of {args.rounds} rounds; each aiodots round against the "
          "raw round nearest it in garbage collections per request)")
    print(f"{'client':<22} {'instr/req':>10} {'rounds (min-max)':>18} {'GCs/1k req':>11} "
          f"{'vs raw':>7}  target")
    for kind, count in per_request.items():
        raw = RAW_OF[kind]
        ratio = 1.0 if raw == kind else same_regime_ratio(rounds[kind], rounds[raw])
        target = TARGETS.get(kind)
        verdict = "" if target is None else (
            f"<={target[1]:.2f}: {'met' if ratio <= target[1] else 'NOT met'}"
        )
        counts = [r.per_request for r in rounds[kind]]
        collections = [r.collections_per_1k for r in rounds[kind]]
        spread = f"{min(counts) / 1000:,.1f}k-{max(counts) / 1000:,.1f}k"
        gcs = f"{min(collections):.1f}-{max(collections):.1f}"
        print(f"{kind:<22} {count:>10,.0f} {spread:>18} {gcs:>11} {ratio:>6.2f}x  {verdict}")
    return per_request


if __name__ == "__main__":
    main()
