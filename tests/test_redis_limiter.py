"""`RedisRateLimiter`: one limit for many processes, on a real redis-server.

Each limiter below has its own Redis connection, exactly as separate processes would:
Redis sees no difference. Time is real (the script reads Redis's clock), so counts are
checked against generous bounds; what matters is that the limit is shared at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from pytest_redis.executor import RedisExecutor

import aiodots
from aiodots.contrib.redis import RateLimiterUnavailableError, RedisRateLimiter
from aiodots.ratelimit import BoundedLimiter, WaitTooLong
from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit

from .redis_fixtures import url_of

Factory = Callable[..., RedisRateLimiter]


@pytest.fixture
async def limiters(
    redis_server: RedisExecutor, redis_client: aioredis.Redis
) -> AsyncIterator[Factory]:
    """Makes limiters on the session's (emptied) server, each with its own connection (a
    process of its own, as far as Redis can tell), and closes them after the test."""
    made: list[RedisRateLimiter] = []
    url = url_of(redis_server)

    def make(**kwargs: object) -> RedisRateLimiter:
        kwargs.setdefault("name", "test")
        limiter = RedisRateLimiter(url, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def _acquire_for(limiters: list[RedisRateLimiter], seconds: float,
                       tasks_each: int) -> list[float]:
    """Every limiter's tasks acquire in a loop until `seconds` have passed; returns the
    moment of each acquire (the last ones may land just past the end)."""
    stamps: list[float] = []
    end = time.monotonic() + seconds

    async def worker(limiter: RedisRateLimiter) -> None:
        while time.monotonic() < end:
            await limiter.acquire()
            stamps.append(time.monotonic())

    await asyncio.gather(*(worker(lim) for lim in limiters for _ in range(tasks_each)))
    return stamps


def _most_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best = start = 0
    for end, t in enumerate(stamps):
        while t - stamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _rate(limiter: RedisRateLimiter) -> float | None:
    return limiter.rate  # read through a call: mypy must not narrow it between reads


def _falls_back(limiter: RedisRateLimiter) -> bool:
    return limiter.using_fallback


async def test_processes_share_one_ceiling(limiters: Factory) -> None:
    three = [limiters(ceiling=aiodots.RateLimit(40, burst=2)) for _ in range(3)]
    stamps = await _acquire_for(three, 1.5, tasks_each=10)
    # 40/s for the three together, not 40/s each: in any second at most 40 + burst + 1
    # (and a little for the clock of one machine against Redis's).
    assert _most_in_window(stamps, 1.0) <= 40 + 2 + 1 + 2
    assert len(stamps) >= 40  # and they did share it (generous: the machine is loaded)


async def test_a_busy_process_needs_fewer_round_trips_than_acquires(limiters: Factory) -> None:
    busy = limiters(ceiling=200)
    stamps = await _acquire_for([busy], 1.0, tasks_each=50)
    assert busy.round_trips < len(stamps) / 2


async def test_contending_processes_need_no_more_round_trips_than_acquires(
    limiters: Factory,
) -> None:
    three = [limiters(ceiling=aiodots.RateLimit(60, burst=1)) for _ in range(3)]
    stamps = await _acquire_for(three, 1.0, tasks_each=10)
    assert sum(limiter.round_trips for limiter in three) <= len(stamps)


async def test_one_call_at_a_time_is_one_round_trip_each(limiters: Factory) -> None:
    single = limiters(ceiling=1000)
    for _ in range(5):
        await single.acquire()
    assert single.round_trips == 5


async def test_a_429_with_retry_after_in_one_process_pauses_the_others(
    limiters: Factory,
) -> None:
    first, second = limiters(ceiling=100), limiters(ceiling=100)
    await first.acquire()
    await second.acquire()
    first.on_response(429, first.now(), 0.6)
    await asyncio.sleep(0.05)  # the report goes out on its own, without waiting for a call
    waited = await second.acquire()
    assert 0.4 <= waited <= 2.0


async def test_a_pause_from_another_process_past_this_ones_max_retry_after_fails_fast(
    limiters: Factory, dots_emulator: DotsEmulator
) -> None:
    """A bulk job that accepts a 300 s Retry-After told Redis of its pause, and a web
    worker on the same key that accepts 30 s waited the 300 s out."""
    job, worker = limiters(ceiling=100), limiters(ceiling=100)
    for limiter in (job, worker):
        limiter.bind_credentials(**dots_emulator.credentials)
    await job.acquire()
    job.on_response(429, job.now(), 300.0)
    await asyncio.sleep(0.05)  # told to Redis
    assert isinstance(worker, BoundedLimiter)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, rate_limiter=worker,
        max_retry_after=30,
    ) as dots, asyncio.timeout(5):
        with pytest.raises(aiodots.RateLimitError, match="Retry-After pause") as caught:
            await dots.flows.create(steps=["payout"])
        # ... and while this process knows of the pause already, as at once
        with pytest.raises(aiodots.RateLimitError):
            await dots.flows.create(steps=["payout"])
    assert caught.value.retry_after is not None
    assert 290 <= caught.value.retry_after <= 300
    assert dots_emulator.stats.requests == 0
    with pytest.raises(WaitTooLong):  # the job's own wait, had it accepted less
        await job.acquire_within(60)


async def test_a_429_in_one_process_lowers_the_rate_of_all(limiters: Factory) -> None:
    first, second = limiters(), limiters()  # no ceiling: unthrottled until a 429
    await first.acquire()
    await second.acquire()
    assert _rate(second) is None
    for _ in range(20):
        first.on_response(200, first.now(), None)
    first.on_response(429, first.now(), None)
    await asyncio.sleep(0.05)
    await second.acquire()
    assert _rate(second) is not None  # the shared rate: now throttled for everyone
    assert second.decreases == first.decreases == 1


async def test_a_429_sent_before_the_cut_does_not_cut_again(limiters: Factory) -> None:
    first, second = limiters(ceiling=100), limiters(ceiling=100)
    await second.acquire()
    sent_before = first.now()
    await first.acquire()
    first.on_response(429, first.now(), None)
    await asyncio.sleep(0.05)
    second.on_response(429, sent_before, None)  # an echo of the same overload
    await asyncio.sleep(0.05)
    await second.acquire()
    assert second.decreases == 1
    assert second.rate is not None
    assert 90.0 <= second.rate < 96.0  # cut once to 90%, recovering; twice would be 81


async def test_a_429_sent_well_after_the_cut_cuts_again(limiters: Factory) -> None:
    first, second = limiters(ceiling=100), limiters(ceiling=100)
    await second.acquire()
    await first.acquire()
    first.on_response(429, first.now(), None)
    await asyncio.sleep(0.3)  # past the reservation horizon: the cut was not enough
    second.on_response(429, second.now(), None)
    await asyncio.sleep(0.05)
    await second.acquire()
    assert second.decreases == 2


async def test_a_lower_ceiling_applies_at_once_to_a_rate_already_in_redis(
    limiters: Factory,
) -> None:
    earlier = limiters(ceiling=100)
    await earlier.acquire()
    earlier.on_response(429, earlier.now(), None)  # adapted: 90/s in Redis
    await asyncio.sleep(0.05)
    again = limiters(ceiling=10)  # the job run again, with a lower --rate
    await again.acquire()
    assert again.rate == 10.0
    unthrottled = limiters()  # and without one: the adapted rate stays
    await unthrottled.acquire()
    assert unthrottled.rate is not None
    assert unthrottled.rate >= 90.0


async def test_cancelled_waiters_do_not_stall_the_others(limiters: Factory) -> None:
    limiter = limiters(ceiling=aiodots.RateLimit(20, burst=1))
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(10)]
    await asyncio.sleep(0.03)
    for task in tasks[:5]:
        task.cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks[5:]), timeout=5)
    assert len(done) == 5
    await asyncio.gather(*tasks[:5], return_exceptions=True)


async def test_redis_never_holds_the_api_key(
    redis_server: RedisExecutor, redis_client: aioredis.Redis
) -> None:
    async with DotsEmulator() as emulator:
        creds = emulator.credentials
        url = url_of(redis_server)
        async with RedisRateLimiter(url) as limiter, aiodots.Client(
            **creds, base_url=emulator.base_url, rate_limiter=limiter
        ) as dots:
            await dots.flows.create(steps=["compliance"])
            assert url not in repr(limiter)
    secret = creds["api_key"].encode()
    keys = await redis_client.keys("*")
    digest = hashlib.sha256(f"{creds['client_id']}:{creds['api_key']}".encode()).hexdigest()
    assert keys
    assert all(digest[:32].encode() in key for key in keys)
    for key in keys:
        assert secret not in key
        assert secret not in (await redis_client.dump(key) or b"")


def test_a_limiter_serves_one_api_key() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    limiter.bind_credentials("id", "key-one")
    limiter.bind_credentials("id", "key-one")
    with pytest.raises(ValueError, match="other credentials"):
        limiter.bind_credentials("id", "key-two")


async def test_keys_of_two_api_keys_are_apart(limiters: Factory) -> None:
    one, two = limiters(ceiling=aiodots.RateLimit(1, burst=1)), limiters(ceiling=1)
    one.bind_credentials("id", "key-one")
    two.bind_credentials("id", "key-two")
    assert await one.acquire() < 0.5
    assert await two.acquire() < 0.5  # a bucket of its own: not held by the first


# -- Redis going away ---------------------------------------------------------------------


async def test_redis_down_falls_back_to_this_process_share_and_comes_back(
    restartable_redis: RedisExecutor,
) -> None:
    url = url_of(restartable_redis)
    async with RedisRateLimiter(url, name="down", ceiling=aiodots.RateLimit(40, 4)) as one, \
            RedisRateLimiter(url, name="down", ceiling=aiodots.RateLimit(40, 4)) as two:
        one.RECONNECT_SECONDS = two.RECONNECT_SECONDS = 0.5
        await one.acquire()
        await two.acquire()
        await one.acquire()  # by now Redis has seen both alive
        assert one.live_processes == 2

        restartable_redis.stop()
        stamps = await _acquire_for([one], 1.2, tasks_each=10)
        assert _falls_back(one)
        assert one.rate == pytest.approx(20.0)  # its share: 40/s between two processes
        assert _most_in_window(stamps, 1.0) <= 20 + 2 + 1 + 1  # never unlimited
        assert len(stamps) >= 10

        restartable_redis.start()
        trips = one.round_trips
        await asyncio.sleep(0.6)  # past the next reconnect attempt
        for _ in range(3):
            await one.acquire()
        assert not _falls_back(one)
        assert one.round_trips > trips


async def test_a_bulk_job_goes_on_under_its_share_while_redis_restarts(
    restartable_redis: RedisExecutor,
) -> None:
    seen_fallback = False

    async def outage() -> None:
        nonlocal seen_fallback
        # In a thread: stopping and starting the server wait for it, and a blocked event
        # loop would bunch the job's sends up when it runs again.
        await asyncio.sleep(0.5)
        await asyncio.to_thread(restartable_redis.stop)
        for _ in range(20):  # the job's calls find Redis gone
            await asyncio.sleep(0.05)
            seen_fallback = seen_fallback or limiter.using_fallback
        await asyncio.to_thread(restartable_redis.start)

    async with DotsEmulator() as emulator:
        limiter = RedisRateLimiter(url_of(restartable_redis), name="bulk", ceiling=50)
        async with limiter, aiodots.Client(
            **emulator.credentials, base_url=emulator.base_url, rate_limiter=limiter
        ) as dots:
            stop_and_start = asyncio.create_task(outage())
            oks = [item.ok async for item in dots.flows.create_many(
                ({"steps": ["compliance"]} for _ in range(160)), concurrency=10
            )]
            await stop_and_start
            back = not limiter.using_fallback  # 3 s at 50/s: Redis returned at 1.5 s
    assert seen_fallback
    assert back
    assert oks == [True] * 160
    assert emulator.stats.created == 160
    # Before, during and after the outage: never more than the one limit (a lone
    # process's share is all of it).
    assert _most_in_window(list(emulator.stats.arrivals), 1.0) <= 50 + 1 + 1 + 2


async def test_redis_down_with_raise_fails_the_call_and_sends_nothing(
    restartable_redis: RedisExecutor,
) -> None:
    async with DotsEmulator() as emulator:
        limiter = RedisRateLimiter(url_of(restartable_redis), name="raise",
                                   on_redis_error="raise")
        async with limiter, aiodots.Client(
            **emulator.credentials, base_url=emulator.base_url, rate_limiter=limiter
        ) as dots:
            await dots.flows.create(steps=["compliance"])
            restartable_redis.stop()
            with pytest.raises(RateLimiterUnavailableError, match="unreachable"):
                await dots.flows.create(steps=["compliance"])
            assert emulator.stats.created == 1
            restartable_redis.start()
            await dots.flows.create(steps=["compliance"])  # Redis is back: so are calls
            assert emulator.stats.created == 2


# -- through clients, against the emulator ------------------------------------------------


async def test_two_clients_on_one_redis_meet_the_server_limit_together(
    redis_server: RedisExecutor, redis_client: aioredis.Redis
) -> None:
    faults = FaultPlan(rate_limit=ServerRateLimit(rate=50, burst=5, retry_after="seconds"))
    url = url_of(redis_server)
    async with DotsEmulator(faults=faults) as emulator:
        clients = [
            aiodots.Client(**emulator.credentials, base_url=emulator.base_url, max_retries=8,
                           rate_limiter=RedisRateLimiter(url, ceiling=45))
            for _ in range(2)
        ]

        async def job(dots: aiodots.Client) -> int:
            ok = 0
            async with dots:
                async for item in dots.flows.create_many(
                    ({"steps": ["compliance"]} for _ in range(45)), concurrency=20
                ):
                    ok += item.ok
                assert isinstance(dots.limiter, RedisRateLimiter)
                await dots.limiter.aclose()
            return ok

        oks = await asyncio.gather(*(job(c) for c in clients))
    assert oks == [45, 45]
    assert emulator.stats.created == 90
    # Two clients at 45/s each (90/s against 50/s) meet dozens of 429s within the first
    # second; one shared ceiling of 45/s under the server's 50/s meets none, give or take
    # one: the emulator runs in the clients' own event loop, so a stall of that loop (a
    # busy CI machine) can hand it a bunch of sends at once (seen once in many runs).
    assert emulator.stats.by_status.get(429, 0) <= 1


# -- outages: what a 429 and a pause become, and how long a silent Redis may hold a call --


async def test_a_pause_told_while_redis_is_down_holds_on_the_fallback(
    restartable_redis: RedisExecutor,
) -> None:
    """The 429's report failed with Redis, and the fallback made then never heard of it:
    the next calls went straight through the server's Retry-After."""
    async with RedisRateLimiter(url_of(restartable_redis), name="pause-down", ceiling=50) as one:
        await one.acquire()
        restartable_redis.stop()
        one.on_response(429, one.now(), 1.0)
        started = time.monotonic()
        while not _falls_back(one):  # noqa: ASYNC110 - the 429's report fails, then
            await asyncio.sleep(0.01)  # the fallback is made
        for _ in range(3):
            await asyncio.wait_for(one.acquire(), 5)
        assert _falls_back(one)
        assert time.monotonic() - started >= 0.9


