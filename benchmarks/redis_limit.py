"""N processes on one API key against one server limit, with and without Redis.

    python -m benchmarks.redis_limit [--processes 4] [--requests 6000] [--rate 200]

The emulator (its own process) allows `rate` requests/s with a token bucket of `burst`
and answers 429 with `Retry-After` in seconds. `processes` fresh processes start
together, each creating `requests / processes` flows at concurrency 50 with a client of
its own: once each with its own in-memory limiter (what N processes get without Redis),
once sharing a `RedisRateLimiter` on a redis-server started for the run. Each way both
with no rate set (the limiters find the limit from 429s) and with a ceiling of 0.98 of
the limit (with Redis the processes' combined rate; without, each process's own).
Reported: the combined rate as a fraction of the limit (target with Redis and a ceiling:
>= 0.95), the share answered 429 (target <= 1%), and Redis round trips per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiodots.testing import DEFAULT_API_KEY, DEFAULT_CLIENT_ID
from aiodots.testing.workers import Summary, WorkerPlan, run_workers, summary

from ._emulator import emulator_process
from ._redis import redis_server

CONCURRENCY = 50
CEILING_SHARE = 0.98


def scenario(base_url: str, processes: int, requests: int, redis_url: str | None,
             ceiling: float | None, name: str) -> Summary:
    start_at = time.time() + 3.0  # room for every process to start and import
    plans = [
        WorkerPlan(
            base_url=base_url, client_id=DEFAULT_CLIENT_ID, api_key=DEFAULT_API_KEY,
            flows=requests // processes, concurrency=CONCURRENCY, start_at=start_at,
            redis_url=redis_url, redis_name=f"bench:{name}", ceiling=ceiling,
        )
        for _ in range(processes)
    ]
    return summary(asyncio.run(run_workers(plans)))


def main(argv: list[str] | None = None) -> list[tuple[str, Summary]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_limit")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args(argv)
    server = ["--rate-limit", str(args.rate), "--burst", str(args.burst),
              "--retry-after", "seconds"]
    ceiling = args.rate * CEILING_SHARE
    rows: list[tuple[str, Summary]] = []
    with redis_server() as redis_url:
        runs: list[tuple[str, str | None, float | None]] = [
            ("no Redis, adaptive", None, None),
            (f"no Redis, rate_limit={ceiling:g} each", None, ceiling),
        ]
        if redis_url is None:
            print("(redis-server not installed: the Redis rows are skipped)")
        else:
            runs += [("Redis, adaptive", redis_url, None),
                     (f"Redis, ceiling={ceiling:g}", redis_url, ceiling)]
        for number, (name, url, limit) in enumerate(runs):
            # A fresh emulator per run: its bucket starts full each time.
            with emulator_process(*server) as base_url:
                rows.append((name, scenario(base_url, args.processes, args.requests, url,
                                            limit, f"run{number}")))
    print(f"server limit {args.rate:g}/s (burst {args.burst}, Retry-After in seconds), "
          f"{args.processes} processes x {args.requests // args.processes} creates, "
          f"concurrency {CONCURRENCY} each")
    print(f"{'processes share':<32} {'ok':>6} {'failed':>6} {'secs':>6} {'req/s':>7} "
          f"{'of limit':>8} {'429s':>5} {'429 share':>9} {'redis/req':>9}")
    for name, s in rows:
        print(
            f"{name:<32} {s.ok:>6} {s.failed:>6} {s.seconds:>6.1f} {s.rate:>7.1f} "
            f"{s.rate / args.rate:>8.3f} {s.rate_limited:>5} {s.share_429:>8.2%} "
            f"{s.round_trips_per_request:>9.3f}"
        )
    return rows


if __name__ == "__main__":
    main()
