"""`python -m benchmarks`: every benchmark in turn, each printing its table.

    python -m benchmarks            # throughput, rate limits, memory (about 9 minutes)
    python -m benchmarks --all      # also instruction counts (needs valgrind, 2 more)
"""

from __future__ import annotations

import shutil
import sys

from . import instructions, memory, rate_limit, redis_limit, throughput


def main(argv: list[str]) -> None:
    print("== throughput: aiodots vs raw aiohttp vs httpx", flush=True)
    throughput.main([])
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


if __name__ == "__main__":
    main(sys.argv[1:])
