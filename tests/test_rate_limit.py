"""The shared limiter: ceilings, the shared pause, adaptation, and the emulator's view."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from typing import Any

import pytest

import aiodots
from aiodots.ratelimit import AdaptiveRateLimiter, ImmediateLimiter, RateLimit
from aiodots.retry import is_ambiguous
from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit

from .conftest import FakeSleep

# -- the limiter alone, on a virtual clock ----------------------------------------------


def limiter(
    clock: FakeSleep, ceiling: RateLimit | None = None, **kwargs: Any
) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(ceiling, clock=clock.now, sleep=clock, **kwargs)


async def test_unthrottled_acquire_never_waits(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep)
    assert [await lim.acquire() for _ in range(1000)] == [0.0] * 1000
    assert fake_sleep.waits == []


async def test_try_acquire_takes_a_free_slot_at_once_and_never_one_that_is_not(
    fake_sleep: FakeSleep,
) -> None:
    lim = limiter(fake_sleep, RateLimit(10, burst=2))
    assert isinstance(lim, ImmediateLimiter)
    assert lim.try_acquire() == fake_sleep.now()  # the clock, for the request's sent_at
    assert lim.try_acquire() == fake_sleep.now()
    assert lim.try_acquire() is None  # the burst is spent: only acquire() waits
    await fake_sleep(0.1)
    assert lim.try_acquire() is not None  # a token came back
    lim.on_response(429, lim.now(), 2.0)
    assert lim.try_acquire() is None  # a pause holds it too
    assert fake_sleep.waits == [0.1]


async def test_try_acquire_never_jumps_the_queue(fake_sleep: FakeSleep) -> None:
    asleep = asyncio.Event()
    wake = asyncio.Event()

    async def held_sleep(seconds: float) -> None:  # moves the clock, then really waits
        fake_sleep.clock += seconds
        asleep.set()
        await wake.wait()

    lim = AdaptiveRateLimiter(RateLimit(10, burst=1), clock=fake_sleep.now, sleep=held_sleep)
    assert lim.try_acquire() is not None
    queued = asyncio.ensure_future(lim.acquire())
    await asyncio.wait_for(asleep.wait(), 5)  # queued, asleep until the next token
    # The token that came back meanwhile is the queued caller's.
    assert lim.try_acquire() is None
    wake.set()
    assert await asyncio.wait_for(queued, 5) == pytest.approx(0.1)
    assert lim.try_acquire() is None
    fake_sleep.clock += 0.1
    assert lim.try_acquire() == fake_sleep.now()


@pytest.mark.parametrize("late", [None, 0.0], ids=["none-or-refused", "zero"])
async def test_a_429_without_a_pause_while_a_pause_runs_is_part_of_it(
    fake_sleep: FakeSleep, late: float | None
) -> None:
    """A 429 without a usable Retry-After (none, 0, or one this call refused to wait:
    the transport passes all three on as None) that arrives while a Retry-After pause
    runs answers a request of the same episode. It used to close the pause's refusal
    before the pause had decided on it, and the next acquire failed an assertion."""
    lim = limiter(fake_sleep)
    lim.on_response(429, lim.now(), None)  # the first refusal: a slow start, the log kept
    await fake_sleep(0.5)
    lim.on_response(429, lim.now(), 1.0)  # a pause, its decision due at its end
    sent = lim.now()
    await fake_sleep(0.3)
    lim.on_response(429, sent, late)  # the late one, sent while the pause ran
    await fake_sleep(1.0)
    await asyncio.wait_for(lim.acquire(), 5)  # the pause ends: its decision is made
    assert lim.rate is not None
    assert lim.rate > 0
    assert lim.paused_until <= lim.now()


async def test_a_wait_the_server_asked_for_past_max_wait_is_refused_without_a_slot(
    fake_sleep: FakeSleep,
) -> None:
    woken = asyncio.Event()

    async def sleep(seconds: float) -> None:  # a wait that lasts until the test ends it
        await woken.wait()
        await fake_sleep(seconds)

    lim = AdaptiveRateLimiter(clock=fake_sleep.now, sleep=sleep)
    assert isinstance(lim, aiodots.ratelimit.BoundedLimiter)
    await lim.acquire()
    # The tightest policy wins: one request a minute.
    lim.on_headers({"RateLimit-Policy": "1;w=60, 100;w=1"})
    with pytest.raises(aiodots.ratelimit.WaitTooLong) as caught:
        await lim.acquire_within(30)
    assert caught.value.seconds == pytest.approx(60)
    assert "announced" in caught.value.cause
    assert fake_sleep.waits == []
    assert not lim._waiters
    # A caller queued behind one that waits is refused at once too, not when its turn comes.
    held = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert len(lim._waiters) == 1
    with pytest.raises(aiodots.ratelimit.WaitTooLong):
        await lim.acquire_within(30)
    assert len(lim._waiters) == 1
    woken.set()
    assert await held == pytest.approx(60)  # on the virtual clock


async def test_a_short_announced_wait_is_honoured(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep)
    await lim.acquire()
    lim.on_headers({"RateLimit-Policy": "1;w=30"})
    assert await lim.acquire_within(60) == pytest.approx(30)
    assert sum(fake_sleep.waits) == pytest.approx(30)


async def test_a_daily_quota_beside_a_per_second_limit_paces_at_the_per_second_one(
    fake_sleep: FakeSleep,
) -> None:
    lim = limiter(fake_sleep)
    lim.on_headers({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400'})
    assert lim.announced_rate == 100
    assert lim.rate == 100
    started = lim.now()
    for _ in range(10):
        await lim.acquire_within(60)
    # paced at 100/s, 0.01 s apart, not at 1.16/s (100,000 a day): 8.6 s
    assert lim.now() - started == pytest.approx(0.1, abs=0.002)


@pytest.mark.parametrize("policy", ["100;w=3600", '"hourly";q=1000;w=3600, "daily";q=9;w=86400'])
async def test_a_quota_over_a_long_window_alone_leaves_the_rate_to_be_found(
    fake_sleep: FakeSleep, policy: str
) -> None:
    # `100;w=3600` held each call 36 s, or failed it unsent past max_retry_after.
    lim = limiter(fake_sleep)
    lim.on_headers({"RateLimit-Policy": policy})
    assert lim.announced_rate is None
    assert lim.rate is None  # unthrottled until a 429 says otherwise, as without headers
    assert [await lim.acquire_within(30) for _ in range(200)] == [0.0] * 200
    assert fake_sleep.waits == []


async def test_a_spent_quota_holds_every_caller_until_its_reset(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep)
    assert isinstance(lim, aiodots.ratelimit.QuotaAwareLimiter)
    lim.on_headers({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400'})
    await lim.acquire()
    lim.on_spent_quota(30.0)
    starts: list[float] = []

    async def call() -> None:
        await lim.acquire_within(60)
        starts.append(fake_sleep.now())

    reset = lim.now() + 30
    await asyncio.gather(*(call() for _ in range(5)))
    assert min(starts) == pytest.approx(reset)
    # then at the announced pace again (100/s, the first two at once: see RateLimit)
    assert max(starts) - reset == pytest.approx(0.03, abs=0.002)
    assert lim.rate == 100


async def test_a_spent_quota_longer_than_max_wait_is_refused_naming_the_quota(
    fake_sleep: FakeSleep,
) -> None:
    lim = limiter(fake_sleep)
    lim.on_spent_quota(3600.0)
    with pytest.raises(aiodots.ratelimit.WaitTooLong, match="quota") as caught:
        await lim.acquire_within(60)
    assert caught.value.seconds == pytest.approx(3600)
    assert fake_sleep.waits == []
    assert await lim.acquire_within(7200) == pytest.approx(3600)


async def test_a_refusal_for_a_spent_quota_says_nothing_of_the_rate(
    fake_sleep: FakeSleep,
) -> None:
    lim = limiter(fake_sleep)
    lim.on_headers({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400'})
    await lim.acquire()
    sent = lim.now()
    await fake_sleep(0.01)
    # The transport tells the limiter of the spent quota, then of the 429 itself (with
    # or without a Retry-After): neither cuts the rate nor starts a probe.
    lim.on_spent_quota(30.0)
    lim.on_response(429, sent, None)
    lim.on_response(429, sent, 30.0)
    assert lim.decreases == 0
    await lim.acquire()
    assert lim.rate == 100
    for _ in range(100):
        await fake_sleep(1.0)
        await lim.acquire()
    assert lim.rate == 100
    assert lim.decreases == 0


async def test_a_pause_past_max_wait_is_refused_and_a_ceilings_own_waits_never_are(
    fake_sleep: FakeSleep,
) -> None:
    # A pause a caller with a longer max_retry_after let the limiter take (a limiter
    # shared by two clients).
    lim = limiter(fake_sleep)
    lim.on_response(429, lim.now(), 300.0)
    with pytest.raises(aiodots.ratelimit.WaitTooLong, match="Retry-After") as caught:
        await lim.acquire_within(60)
    assert caught.value.seconds == pytest.approx(300)
    assert await lim.acquire_within(600) == pytest.approx(300)
    # One call every 100 s is the client's own choice: waited, whatever max_wait says.
    slow = limiter(fake_sleep, RateLimit(rate=0.01))
    await slow.acquire()
    assert await slow.acquire_within(60) == pytest.approx(100)


async def test_a_ceiling_is_never_exceeded_by_concurrent_callers(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep, RateLimit(10, burst=3))
    starts: list[float] = []

    async def call() -> None:
        await lim.acquire()
        starts.append(fake_sleep.now())

    await asyncio.gather(*(call() for _ in range(53)))
    assert len(starts) == 53
    t0 = starts[0]
    assert starts[-1] - t0 == pytest.approx(5.0, abs=0.01)  # 3 at once, then 50 at 10/s
    for i, start in enumerate(starts):
        in_window = [s for s in starts if start <= s < start + 1.0]
        assert len(in_window) <= 10 + 3, (i, len(in_window))


async def test_a_429_with_retry_after_pauses_every_caller(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep, adaptive=False)
    lim.on_response(429, lim.now(), 5.0)
    starts: list[float] = []

    async def call() -> None:
        await lim.acquire()
        starts.append(fake_sleep.now())

    began = fake_sleep.now()
    await asyncio.gather(*(call() for _ in range(20)))
    assert min(starts) - began == pytest.approx(5.0)
    assert len(fake_sleep.waits) == 1  # only the head of the queue sleeps
    assert lim.rate is None  # adaptation off: the pause is all


async def test_first_429_throttles_then_recovers_holds_and_probes(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep)
    # Settle for the first rate the log says (its bounds are 12% apart here): this test
    # is about the hold and the probing after it. (With tries left, the limiter would
    # first probe again from under that rate to say it more closely: test_rate_finding.)
    lim.PRECISE_TRIES_WITHOUT_PAUSE = 0
    for _ in range(50):  # 50 successes over 0.25 s, then a 429
        lim.on_response(200, lim.now(), None)
        fake_sleep.clock += 0.005
    lim.on_response(429, lim.now() - 0.001, None)
    assert lim.rate is not None
    start = lim.rate
    # 429s from requests sent before the cut are echoes: no second cut
    lim.on_response(429, lim.now() - 0.001, None)
    assert lim.rate == start
    # slow start: the rate doubles every 0.25 s while successes come back
    for _ in range(10):
        fake_sleep.clock += 0.05
        lim.on_response(200, lim.now(), None)
    assert lim.rate == pytest.approx(start * 4)
    # a 429 sent after the cut: down to what the server was found to accept
    lim.on_response(429, lim.now(), None)
    cut = lim.rate
    assert cut is not None
    assert cut < start * 4
    # recovery to just under the last good rate, then a hold, then probing upwards
    for step in range(40):
        fake_sleep.clock += 0.5
        lim.on_response(200, lim.now(), None)
        rate = lim.rate
        assert rate is not None
        if step == 4:
            held = rate
        if 5 <= step <= 19:
            assert rate == held
    assert rate > held


@pytest.mark.parametrize("retry_after", [None, 1.0])
async def test_a_slow_start_no_429_ends_survives_an_idle_hour(
    fake_sleep: FakeSleep, retry_after: float | None
) -> None:
    # One 429 starts a slow start; only another 429 ends it. A job that then goes quiet
    # (or stays under the limit) doubles on for hours: past 1024 doublings 2.0 ** n
    # raised OverflowError out of every later call.
    lim = limiter(fake_sleep)
    for _ in range(5):
        lim.on_response(200, lim.now(), None)
        fake_sleep.clock += 0.01
    lim.on_response(429, lim.now(), retry_after)
    await lim.acquire()  # after the pause, if any: the slow start runs
    fake_sleep.clock += 3600.0
    await lim.acquire()
    lim.on_response(200, lim.now(), None)
    assert lim.rate is not None
    assert math.isfinite(lim.rate)


async def test_adaptation_never_exceeds_a_ceiling(fake_sleep: FakeSleep) -> None:
    lim = limiter(fake_sleep, RateLimit(50))
    lim.on_response(429, lim.now(), None)
    assert lim.rate == pytest.approx(45.0)
    for _ in range(100):
        fake_sleep.clock += 1.0
        lim.on_response(200, lim.now(), None)
    assert lim.rate == 50.0


async def test_a_cancelled_waiter_does_not_stall_the_queue() -> None:
    lim = AdaptiveRateLimiter(RateLimit(20))
    await lim.acquire()
    first = asyncio.create_task(lim.acquire())
    second = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    first.cancel()
    waited = await asyncio.wait_for(second, timeout=1.0)
    assert waited < 0.2
    assert first.cancelled()
    assert not lim._waiters


# -- through the emulator ---------------------------------------------------------------


def client_for(emulator: DotsEmulator, **kwargs: Any) -> aiodots.Client:
    return aiodots.Client(**emulator.credentials, base_url=emulator.base_url, **kwargs)


async def test_many_creates_settle_near_the_server_limit_with_few_429s(
    dots_emulator: DotsEmulator,
) -> None:
    rate, n = 100, 300
    dots_emulator.set_faults(
        FaultPlan(rate_limit=ServerRateLimit(rate=rate, burst=10, retry_after="none"))
    )
    async with client_for(dots_emulator, max_retries=10) as dots:
        started = time.monotonic()
        items = [i async for i in dots.flows.create_many(
            ({"steps": ["payout"]} for _ in range(n)), concurrency=10
        )]
        elapsed = time.monotonic() - started
        assert all(i.ok for i in items)
        assert dots_emulator.stats.created == n
        assert dots.stats.rate_limited / dots.stats.requests < 0.1
        assert n / rate * 0.8 <= elapsed <= n / rate * 1.6


async def test_calls_are_not_spaced_by_a_daily_quota_s_average(
    dots_emulator: DotsEmulator,
) -> None:
    """`"default";q=100;w=1, "quota";q=100000;w=86400` was paced at 100,000 a day,
    1.16 calls a second: these 50 calls took 42 s where the server allows them in half
    a second."""
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=100, burst=100, headers="ietf", quota=100_000, quota_window=86400,
    )))
    async with client_for(dots_emulator) as dots:
        await dots.flows.create(steps=["payout"])  # its answer announces both policies
        started = time.monotonic()
        async with asyncio.timeout(10):
            await asyncio.gather(*(dots.flows.create(steps=["payout"]) for _ in range(50)))
        elapsed = time.monotonic() - started
        limiter = dots.limiter
        assert isinstance(limiter, AdaptiveRateLimiter)
        assert limiter.announced_rate == 100
        assert dots.stats.rate_limited == 0
    # paced at 100/s: 0.49 s; the daily average would take 42 s
    assert elapsed < 2.0, elapsed
    assert dots_emulator.stats.created == 51


async def test_a_spent_daily_quota_fails_the_rest_of_a_job_unsent(
    dots_emulator: DotsEmulator,
) -> None:
    """Once the server said the day's quota was spent, every other call of the job was
    still sent to be refused (its Retry-After, a day, past max_retry_after, paused no
    one), while the limiter cut its rate at each refusal."""
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=1000, burst=100, headers="ietf", quota=20, quota_window=86400,
    )))
    async with client_for(dots_emulator) as dots:
        started = time.monotonic()
        async with asyncio.timeout(10):
            items = [i async for i in dots.flows.create_many(
                [{"steps": ["payout"]}] * 60, concurrency=10,
            )]
        elapsed = time.monotonic() - started
        limiter = dots.limiter
        assert isinstance(limiter, AdaptiveRateLimiter)
        assert limiter.decreases == 0
    assert sum(i.ok for i in items) == 20
    failed = [i.error for i in items if not i.ok]
    assert all(isinstance(e, aiodots.RateLimitError) for e in failed)
    assert all(e.retry_after is not None and e.retry_after > 86000 for e in failed)  # type: ignore[union-attr]
    # the calls in flight when the quota ran out were refused; no other was sent
    assert dots_emulator.stats.requests <= 20 + 10
    assert sum("not sent" in str(e) for e in failed) >= 60 - 20 - 10
    assert elapsed < 5.0, elapsed


async def test_a_client_rate_limit_below_the_servers_causes_no_429(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(rate=100, burst=5)))
    async with client_for(dots_emulator, rate_limit=80) as dots:
        started = time.monotonic()
        async for item in dots.flows.create_many([{"steps": ["payout"]}] * 120, concurrency=50):
            assert item.ok
        elapsed = time.monotonic() - started
    assert dots_emulator.stats.by_status == {200: 120}
    assert elapsed >= 119 / 80 * 0.95


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_holds_every_caller_until_it_has_passed(
    dots_emulator: DotsEmulator, form: str
) -> None:
    dots_emulator.set_faults(
        FaultPlan(rate_limit=ServerRateLimit(rate=1000, burst=5, retry_after=form))  # type: ignore[arg-type]
    )
    async with client_for(dots_emulator, max_retries=5) as dots:
        items = [i async for i in dots.flows.create_many([{"steps": ["payout"]}] * 30,
                                                         concurrency=30)]
    assert all(i.ok for i in items)
    assert dots_emulator.stats.created == 30
    arrivals = sorted(dots_emulator.stats.arrivals)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # one shared pause of at least a second, not 25 tasks each firing again at once
    assert max(gaps) >= 0.95
    assert sum(1 for g in gaps if g >= 0.5) <= 2


async def test_a_too_long_retry_after_fails_fast(dots_emulator: DotsEmulator) -> None:
    dots_emulator.fail_next(status=429, retry_after="120")
    async with client_for(dots_emulator, max_retry_after=30) as dots:
        started = time.monotonic()
        with pytest.raises(aiodots.RateLimitError) as caught:
            await dots.flows.create(steps=["payout"])
        assert time.monotonic() - started < 0.5
    assert caught.value.retry_after == 120
    assert dots_emulator.stats.requests == 1


@pytest.mark.parametrize("headers", ["x-ratelimit", "ietf"])
async def test_an_announced_limit_that_would_hold_a_call_past_max_retry_after_fails_it_fast(
    dots_emulator: DotsEmulator, headers: Any
) -> None:
    """A server announcing one request a day held every call after the first for a day:
    only a per-call deadline bounded the wait, and a web handler awaiting one hung."""
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=1 / 86400, burst=1, headers=headers,
    )))
    async with client_for(dots_emulator, max_retry_after=30) as dots:
        await dots.flows.create(steps=["payout"])  # its answer announces the limit
        async with asyncio.timeout(5):
            with pytest.raises(aiodots.RateLimitError, match="not sent") as caught:
                await dots.flows.create(steps=["payout"])
        failures = dots.stats.failures
    assert caught.value.retry_after == pytest.approx(86400, rel=0.01)
    assert caught.value.status == 429
    assert dots_emulator.stats.requests == 1  # never sent
    assert failures == 1


async def test_a_refused_retry_after_does_not_hold_the_other_callers(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.fail_next(status=429, retry_after="3600")
    async with client_for(dots_emulator, max_retry_after=30) as dots:
        with pytest.raises(aiodots.RateLimitError):
            await dots.flows.create(steps=["payout"])
        # held for the hour the server asked, this would time out
        await asyncio.wait_for(dots.flows.create(steps=["payout"]), timeout=5)
    assert dots_emulator.stats.created == 1


@pytest.mark.parametrize("where", ["per call", "client-wide"])
async def test_a_deadline_is_kept_while_the_call_waits_for_the_limiter(
    dots_emulator: DotsEmulator, where: str
) -> None:
    """Another call's 429 paused every caller for 3 s; a call with a 0.3 s deadline
    used to wait the pause out and only then fail."""
    client_deadline = 0.3 if where == "client-wide" else None
    async with client_for(dots_emulator, max_retries=0, deadline=client_deadline) as dots:
        flow = await dots.flows.create(steps=["payout"], deadline=10.0)
        dots_emulator.fail_next(1, status=429, retry_after="3")
        with pytest.raises(aiodots.RateLimitError):
            await dots.flows.retrieve(flow.id, deadline=10.0)  # sets the pause
        seen = dots_emulator.stats.requests
        started = time.monotonic()
        per_call: dict[str, Any] = {"deadline": 0.3} if where == "per call" else {}
        with pytest.raises(
            aiodots.APITimeoutError, match="while it waited for the rate limit"
        ) as caught:
            await dots.flows.retrieve(flow.id, **per_call)
        took = time.monotonic() - started
        # Failing when the deadline passed, not at the pause's end: the bound is loose
        # for slow machines, the difference it tells apart is 0.3 s against 3.
        assert took < 2.0
        assert dots_emulator.stats.requests == seen  # it was never sent
        limiter = dots.limiter
        assert isinstance(limiter, AdaptiveRateLimiter)
        assert limiter.paused_until > limiter.now()  # the pause still runs
        assert not is_ambiguous(caught.value)  # a create would be sent again safely


async def test_a_call_whose_deadline_falls_inside_a_pause_fails_at_once(
    dots_emulator: DotsEmulator,
) -> None:
    """A 30 s pause (within max_retry_after) held a call with a 2 s deadline until its
    deadline passed: the limiter knew from the start that the call could not be sent in
    time."""
    async with client_for(dots_emulator, max_retries=0) as dots:
        flow = await dots.flows.create(steps=["payout"])
        dots_emulator.fail_next(1, status=429, retry_after="30")
        with pytest.raises(aiodots.RateLimitError):
            await dots.flows.retrieve(flow.id)  # sets the pause
        seen = dots_emulator.stats.requests
        started = time.monotonic()
        with pytest.raises(aiodots.APITimeoutError, match="deadline would pass") as caught:
            await dots.flows.retrieve(flow.id, deadline=2.0)
        # At once, not after the 2 s: the bound is loose for slow machines.
        assert time.monotonic() - started < 1.0
        assert dots_emulator.stats.requests == seen  # never sent
        assert not is_ambiguous(caught.value)
        limiter = dots.limiter  # the pause still runs for every other caller
        assert isinstance(limiter, AdaptiveRateLimiter)
        assert limiter.paused_until > limiter.now() + 25


async def test_during_an_outage_the_retry_budget_stops_the_retry_storm(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(error_rate=1.0, error_status=503))
    policy = aiodots.RetryPolicy(max_retries=3, backoff_initial=0.001, backoff_max=0.002)
    async with client_for(dots_emulator, retry_policy=policy) as dots:
        items = [i async for i in dots.flows.create_many(
            [{"steps": ["payout"]}] * 200, concurrency=20
        )]
        assert not any(i.ok for i in items)
        # without a budget: 200 * 4 = 800 requests; the default budget covers 100 retries
        assert dots_emulator.stats.requests <= 200 + 100
        assert dots.stats.budget_exhausted > 0
        assert dots.retry_budget is not None
        assert dots.retry_budget.tokens < 5


async def test_a_deadline_bounds_the_whole_call_across_attempts(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.3, error_rate=1.0, error_status=503))
    policy = aiodots.RetryPolicy(max_retries=50, backoff_initial=0.05, backoff_max=0.1)
    async with client_for(dots_emulator, retry_policy=policy) as dots:
        started = time.monotonic()
        with pytest.raises((aiodots.ServerError, aiodots.APITimeoutError)):
            await dots.flows.retrieve("f1", deadline=1.0)
        assert time.monotonic() - started < 1.3


async def test_cancelling_a_call_held_by_a_pause_leaves_nothing_behind(
    dots_emulator: DotsEmulator,
) -> None:
    async with client_for(dots_emulator) as dots:
        dots.limiter.on_response(429, dots.limiter.now(), 30.0)
        task = asyncio.create_task(dots.flows.create(steps=["payout"]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert isinstance(dots.limiter, AdaptiveRateLimiter)
        assert not dots.limiter._waiters
    assert dots_emulator.stats.requests == 0


async def test_counters_and_debug_logs_show_waits_and_429s(
    dots_emulator: DotsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodots")
    dots_emulator.fail_next(status=429, retry_after="1")
    async with client_for(dots_emulator) as dots:
        await dots.flows.create(steps=["payout"])
        stats = dots.stats.snapshot()
    assert stats.rate_limited == 1
    assert stats.retries == 1
    assert stats.requests == 2
    assert stats.backoff_wait_seconds == pytest.approx(1.0)
    text = caplog.text
    assert "-> 429 (attempt 1" in text
    assert "retrying in 1.000s" in text


class CountingLimiter:
    """A stand-in for a shared (Redis) limiter: the transport only needs the protocol."""

    def __init__(self) -> None:
        self.acquired = 0
        self.statuses: list[int] = []

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        self.statuses.append(status)

    def now(self) -> float:
        return time.monotonic()


async def test_another_limiter_plugs_in_without_touching_the_transport(
    dots_emulator: DotsEmulator,
) -> None:
    counting = CountingLimiter()
    assert isinstance(counting, aiodots.RateLimiter)
    dots_emulator.fail_next(status=503)
    async with client_for(dots_emulator, rate_limiter=counting) as dots:
        await dots.flows.create(steps=["payout"])
    assert counting.acquired == 2
    assert counting.statuses == [503, 200]


async def test_a_server_that_asks_for_fractions_of_a_second_is_not_stormed() -> None:
    # Delta-seconds are whole (RFC 9110), but a server may send the time to its next token
    # (Retry-After: 0.050). Taken as it was, every short pause released a full bucket's
    # burst into a bucket holding one token: most calls met 429 after 429 and failed.
    from aiohttp import web

    from aiodots.testing.faults import TokenBucket

    bucket = TokenBucket(ServerRateLimit(rate=20, burst=10))
    answered: dict[int, int] = {200: 0, 429: 0}

    async def handle(request: web.Request) -> web.Response:
        wait = bucket.take()
        if wait is None:
            answered[200] += 1
            return web.json_response({"id": "u1"})
        answered[429] += 1
        return web.json_response(
            {"message": "slow down"}, status=429, headers={"Retry-After": f"{wait:.3f}"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    failed: list[BaseException] = []
    try:
        async with aiodots.Client("id", "key", base_url=f"http://127.0.0.1:{port}") as dots:
            until = time.monotonic() + 3.0

            async def caller() -> None:
                while time.monotonic() < until:
                    try:
                        await dots.users.retrieve("u1")
                    except aiodots.DotsError as exc:
                        failed.append(exc)

            await asyncio.gather(*(caller() for _ in range(20)))
    finally:
        await runner.cleanup()
    assert failed == []
    assert answered[200] >= 20  # it got work done, not only waited
    assert answered[429] < answered[200]
