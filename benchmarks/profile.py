"""Where one request's time goes, layer by layer: `python -m benchmarks profile`.

    python -m benchmarks profile [--client "aiodots create_many"] [--requests 3000]
                                 [--uvloop] [--top 15]

Runs an aiodots client of `benchmarks.throughput` and the raw aiohttp client doing the
same request by hand, each in a fresh process under cProfile against one emulator
process, and prints the CPU time per request of each layer (aiodots' modules, cattrs,
aiohttp, JSON, the event loop, the socket calls) side by side, with the difference: a
layer that grows is the place to look. Then the functions costing aiodots the most.

A C function (a builtin, orjson, a socket call) is charged to the layer of its caller,
except the JSON codecs and the socket calls, which are layers of their own. cProfile
slows every Python call down by about the same amount, so call-heavy layers look a
little bigger than they are; the ratios to the raw client stay fair. Instruction counts
without that distortion: `python -m benchmarks.instructions`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
from collections import defaultdict
from typing import Any

from ._emulator import emulator_process
from .throughput import CLIENTS, RAW_OF, run_loop, settle_allocator

#: (layer, test on the function's file name): the first that matches names the layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("aiodots.transport", ("aiodots/transport.py",)),
    ("aiodots.converter", ("aiodots/converter.py",)),
    ("cattrs (generated and library)", ("<cattrs generated", "/cattrs/")),
    ("aiodots.model_builder (generated)", ("<aiodots generated", "aiodots/model_builder.py")),
    # attrs-generated methods are named after their class: BatchItem's are the batch's.
    ("aiodots.batch", ("aiodots/batch.py", "aiodots.batch.")),
    ("aiodots.models", ("aiodots/models/", "<attrs generated")),
    ("aiodots.ratelimit", ("aiodots/ratelimit.py",)),
    ("aiodots.resources", ("aiodots/resources/",)),
    ("aiodots (other)", ("aiodots/",)),
    ("aiohttp client", ("/aiohttp/",)),
    ("multidict, yarl", ("/multidict/", "/yarl/", "/propcache/")),
    ("json", ("/json/",)),
    ("asyncio event loop", ("/asyncio/", "/uvloop/")),
    ("benchmark harness", ("benchmarks/",)),
]
#: C functions that are a layer of their own rather than part of their caller's.
OWN_LAYER = {"orjson": "json", "_json": "json", "_socket": "socket calls (kernel)"}


def layer_of(func: tuple[str, int, str]) -> str | None:
    """The layer of a profiled function, or None for a C function (charged to callers)."""
    filename, _, name = func
    if filename == "~":
        for marker, layer in OWN_LAYER.items():
            if marker in name:
                return layer
        return None
    for layer, markers in LAYERS:
        if any(marker in filename for marker in markers):
            return layer
    return "other Python"


def by_layer(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of own time per layer; a C function's time goes to its callers' layers."""
    totals: dict[str, float] = defaultdict(float)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for func, (_, _, own, _, callers) in table.items():
        layer = layer_of(func)
        if layer is not None:
            totals[layer] += own
            continue
        if not callers:
            totals["other C"] += own
            continue
        for caller, (_, _, caller_own, _) in callers.items():
            # cProfile records, per caller, the time spent in this function for it.
            totals[layer_of(caller) or "other C"] += caller_own
    return totals


async def profiled(kind: str, base_url: str, n: int, out: str) -> None:
    settle_allocator()
    job = await CLIENTS[kind](base_url, n)  # includes a warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    ok = await job()
    profiler.disable()
    if ok != n:
        raise SystemExit(f"{kind}: {ok} of {n} requests succeeded")
    profiler.dump_stats(out)


def run_child(kind: str, base_url: str, n: int, use_uvloop: bool, out: str) -> None:
    loop = ["--uvloop"] if use_uvloop else []
    subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "--child", kind, base_url, str(n), out,
         *loop],
        check=True,
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, base_url, n, out = argv[1], argv[2], int(argv[3]), argv[4]
        run_loop(profiled(kind, base_url, n, out), "--uvloop" in argv[5:])
        return {}
    parser = argparse.ArgumentParser(prog="python -m benchmarks profile")
    parser.add_argument("--client", default="aiodots create_many", choices=sorted(RAW_OF))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--top", type=int, default=15, help="aiodots' costliest functions")
    args = parser.parse_args(argv)
    import tempfile

    kinds = [args.client, RAW_OF[args.client]]
    per_request: dict[str, dict[str, float]] = {}
    stats: dict[str, pstats.Stats] = {}
    with tempfile.TemporaryDirectory() as tmp, emulator_process() as base_url:
        for kind in dict.fromkeys(kinds):
            out = f"{tmp}/{kind.replace(' ', '_')}.prof"
            run_child(kind, base_url, args.requests, args.uvloop, out)
            stats[kind] = pstats.Stats(out)
            per_request[kind] = {
                layer: seconds / args.requests * 1e6
                for layer, seconds in by_layer(stats[kind]).items()
            }
    mine, raw = per_request[args.client], per_request[kinds[1]]
    layers = sorted(set(mine) | set(raw), key=lambda k: -max(mine.get(k, 0), raw.get(k, 0)))
    print(f"CPU us per request under cProfile, {args.requests} requests, concurrency 100"
          f"{', uvloop' if args.uvloop else ''}")
    print(f"{'layer':<32} {args.client:>22} {kinds[1]:>22} {'difference':>11}")
    for layer in layers:
        a, b = mine.get(layer, 0.0), raw.get(layer, 0.0)
        print(f"{layer:<32} {a:>22.1f} {b:>22.1f} {a - b:>+11.1f}")
    total_a, total_b = sum(mine.values()), sum(raw.values())
    print(f"{'total':<32} {total_a:>22.1f} {total_b:>22.1f} {total_a - total_b:>+11.1f}"
          f"   ({total_a / total_b:.2f}x)")
    if args.top:
        print(f"\n{args.client}: the {args.top} aiodots functions with the most own time")
        table: dict[Any, Any] = stats[args.client].stats  # type: ignore[attr-defined]
        own = sorted(
            ((tt, func) for func, (_, _, tt, _, _) in table.items()
             if (layer_of(func) or "").startswith(("aiodots", "cattrs"))),
            reverse=True,
        )[: args.top]
        for seconds, (filename, line, name) in own:
            short = filename.split("/aiodots/", 1)[-1]
            print(f"  {seconds / args.requests * 1e6:>7.2f} us  {short}:{line} {name}")
    return per_request


if __name__ == "__main__":
    main()
