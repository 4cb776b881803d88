"""Several processes creating flows against one API (the emulator, usually), each with a
client of its own, sharing one Redis rate limit or not.

What `aiodots demo --workers N` and `benchmarks/redis_limit.py` run: the way to see N
processes on one API key meet (or not meet) its limit together.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING

import attrs

from aiodots.client import Client

if TYPE_CHECKING:
    from aiodots.contrib.redis import RedisRateLimiter

__all__ = ["Summary", "WorkerPlan", "WorkerResult", "run_workers", "summary"]


@attrs.frozen
class WorkerPlan:
    """One process's job. `ceiling`: with `redis_url`, the rate of all the processes
    together; without, this process's own `rate_limit`. `start_at` (time.time()) lines
    every process up on one start, whatever each one's start-up took."""

    base_url: str
    client_id: str
    api_key: str = attrs.field(repr=False)
    flows: int
    concurrency: int
    start_at: float
    redis_url: str | None = None
    redis_name: str = "aiodots:ratelimit"
    ceiling: float | None = None
    max_retries: int = 8


@attrs.frozen
class WorkerResult:
    ok: int
    failed: int
    requests: int
    rate_limited: int
    started: float  # time.time()
    finished: float
    round_trips: int  # to Redis; 0 without it


async def run_workers(plans: Sequence[WorkerPlan]) -> list[WorkerResult]:
    """Run each plan in a fresh process (spawned, so nothing of this one is shared) and
    return their results; the event loop keeps running meanwhile (an in-process emulator
    goes on serving)."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=len(plans), mp_context=get_context("spawn")) as pool:
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, run_worker, p) for p in plans))
        )


def run_worker(plan: WorkerPlan) -> WorkerResult:
    return asyncio.run(_work(plan))


async def _work(plan: WorkerPlan) -> WorkerResult:
    limiter: RedisRateLimiter | None = None
    if plan.redis_url:
        from aiodots.contrib.redis import RedisRateLimiter

        limiter = RedisRateLimiter(plan.redis_url, name=plan.redis_name, ceiling=plan.ceiling)
    client = Client(
        plan.client_id, plan.api_key, base_url=plan.base_url, max_retries=plan.max_retries,
        rate_limit=None if plan.redis_url else plan.ceiling, rate_limiter=limiter,
    )
    requests = ({"steps": ["compliance"], "user_id": str(uuid.uuid4())} for _ in range(plan.flows))
    ok = failed = 0
    await asyncio.sleep(max(0.0, plan.start_at - time.time()))
    started = time.time()
    try:
        async with client:
            async for item in client.flows.create_many(requests, concurrency=plan.concurrency):
                ok += item.ok
                failed += not item.ok
    finally:
        round_trips = limiter.round_trips if limiter is not None else 0
        if limiter is not None:
            await limiter.aclose()
    return WorkerResult(
        ok=ok, failed=failed, requests=client.stats.requests,
        rate_limited=client.stats.rate_limited, started=started, finished=time.time(),
        round_trips=round_trips,
    )


@attrs.frozen
class Summary:
    ok: int
    failed: int
    requests: int
    rate_limited: int
    seconds: float
    rate: float  # successes per second, all processes together
    share_429: float
    round_trips_per_request: float


def summary(results: Sequence[WorkerResult]) -> Summary:
    """The processes together: from the first start to the last finish."""
    seconds = max(r.finished for r in results) - min(r.started for r in results)
    ok = sum(r.ok for r in results)
    requests = sum(r.requests for r in results)
    rate_limited = sum(r.rate_limited for r in results)
    return Summary(
        ok=ok, failed=sum(r.failed for r in results), requests=requests,
        rate_limited=rate_limited, seconds=seconds, rate=ok / seconds if seconds else 0.0,
        share_429=rate_limited / requests if requests else 0.0,
        round_trips_per_request=sum(r.round_trips for r in results) / requests if requests else 0.0,
    )
