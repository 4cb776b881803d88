"""`--redis URL` on the command line: processes on one API key under one limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pytest_redis.executor import RedisExecutor

from aiodots.testing import DotsEmulator

from .redis_fixtures import url_of
from .test_cli import run_cli
from .test_payout_jobs import make_users

pytestmark = pytest.mark.slow


def _most_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best = start = 0
    for end, t in enumerate(stamps):
        while t - stamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_two_bulk_runs_with_redis_share_their_rate(
    dots_emulator: DotsEmulator, redis_server: RedisExecutor, redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """(`redis_client` empties the server first.)"""
    async def bulk(name: str) -> tuple[int, str, str]:
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps({"steps": "compliance"}) + "\n" for _ in range(45)))
        return await run_cli(
            dots_emulator, "flows", "bulk", str(source), "-o", str(tmp_path / f"{name}.out"),
            "--rate", "30", "--concurrency", "10", "--redis", url_of(redis_server),
        )

    results = await asyncio.gather(bulk("one"), bulk("two"))
    assert [code for code, _, _ in results] == [0, 0], results
    assert dots_emulator.stats.created == 90
    # --rate is the two processes' combined rate: 30/s together, not 30/s each.
    assert _most_in_window(list(dots_emulator.stats.arrivals), 1.0) <= 30 + 1 + 1 + 2


async def test_redis_without_a_usable_url_is_a_usage_error(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"steps": "compliance"}) + "\n")
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", str(source), "-o", str(tmp_path / "out"),
        "--redis", "not-a-url",
    )
    assert code == 2
    assert "--redis" in err
    assert dots_emulator.stats.requests == 0


async def test_demo_with_workers_and_redis_compares_both_combined_rates(
    redis_server: RedisExecutor, redis_client: aioredis.Redis
) -> None:
    code, out, err = await run_cli(
        None, "demo", "--workers", "2", "--flows", "200", "--error-rate", "0",
        "--reset-rate", "0", "--reset-after-rate", "0", "--redis", url_of(redis_server),
    )
    assert code == 0, err
    assert "2 processes each with its own limiter: 200 ok, 0 failed" in out
    assert "2 processes sharing one limit through Redis: 200 ok, 0 failed" in out
    assert "Redis round trips per request" in out
    assert out.count("the emulator created 200 flows, 0 twice") == 2


async def test_payouts_bulk_with_redis_shares_the_combined_rate(
    dots_emulator: DotsEmulator, redis_server: RedisExecutor, redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    users = await make_users(dots_emulator, 40)
    dots_emulator.reset_stats()  # count only what the bulk run sends
    source = tmp_path / "pay.csv"
    source.write_text("user_id,amount,platform\n" + "".join(f"{u},100,paypal\n" for u in users))
    code, _, err = await run_cli(
        dots_emulator, "payouts", "bulk", str(source), "-o", str(tmp_path / "out.jsonl"),
        "--rate", "20", "--concurrency", "10", "--redis", url_of(redis_server),
    )
    assert code == 0, err
    assert dots_emulator.stats.created_by_resource["payouts"] == 40
    assert _most_in_window(list(dots_emulator.stats.arrivals), 1.0) <= 20 + 1 + 1 + 2
    assert await redis_client.keys("aiodots:ratelimit*")
