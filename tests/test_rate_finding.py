"""Finding a server's rate when every 429 costs a Retry-After pause, and using the rate
a server announces. Through the emulator: real sockets, real pauses."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest

import aiodots
from aiodots.ratelimit import AdaptiveRateLimiter
from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit
from aiodots.testing.faults import LimitHeaders, RetryAfterForm, TokenBucket

from .conftest import FakeSleep

RATE, BURST, CREATES, CONCURRENCY = 100, 10, 300, 32


async def run_job(
    emulator: DotsEmulator, *, retry_after: RetryAfterForm = "seconds",
    headers: LimitHeaders = "none",
) -> tuple[float, list[float], aiodots.Client]:
    """The issue's case: 300 creates at concurrency 32 against 100/s (burst 10), answered
    429 with `Retry-After: 1`. Returns the elapsed time, the pauses the emulator saw
    (silences of most of a second between two requests), and the closed client."""
    emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=RATE, burst=BURST, retry_after=retry_after, headers=headers,
    )))
    client = aiodots.Client(**emulator.credentials, base_url=emulator.base_url, max_retries=10)
    async with client:
        started = time.monotonic()
        items = [i async for i in client.flows.create_many(
            ({"steps": ["payout"]} for _ in range(CREATES)), concurrency=CONCURRENCY,
        )]
        elapsed = time.monotonic() - started
    assert all(i.ok for i in items)
    assert emulator.stats.created == CREATES
    arrivals = sorted(emulator.stats.arrivals)
    pauses = [b - a for a, b in itertools.pairwise(arrivals) if b - a >= 0.8]
    return elapsed, pauses, client


# With Retry-After every 429 stops the whole job for a second, and a client that knows
# nothing of the limit must be refused twice to learn it: once by its first burst, once
# by the probe that finds the rate (one refusal gives the server's burst, the next its
# rate). The server can serve 3 bursts and 100/s for the rest, so two pauses put the
# floor at 2 + (300 - 3 * 10) / 100 = 4.7 s; the issue asks for 4.8 s. This run takes
# 4.76-4.78 s on the development machine, where the same limiter on a virtual clock
# takes 4.767 s (see `test_two_pauses_solve_the_bucket_and_the_job_runs_at_its_floor`,
# which holds it to 4.8 s exactly); on main, with three or four pauses, it took 5.9 s,
# and before this limiter solved the bucket from bounds 4.9-5.0 s. Real sockets add
# what a loaded machine adds, so the time bound here allows 0.1 s for a busy CI
# runner; what decides the time, two pauses, the burst solved exactly and the rate
# solved from below within 2%, is asserted exactly.
TWO_PAUSE_FLOOR = 2 * 1.0 + (CREATES - 3 * BURST) / RATE
ISSUE_TARGET = 4.8
LOADED_MACHINE = 0.1


async def test_the_rate_is_found_with_at_most_two_pauses(dots_emulator: DotsEmulator) -> None:
    elapsed, pauses, client = await run_job(dots_emulator)
    assert len(pauses) <= 2, pauses
    assert elapsed <= ISSUE_TARGET + LOADED_MACHINE
    limiter = client.limiter
    assert isinstance(limiter, AdaptiveRateLimiter)
    assert limiter.solved is not None
    solved_rate, solved_burst = limiter.solved
    assert 0.98 * RATE <= solved_rate <= RATE
    assert solved_burst == BURST
    # the first burst's refusals, and the few in flight when the probe met the limit
    assert client.stats.rate_limited <= (CONCURRENCY - BURST) + 15


async def test_an_http_date_retry_after_is_found_the_same_way(
    dots_emulator: DotsEmulator,
) -> None:
    _, pauses, client = await run_job(dots_emulator, retry_after="http-date")
    assert len(pauses) <= 2, pauses
    assert isinstance(client.limiter, AdaptiveRateLimiter)
    assert client.limiter.solved is not None


@pytest.mark.parametrize("headers", ["x-ratelimit", "ietf"])
async def test_an_announced_limit_is_used_and_never_probed_past(
    dots_emulator: DotsEmulator, headers: Any
) -> None:
    elapsed, pauses, client = await run_job(dots_emulator, headers=headers)
    limiter = client.limiter
    assert isinstance(limiter, AdaptiveRateLimiter)
    assert limiter.announced_rate == RATE
    assert limiter.rate is not None
    assert limiter.rate <= RATE
    # Only the first burst, sent before any answer said the limit, is refused.
    assert len(pauses) == 1, pauses
    assert client.stats.rate_limited <= CONCURRENCY - BURST
    assert elapsed <= 1.0 + (CREATES - 2 * BURST) / RATE + 0.5


async def test_the_end_of_a_pause_releases_callers_at_the_rate_not_at_once(
    dots_emulator: DotsEmulator,
) -> None:
    _, _, _ = await run_job(dots_emulator)
    arrivals = sorted(dots_emulator.stats.arrivals)
    for gap_end in (b for a, b in itertools.pairwise(arrivals) if b - a >= 0.8):
        # 32 callers were waiting; within 50 ms of the pause's end at most what the
        # server's bucket, full again, lets through may arrive: its burst, sent at once
        # once it is known, and the rate after it.
        right_after = [t for t in arrivals if gap_end <= t < gap_end + 0.05]
        assert len(right_after) <= BURST + RATE * 0.05, len(right_after)


# A server whose rate is only twice its burst a second: the first probe, started from
# what the first burst suggested (made for rates near ten bursts a second), is above the
# limit and refused before the bucket refills enough to say the rate. It used to probe
# on from there, faster each time, and meet a pause every second for the whole job
# (this job: 9 pauses in 9.4 s, the rate never solved). Now the probe starts again from
# under the rate that refusal allows, and the third pause finds it.
LOW_RATE, LOW_BURST, LOW_CREATES = 20, 10, 100


async def test_a_limit_of_a_few_bursts_a_second_is_found_with_a_third_pause(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=LOW_RATE, burst=LOW_BURST, retry_after="seconds",
    )))
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, max_retries=10
    ) as client:
        started = time.monotonic()
        items = [i async for i in client.flows.create_many(
            ({"steps": ["payout"]} for _ in range(LOW_CREATES)), concurrency=20,
        )]
        elapsed = time.monotonic() - started
    assert all(i.ok for i in items)
    arrivals = sorted(dots_emulator.stats.arrivals)
    pauses = [b - a for a, b in itertools.pairwise(arrivals) if b - a >= 0.8]
    assert len(pauses) <= 3, pauses
    limiter = client.limiter
    assert isinstance(limiter, AdaptiveRateLimiter)
    assert limiter.solved is not None
    assert 0.9 * LOW_RATE <= limiter.solved[0] <= LOW_RATE
    # Three pauses, the server's burst at the start and after each, and the rest at no
    # less than 0.85 of its rate: 6.5 s (6.2 s on the development machine), and a
    # loaded machine's second on top.
    floor = 3 * 1.0 + (LOW_CREATES - 4 * LOW_BURST) / (0.85 * LOW_RATE)
    assert elapsed <= floor + 1.0, elapsed


async def test_a_success_s_headers_are_not_read_from_a_server_that_sends_none(
    dots_emulator: DotsEmulator,
) -> None:
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url
    ) as dots:
        limiter = dots.limiter
        assert isinstance(limiter, AdaptiveRateLimiter)
        wanted = [limiter.wants_headers]
        for _ in range(AdaptiveRateLimiter.QUIET_RESPONSES):
            await dots.flows.create(steps=["payout"])
            wanted.append(limiter.wants_headers)
        assert wanted == [True] * AdaptiveRateLimiter.QUIET_RESPONSES + [False]
        assert limiter.announced_rate is None


# -- the limiter alone, on a virtual clock ----------------------------------------------


async def test_an_announced_limit_caps_growth_and_outlives_early_refusals() -> None:
    clock = FakeSleep()
    lim = AdaptiveRateLimiter(clock=clock.now, sleep=clock)
    sent_before = lim.now()
    clock.clock += 0.01  # the first answer, announcing the limit, comes back
    lim.on_headers({"RateLimit-Policy": '"default";q=50;w=1', "RateLimit": '"default";r=9;t=1'})
    assert lim.rate == 50
    # a refusal of a request sent before the limit was known does not lower it
    lim.on_response(429, sent_before, 1.0)
    clock.clock += 1.0
    await lim.acquire()
    assert lim.rate == 50
    for _ in range(200):  # long past the hold: probing never passes what was announced
        clock.clock += 1.0
        lim.on_response(200, lim.now(), None)
    assert lim.rate == 50
    # a refusal at the announced rate is real (another client shares the key): cut
    lim.on_response(429, lim.now(), 1.0)
    clock.clock += 1.0
    await lim.acquire()
    assert lim.rate is not None
    assert lim.rate < 50


async def test_no_adaptation_means_no_headers_read() -> None:
    clock = FakeSleep()
    lim = AdaptiveRateLimiter(adaptive=False, clock=clock.now, sleep=clock)
    assert not lim.wants_headers
    lim.on_headers({"X-RateLimit-Limit": "5"})
    assert lim.rate is None


async def test_a_fixed_window_server_is_solved_to_its_long_run_rate() -> None:
    # 100 requests per 10-second window, a refusal asking to wait for the next one: the
    # replay finds the bucket that behaves the same (100 at once, 10 a second).
    clock = FakeSleep()
    lim = AdaptiveRateLimiter(clock=clock.now, sleep=clock)
    t0 = lim.now()
    for i in range(100):
        lim.on_response(200, t0 + i * 1e-4, None)
    lim.on_response(429, t0 + 0.011, 10.0)
    clock.clock = t0 + 10.0
    await lim.acquire()  # the pause is over: a slow start begins
    for i in range(100):
        lim.on_response(200, t0 + 10.0 + i * 0.002, None)
    clock.clock = t0 + 10.3
    lim.on_response(429, t0 + 10.25, 10.0)
    clock.clock = t0 + 20.3
    await lim.acquire()
    assert lim.solved is not None
    rate, burst = lim.solved
    assert rate == pytest.approx(10, rel=0.05)
    assert burst == pytest.approx(100, abs=2)
    assert lim.rate == pytest.approx(rate)


class HeaderSpy:
    """A limiter that records which responses' headers the transport hands it."""

    def __init__(self, wants_headers: bool) -> None:
        self.wants_headers = wants_headers
        self.seen: list[str | None] = []

    async def acquire(self) -> float:
        return 0.0

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        pass

    def now(self) -> float:
        return time.monotonic()

    def on_headers(self, headers: Any) -> None:
        self.seen.append(headers.get("RateLimit-Policy"))


