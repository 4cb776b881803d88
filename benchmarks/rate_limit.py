"""How close to a server's rate limit a bulk job runs, and how many 429s it causes.

    python -m benchmarks.rate_limit [--requests 3000] [--rate 200] [--burst 20]

The emulator (its own process) allows `rate` requests/s with a token bucket of `burst`.
The client creates `requests` flows at concurrency 100 with no rate configured (it must
find the limit itself), once per Retry-After form the server may use, once per form
of rate-limit headers in which the server may announce its limit, and once with
`rate_limit=` set just under the server's limit. Reported: the achieved rate as a
fraction of the limit (target >= 0.9) and the share of requests answered 429 (target
<= 2%).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiodots

from ._emulator import emulator_process

CONCURRENCY = 100


async def run_job(base_url: str, n: int, rate_limit: float | None) -> dict[str, Any]:
    async with aiodots.Client(
        "emulator-client-id", "emulator-api-key", base_url=base_url, rate_limit=rate_limit,
        max_retries=8,
    ) as dots:
        started = time.monotonic()
        ok = failed = 0
        async for item in dots.flows.create_many(
            ({"steps": ["compliance"]} for _ in range(n)), concurrency=CONCURRENCY
        ):
            if item.ok:
                ok += 1
            else:
                failed += 1
        elapsed = time.monotonic() - started
        stats = dots.stats
        return {
            "ok": ok,
            "failed": failed,
            "elapsed": elapsed,
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
        }


def scenario(name: str, server_args: list[str], n: int, limit: float,
             rate_limit: float | None) -> dict[str, Any]:
    with emulator_process(*server_args) as base_url:
        result = asyncio.run(run_job(base_url, n, rate_limit))
    result["name"] = name
    result["achieved"] = result["ok"] / result["elapsed"]
    result["fraction"] = result["achieved"] / limit
    result["share_429"] = result["rate_limited"] / result["requests"]
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_limit")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args(argv)
    server = ["--rate-limit", str(args.rate), "--burst", str(args.burst)]
    rows = [
        scenario("adaptive, no Retry-After", [*server, "--retry-after", "none"],
                 args.requests, args.rate, None),
        scenario("adaptive, Retry-After: secs", [*server, "--retry-after", "seconds"],
                 args.requests, args.rate, None),
        scenario("adaptive, Retry-After: date", [*server, "--retry-after", "http-date"],
                 args.requests, args.rate, None),
        scenario("announced, X-RateLimit-*", [*server, "--retry-after", "seconds",
                                               "--limit-headers", "x-ratelimit"],
                 args.requests, args.rate, None),
        scenario("announced, IETF RateLimit", [*server, "--retry-after", "seconds",
                                                "--limit-headers", "ietf"],
                 args.requests, args.rate, None),
        scenario(f"rate_limit={args.rate * 0.95:g}", [*server, "--retry-after", "seconds"],
                 args.requests, args.rate, args.rate * 0.95),
    ]
    print(f"server limit {args.rate:g}/s (burst {args.burst}), {args.requests} creates, "
          f"concurrency {CONCURRENCY}")
    print(f"{'client':<30} {'ok':>6} {'failed':>6} {'secs':>6} {'req/s':>7} "
          f"{'of limit':>8} {'429s':>5} {'429 share':>9}")
    for r in rows:
        print(
            f"{r['name']:<30} {r['ok']:>6} {r['failed']:>6} {r['elapsed']:>6.1f} "
            f"{r['achieved']:>7.1f} {r['fraction']:>8.3f} {r['rate_limited']:>5} "
            f"{r['share_429']:>8.2%}"
        )
    return rows


if __name__ == "__main__":
    main()
