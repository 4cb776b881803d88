"""`python -m benchmarks`: every benchmark in turn, each printing its table.

    python -m benchmarks            # throughput (asyncio, uvloop), rate limits, memory: ~15 min
    python -m benchmarks --all      # also instruction counts (needs valgrind, 25 more)
    python -m benchmarks profile    # where one request's time goes, layer by layer
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

from . import instructions, memory, profile, rate_limit, redis_limit, throughput


def main(argv: list[str]) -> None:
    if argv[:1] == ["profile"]:
        profile.main(argv[1:])
        return
    print("== throughput: aiodots vs raw aiohttp vs httpx", flush=True)
    throughput.main([])
    if importlib.util.find_spec("uvloop") is not None:
        print("\n== throughput on uvloop, raw aiohttp on uvloop too", flush=True)
        throughput.main(["--uvloop", "--skip-httpx"])
    print("\n== rate limit: an emulator limited to 200 requests/s", flush=True)
    rate_limit.main([])
    print("\n== one limit across 4 processes, with and without Redis", flush=True)
    redis_limit.main([])
    print("\n== memory: peak RSS, 10k vs 100k lazily generated requests", flush=True)
    memory.main([])
    if "--all" in argv:
        if shutil.which("valgrind") is None:
            print("\n(valgrind not installed: instruction counts skipped)")
        else:
            print("\n== instructions per request (callgrind)", flush=True)
            instructions.main([])
            if importlib.util.find_spec("uvloop") is not None:
                print("\n== instructions per request on uvloop (callgrind)", flush=True)
                instructions.main(["--uvloop"])


if __name__ == "__main__":
    main(sys.argv[1:])