@pytest.mark.parametrize("wants", [True, False])
async def test_the_transport_reads_a_success_s_headers_only_when_asked(
    dots_emulator: DotsEmulator, wants: bool
) -> None:
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(rate=1000, headers="ietf")))
    spy = HeaderSpy(wants)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, rate_limiter=spy
    ) as dots:
        await dots.flows.create(steps=["payout"])
        dots_emulator.fail_next(status=429, retry_after="0")
        await dots.flows.create(steps=["payout"])
    policy = '"default";q=1000;w=1'
    # a 429's headers are always read (a forced 429 carries no policy); a success's
    # only when the limiter asks
    assert spy.seen == ([policy, None, policy] if wants else [None])


# -- the limiter against a server's token bucket, on a virtual clock ---------------------
#
# One caller at a time and answers in no time: every decision of the limiter is then
# exact and repeatable, so these tests can hold it to the floor of what two pauses
# allow, which the emulator's real sockets and timers blur.


SEND_TIME = 1e-5  # seconds one request takes to leave: no two are sent at once


class VirtualServer:
    """The emulator's token bucket on the test's clock, answering each request at once
    with a 429 that carries Retry-After in the given form."""

    def __init__(self, clock: FakeSleep, rate: float, burst: int, form: RetryAfterForm):
        self.bucket = TokenBucket(ServerRateLimit(rate=rate, burst=burst), clock=clock.now)
        self.form = form
        self.refused: list[float] = []

    def retry_after(self, now: float) -> float | None:
        if self.form == "none":
            return None
        if self.form == "seconds":
            return 1.0
        # As the emulator writes it: one second, rounded up to the next whole second
        # of the server's clock (an HTTP-date has no fractions), less the clock.
        return math.floor(now) + 2 - now


