"""A real redis-server for the shared limiter's tests, started by pytest-redis.

pytest-redis starts `redis-server` on 127.0.0.1 on a free port in a temporary folder
and stops it after the session. Its own `redis_proc` looks for the binary at a fixed
path and errors where it is missing; these fixtures find it on PATH, and skip with the
reason where it is not installed. Import the fixtures a test module needs from here.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from pytest_redis import factories
from pytest_redis.executor import RedisExecutor

REDIS_SERVER = shutil.which("redis-server")
MISSING = (
    "redis-server is not installed (Debian: apt-get install redis-server); the shared "
    "rate limiter's tests need a real one"
)

# Session-scoped servers: one for every test, and one that a test may stop and restart.
# A free port picked at random from a range well above the usual services'.
_PORTS = (20000, 60000)
_shared_proc = factories.redis_proc(executable=REDIS_SERVER or "redis-server", port=_PORTS)
_restartable_proc = factories.redis_proc(executable=REDIS_SERVER or "redis-server", port=_PORTS)


def url_of(proc: RedisExecutor) -> str:
    return f"redis://{proc.host}:{proc.port}/0"


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> RedisExecutor:
    """The session's redis-server."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    proc: RedisExecutor = request.getfixturevalue("_shared_proc")
    return proc


@pytest.fixture
def restartable_redis(request: pytest.FixtureRequest) -> Iterator[RedisExecutor]:
    """A redis-server of its own that the test may `stop()` and `start()` again (it is
    running again, and empty, after the test)."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    proc: RedisExecutor = request.getfixturevalue("_restartable_proc")
    yield proc
    if not proc.running():
        proc.start()


@pytest.fixture
async def redis_client(redis_server: RedisExecutor) -> AsyncIterator[aioredis.Redis]:
    """A client on the session's server, emptied first so each test starts clean."""
    client = aioredis.Redis.from_url(url_of(redis_server))
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


__all__ = [
    "_restartable_proc",
    "_shared_proc",
    "redis_client",
    "redis_server",
    "restartable_redis",
    "url_of",
]