async def test_a_429_on_the_fallback_reaches_redis_when_it_answers_again(
    restartable_redis: RedisExecutor,
) -> None:
    """It used to be told to the fallback alone, and dropped with it: the other
    processes sent on through the server's pause."""
    url = url_of(restartable_redis)
    async with RedisRateLimiter(url, name="pause-back", ceiling=50) as one, \
            RedisRateLimiter(url, name="pause-back", ceiling=50) as two:
        one.RECONNECT_SECONDS = 0.3
        await one.acquire()
        await two.acquire()
        restartable_redis.stop()
        await one.acquire()
        assert _falls_back(one)
        one.on_response(429, one.now(), 3.0)
        told = time.monotonic()
        restartable_redis.start()
        await asyncio.sleep(0.4)  # past the next attempt to reach Redis
        await asyncio.wait_for(one.acquire(), 10)  # back on Redis: the 429 goes with it
        assert not _falls_back(one)
        await asyncio.wait_for(two.acquire(), 10)
        assert time.monotonic() - told >= 2.8  # the other process kept the pause too


class SilentRedis:
    """A server on 127.0.0.1 that takes connections and never answers."""

    async def __aenter__(self) -> int:
        self._writers: list[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            await reader.read()  # until the client gives up

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def test_raising_callers_queued_behind_a_silent_redis_fail_together() -> None:
    """Each queued caller used to be handed the turn and wait out a timeout of its own:
    the fifth failed after ten seconds."""
    async with SilentRedis() as port:
        limiter = RedisRateLimiter(
            f"redis://127.0.0.1:{port}/0", name="silent", on_redis_error="raise"
        )
        async with limiter:
            results = await asyncio.wait_for(
                asyncio.gather(*(limiter.acquire() for _ in range(5)), return_exceptions=True),
                15,
            )
    assert all(isinstance(r, RateLimiterUnavailableError) for r in results)
    assert limiter.round_trips == 1


async def test_a_redis_client_without_timeouts_cannot_hold_a_call() -> None:
    """A client the caller made (the README allows one) may have no socket timeouts:
    a Redis that never answers held acquire() forever."""
    async with SilentRedis() as port:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        limiter = RedisRateLimiter(client, name="no-timeouts", ceiling=10)
        try:
            await asyncio.wait_for(limiter.acquire(), 10)
            assert _falls_back(limiter)
        finally:
            await limiter.aclose()
            await client.aclose()


@pytest.mark.parametrize(
    ("url", "says", "never"),
    [
        ("redis://127.0.0.1:6379/0?foo=bar", "unexpected keyword argument 'foo'", None),
        ("redis://:s3cr#tPW@127.0.0.1:6379/0", "***@127.0.0.1:6379/0", "s3cr"),
        ("redis://admin:Pa?ssWord@127.0.0.1:6379/0", "***@127.0.0.1:6379/0", "Pa"),
    ],
)
def test_a_redis_url_that_cannot_work_fails_at_once_without_its_password(
    url: str, says: str, never: str | None
) -> None:
    with pytest.raises(ValueError, match="not a Redis URL that can be used") as caught:
        RedisRateLimiter(url)
    assert says in str(caught.value)
    if never is not None:
        assert never not in str(caught.value)