async def run_virtual(
    clock: FakeSleep, server: VirtualServer, calls: int
) -> tuple[AdaptiveRateLimiter, list[float]]:
    """Send `calls` requests through a fresh limiter, each repeated until accepted;
    return the limiter and when each accepted request was sent."""
    lim = AdaptiveRateLimiter(clock=clock.now, sleep=clock)
    accepted: list[float] = []
    for _ in range(calls):
        for _attempt in range(50):
            await lim.acquire()
            sent = lim.now()
            clock.clock += SEND_TIME
            if server.bucket.take() is None:
                lim.on_response(200, sent, None)
                accepted.append(sent)
                break
            server.refused.append(sent)
            lim.on_response(429, sent, server.retry_after(sent))
        else:
            raise AssertionError("a request was refused 50 times")
    return lim, accepted


async def test_two_pauses_solve_the_bucket_and_the_job_runs_at_its_floor() -> None:
    clock = FakeSleep()
    server = VirtualServer(clock, RATE, BURST, "seconds")
    began = clock.now()
    lim, accepted = await run_virtual(clock, server, CREATES)
    assert len(server.refused) == 2  # the first burst's, the probe's: two pauses
    assert lim.solved is not None
    rate, burst = lim.solved
    assert burst == BURST  # whole requests, solved exactly
    # Never above (that would cost a third pause): the lower end of the rates the log
    # allows, which is as far below as the probe's last stretch is short.
    assert 0.98 * RATE <= rate <= RATE
    # The floor is two pauses of a second, the server's burst used three times and the
    # rest at its rate: 4.7 s. Above it: the margin of two tokens left unused after
    # each pause (0.04 s) and the rate solved up to 1.5% low (0.03 s): 4.767 s here,
    # and on real sockets 4.76-4.78 s. The issue asks for 4.8 s.
    elapsed = accepted[-1] - began
    assert TWO_PAUSE_FLOOR <= elapsed <= ISSUE_TARGET, elapsed


