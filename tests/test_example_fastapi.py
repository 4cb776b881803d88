"""examples/fastapi_shared_limit.py for real: two uvicorn workers on 127.0.0.1, the
emulator and a real redis-server. The workers together stay under the one limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from pytest_redis.executor import RedisExecutor

from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit

from .network_fixtures import free_port, stop_process
from .redis_fixtures import url_of

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LIMIT = 20  # the app's shared limit, requests/s


@contextlib.asynccontextmanager
async def uvicorn_app(env: dict[str, str], workers: int) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "fastapi_shared_limit:app", "--app-dir",
        str(EXAMPLES), "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:  # until a worker answers (every route but /onboard is a 404)
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/ready"):
                        break
                assert proc.returncode is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                await asyncio.sleep(0.2)
        yield url
    finally:
        await stop_process(proc)


async def test_two_uvicorn_workers_share_one_limit(
    dots_emulator: DotsEmulator, redis_server: RedisExecutor, redis_client: aioredis.Redis
) -> None:
    """(`redis_client` empties the server first.)"""
    # The server allows a little more than the app's limit (and a burst of 10: on a
    # loaded machine a worker's event loop may send a few late slots at once): a 429
    # here means the two workers added their limits up.
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(rate=LIMIT + 4, burst=10)))
    env = {
        "DOTS_CLIENT_ID": dots_emulator.client_id, "DOTS_API_KEY": dots_emulator.api_key,
        "DOTS_BASE_URL": dots_emulator.base_url, "DOTS_REDIS_URL": url_of(redis_server),
        "DOTS_RATE_LIMIT": str(LIMIT),
    }
    async with uvicorn_app(env, workers=2) as url:
        dots_emulator.stats.arrivals.clear()
        # A new connection per request, so that both workers take their share.
        connector = aiohttp.TCPConnector(force_close=True, limit=40)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def onboard(n: int) -> dict[str, object]:
                async with session.post(f"{url}/onboard", json={"user_id": str(uuid.uuid4())}) as r:
                    assert r.status == 200, await r.text()
                    body: dict[str, object] = await r.json()
                    return body

            answers = await asyncio.gather(*(onboard(n) for n in range(60)))

    assert len({a["worker"] for a in answers}) == 2  # both workers served
    assert dots_emulator.stats.created == 60
    assert dots_emulator.stats.by_status.get(429, 0) == 0
    arrivals = sorted(dots_emulator.stats.arrivals)
    most = max(
        sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals
    )
    assert most <= LIMIT + 1 + 1 + 2  # rate * 1 s + burst + 1, and a little clock slack
    assert arrivals[-1] - arrivals[0] >= (60 - LIMIT - 2) / LIMIT  # it did wait
