"""Peak memory of `create_many` over N lazily generated requests.

    python -m benchmarks.memory 10000 100000

Each N runs in a fresh process against one emulator process; the figure is that
process's peak RSS, so the input, the batch engine, the client and aiohttp all count.
A flat engine shows the same peak for 10,000 and 100,000 requests.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator

import aiodots

from ._emulator import emulator_process

CONCURRENCY = 64


def requests(n: int) -> Iterator[aiodots.CreateFlow]:
    for _ in range(n):
        yield aiodots.CreateFlow(steps=["compliance"], user_id=str(uuid.uuid4()))


async def run(base_url: str, n: int) -> dict[str, int]:
    ok = failed = 0
    async with aiodots.Client(
        "emulator-client-id", "emulator-api-key", base_url=base_url
    ) as dots:
        async for item in dots.flows.create_many(requests(n), concurrency=CONCURRENCY):
            if item.ok:
                ok += 1
            else:
                failed += 1
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"n": n, "ok": ok, "failed": failed, "peak_rss_kib": peak_kib}


def measure(base_url: str, n: int) -> dict[str, int]:
    """One fresh process per N, so one run's peak cannot hide in another's."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", base_url, str(n)],
        check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(asyncio.run(run(argv[1], int(argv[2])))))
        return
    sizes = [int(a) for a in argv] or [10_000, 100_000]
    with emulator_process() as base_url:
        results = [measure(base_url, n) for n in sizes]
    base = results[0]["peak_rss_kib"]
    print(f"{'requests':>10} {'ok':>8} {'failed':>6} {'peak RSS MiB':>13} {'vs first':>9}")
    for r in results:
        print(
            f"{r['n']:>10} {r['ok']:>8} {r['failed']:>6} {r['peak_rss_kib'] / 1024:>13.1f}"
            f" {(r['peak_rss_kib'] - base) / 1024:>+8.1f}M"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