async def test_the_server_s_burst_goes_out_at_once_when_a_pause_ends() -> None:
    clock = FakeSleep()
    server = VirtualServer(clock, RATE, BURST, "seconds")
    _, accepted = await run_virtual(clock, server, CREATES)
    for refused in server.refused:
        resumed = refused + 1.0
        at_once = [t for t in accepted if resumed <= t < resumed + BURST * SEND_TIME]
        # the burst less the margin (the first refusal's count was the burst itself)
        assert len(at_once) == BURST - AdaptiveRateLimiter.BURST_MARGIN


async def test_after_an_http_date_pause_the_probe_is_refused_late_in_a_second() -> None:
    clock = FakeSleep()
    clock.clock += 0.3  # the job starts a third into a second of the server's clock
    server = VirtualServer(clock, RATE, BURST, "http-date")
    lim, _ = await run_virtual(clock, server, CREATES)
    assert len(server.refused) == 2
    first, probe = server.refused
    assert first == pytest.approx(1000.3)
    # The first pause ends on a whole second; the probe's refusal comes in the last
    # part of the next one, so its pause (to the second whole second after it) lasts
    # little more than a second instead of up to two.
    assert probe - math.floor(probe) >= 0.8, probe
    assert lim.solved is not None
    assert 0.99 * RATE <= lim.solved[0] <= RATE


async def test_a_probe_still_under_the_limit_is_refused_just_before_the_second_turns() -> (
    None
):
    # A server 15 times its burst per second: the probe's ramp, started from what the
    # first burst suggested, is still draining the bucket when the second is about to
    # turn, so the limiter brings the refusal about itself.
    clock = FakeSleep()
    clock.clock += 0.3
    server = VirtualServer(clock, 150.0, BURST, "http-date")
    lim, _ = await run_virtual(clock, server, 400)
    assert len(server.refused) == 2
    probe = server.refused[1]
    assert 1.0 - AdaptiveRateLimiter.PROBE_LEAD - 0.01 <= probe - math.floor(probe) < 1.0
    assert lim.solved is not None
    assert 0.97 * 150 <= lim.solved[0] <= 150


async def test_without_retry_after_the_rate_is_solved_too() -> None:
    clock = FakeSleep()
    server = VirtualServer(clock, 200.0, 20, "none")
    began = clock.now()
    lim, accepted = await run_virtual(clock, server, 3000)
    assert lim.solved is not None
    assert 0.99 * 200 <= lim.solved[0] <= 200
    # The first burst's refusal, the slow start's, and what probing for a higher
    # limit costs later: a handful, each only its own retry.
    assert len(server.refused) <= 10, server.refused
    assert len(accepted) / (accepted[-1] - began) >= 0.99 * 200


async def test_a_refusal_before_the_bucket_refilled_does_not_end_a_slow_start() -> None:
    clock = FakeSleep()
    lim = AdaptiveRateLimiter(clock=clock.now, sleep=clock)
    t0 = lim.now()
    for _ in range(20):
        lim.on_response(200, t0, None)
    clock.clock += 0.01
    lim.on_response(429, t0, None)  # the first burst ran the bucket dry
    assert lim.rate is not None
    start = lim.rate
    # the slow start's first request, refused again: nothing was accepted since the
    # bucket ran dry, so nothing says the rate is too high
    clock.clock += 0.01
    lim.on_response(429, lim.now(), None)
    clock.clock += 0.5
    lim.on_response(200, lim.now(), None)
    assert lim.rate >= start * 4  # doubled twice in half a second: no cut
    assert lim.solved is None


async def test_a_probe_brought_to_a_refusal_with_the_bucket_still_full_probes_on() -> None:
    # 40 times its burst per second: the probe's ramp is still far below the rate when
    # the second is about to turn, and the refusal it brings about finds the bucket
    # full, which says only that the rate is higher. The next probe starts from there
    # instead of a cut below what was sent.
    clock = FakeSleep()
    clock.clock += 0.3
    server = VirtualServer(clock, 400.0, BURST, "http-date")
    lim, _ = await run_virtual(clock, server, 1500)
    assert len(server.refused) == 3, server.refused
    assert lim.solved is not None
    assert 0.97 * 400 <= lim.solved[0] <= 400


@pytest.mark.parametrize("form", ["seconds", "http-date"])
@pytest.mark.parametrize(("rate", "burst"), [(20.0, 10), (10.0, 5), (40.0, 20), (30.0, 10)])
async def test_a_probe_refused_too_soon_starts_again_from_under_the_rate(
    form: RetryAfterForm, rate: float, burst: int
) -> None:
    # Rates of two or three times the burst a second: the first probe starts above them
    # or near them, and is refused by the server before its bucket refilled enough to
    # say the rate closely (at 30/s the rates it allowed were 23% apart, and the job ran
    # at their lower end, 10% under the limit). That refusal is the server's own, not
    # one brought about with the bucket still full: the next probe starts from under
    # the rate it allows, not from above it, and ramps across what it allows slowly
    # enough to say the rate within a few percent.
    clock = FakeSleep()
    clock.clock += 0.3
    server = VirtualServer(clock, rate, burst, form)
    lim, _ = await run_virtual(clock, server, int(15 * rate))
    assert len(server.refused) == 3, server.refused
    assert lim.solved is not None
    assert 0.97 * rate <= lim.solved[0] <= rate


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 10), (10.0, 5), (40.0, 20)])
async def test_without_retry_after_a_low_rate_is_found_in_a_few_refusals(
    rate: float, burst: int
) -> None:
    # The slow start after the first burst begins above these rates too. Cuts of 10%
    # from there cost a refusal each (20/s: 18 refusals); the bounds of the refused
    # phase say where to start again.
    clock = FakeSleep()
    server = VirtualServer(clock, rate, burst, "none")
    began = clock.now()
    lim, accepted = await run_virtual(clock, server, int(15 * rate))
    assert len(server.refused) <= 8, server.refused
    assert lim.solved is not None
    assert 0.97 * rate <= lim.solved[0] <= rate
    assert len(accepted) / (accepted[-1] - began) >= 0.99 * rate
