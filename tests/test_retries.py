"""How many attempts a call makes, and how long it waits between them (fake sleep)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import aioresponses
import pytest
from yarl import URL

import aiodots
from aiodots.errors import ConnectionDropped
from aiodots.retry import is_ambiguous
from aiodots.session import attempt_timeout
from aiodots.testing import DotsEmulator, FaultPlan
from aiodots.transport import connection_failure

from .conftest import BASE_URL, FakeSleep, flow_json, make_client

FLOWS = f"{BASE_URL}/v2/flows"
FLOW_URL = f"{FLOWS}/f1"


def attempts(mocked: aioresponses.aioresponses, method: str, url: str) -> int:
    return len(mocked.requests.get((method, URL(url)), []))


async def test_503s_are_retried_with_capped_exponential_backoff(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    mocked.post(FLOWS, status=503, payload={"message": "busy"})
    mocked.post(FLOWS, status=503, payload={"message": "busy"})
    mocked.post(FLOWS, payload=flow_json())
    flow = await client.flows.create(steps=["compliance"])
    assert flow.id == flow_json()["id"]
    assert attempts(mocked, "POST", FLOWS) == 3
    # rand() is pinned to 1.0: the jitter window's upper edge, 0.5 * 2**(n-1)
    assert fake_sleep.waits == [0.5, 1.0]
    assert client.stats.retries == 2
    assert client.stats.requests == 3


async def test_backoff_is_capped(mocked: aioresponses.aioresponses, fake_sleep: FakeSleep) -> None:
    policy = aiodots.RetryPolicy(max_retries=6, backoff_max=3.0, rand=lambda: 1.0)
    mocked.get(FLOW_URL, status=500, repeat=True)
    async with make_client(fake_sleep, retry_policy=policy, retry_budget=False) as dots:
        with pytest.raises(aiodots.ServerError):
            await dots.flows.retrieve("f1")
    assert fake_sleep.waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert attempts(mocked, "GET", FLOW_URL) == 7


async def test_jitter_spreads_waits_below_the_exponential_ceiling(
    mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    policy = aiodots.RetryPolicy(max_retries=2, rand=lambda: 0.25)
    mocked.get(FLOW_URL, status=502, repeat=True)
    async with make_client(fake_sleep, retry_policy=policy) as dots:
        with pytest.raises(aiodots.ServerError):
            await dots.flows.retrieve("f1")
    assert fake_sleep.waits == [0.125, 0.25]


async def test_429_with_seconds_retry_after_waits_that_long(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    mocked.post(FLOWS, status=429, headers={"Retry-After": "7"})
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    assert 7.0 in fake_sleep.waits
    assert attempts(mocked, "POST", FLOWS) == 2
    assert client.stats.rate_limited == 1


async def test_429_with_http_date_retry_after_waits_until_that_date(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=12)
    mocked.post(FLOWS, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    backoff_waits = [w for w in fake_sleep.waits if w > 5]
    assert len(backoff_waits) == 1
    assert 10.5 < backoff_waits[0] <= 12.0


@pytest.mark.parametrize("header", ["Retry-After", "Date"])
async def test_a_429_with_an_unreadable_date_is_still_retried(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep,
    header: str,
) -> None:
    # A year past what a C long holds made the date parser raise OverflowError, which
    # escaped the call untyped and uncounted.
    headers = {"Retry-After": "Sat, 01 Jan 2000 00:00:00 GMT"}  # past: go now
    headers[header] = "Thu, 01 Jan 99999999999999999999 12:00:30 GMT"
    mocked.get(FLOW_URL, status=429, headers=headers, payload={"message": "slow"})
    mocked.get(FLOW_URL, payload=flow_json())
    await client.flows.retrieve("f1")
    assert attempts(mocked, "GET", FLOW_URL) == 2
    assert client.stats.rate_limited == 1


async def test_a_retry_after_beyond_the_maximum_fails_fast_with_rate_limit_error(
    mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    mocked.post(FLOWS, status=429, headers={"Retry-After": "3600"}, payload={"message": "slow"})
    async with make_client(fake_sleep, max_retry_after=30) as dots:
        with pytest.raises(aiodots.RateLimitError) as caught:
            await dots.flows.create(steps=["compliance"])
    assert caught.value.retry_after == 3600
    assert attempts(mocked, "POST", FLOWS) == 1
    assert fake_sleep.waits == []


DAILY = '"burst";q=100;w=1, "daily";q=100000;w=86400'


def spent(reset: int, retry_after: str | None = None) -> dict[str, str]:
    """A 429's headers that say the day's quota is spent, `reset` seconds from whole."""
    headers = {"RateLimit-Policy": DAILY, "RateLimit": f'"burst";r=99;t=1, "daily";r=0;t={reset}'}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return headers


@pytest.mark.parametrize("retry_after", [None, "1"], ids=["no-retry-after", "a-shorter-one"])
async def test_a_429_for_a_spent_quota_waits_until_the_quota_s_reset(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep,
    retry_after: str | None,
) -> None:
    # Retried at the backoff's pace (or each second), every attempt met the same spent
    # quota: refused three more times, then failed.
    mocked.post(FLOWS, status=429, headers=spent(30, retry_after), payload={"message": "quota"})
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    assert attempts(mocked, "POST", FLOWS) == 2
    assert sum(fake_sleep.waits) == pytest.approx(30)
    assert client.stats.rate_limited == 1


async def test_a_spent_quota_past_max_retry_after_fails_this_call_and_the_next_unsent(
    mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    mocked.post(FLOWS, status=429, headers=spent(3600), payload={"message": "quota"})
    async with make_client(fake_sleep, max_retry_after=60) as dots:
        with pytest.raises(aiodots.RateLimitError) as caught:
            await dots.flows.create(steps=["compliance"])
        assert caught.value.retry_after == 3600
        # The server said so: the next call is not sent to be refused again.
        with pytest.raises(aiodots.RateLimitError, match=r"not sent.*quota") as unsent:
            await dots.flows.create(steps=["compliance"])
        assert unsent.value.retry_after == pytest.approx(3600)
        assert dots.stats.requests == 1
    assert attempts(mocked, "POST", FLOWS) == 1
    assert fake_sleep.waits == []


async def test_nothing_left_of_a_per_second_window_is_no_longer_a_pause_than_asked(
    client: aiodots.Client, mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    # `"burst";r=0` is the end of every second at full speed: pacing's business.
    headers = {"RateLimit-Policy": DAILY, "RateLimit": '"burst";r=0;t=1, "daily";r=500;t=3600',
               "Retry-After": "1"}
    mocked.post(FLOWS, status=429, headers=headers, payload={"message": "slow"})
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    assert sum(fake_sleep.waits) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_never_retried(
    status: int, client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOW_URL, status=status, repeat=True)
    with pytest.raises(aiodots.APIError):
        await client.flows.retrieve("f1")
    assert attempts(mocked, "GET", FLOW_URL) == 1


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_reads_retry_every_retryable_status(
    status: int, client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOW_URL, status=status)
    mocked.get(FLOW_URL, payload=flow_json())
    await client.flows.retrieve("f1")
    assert attempts(mocked, "GET", FLOW_URL) == 2


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_flow_create_is_not_repeated_after_a_status_that_may_follow_processing(
    status: int, client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=status, repeat=True)
    with pytest.raises(aiodots.ServerError):
        await client.flows.create(steps=["compliance"])
    assert attempts(mocked, "POST", FLOWS) == 1


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_a_flow_create_is_repeated_after_a_status_that_proves_no_processing(
    status: int, client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=status)
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    assert attempts(mocked, "POST", FLOWS) == 2


async def test_a_flow_create_is_retried_when_the_connection_could_not_be_opened(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    key = aiohttp.client_reqrep.ConnectionKey("api.dots.dev", 443, True, True, None, None, None)
    mocked.post(FLOWS, exception=aiohttp.ClientConnectorError(key, OSError(111, "refused")))
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    assert attempts(mocked, "POST", FLOWS) == 2


async def test_a_create_that_timed_out_waiting_for_the_pool_is_retried_and_made_once() -> None:
    """One connection, held by a slow read: a create whose timeout runs out while it
    waits for it was never sent. It used to fail as an ambiguous timeout, and a create
    is not repeated after one; now the wait runs out first (the timeout's connect part)
    and says so, and the create is sent once the connection is free."""
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, max_connections=1,
        retry_policy=aiodots.RetryPolicy(max_retries=3, backoff_initial=0.5),
    ) as dots:
        flow = await dots.flows.create(steps=["payout"])
        emulator.set_faults(FaultPlan(latency=1.5))
        slow = asyncio.create_task(dots.flows.retrieve(flow.id))  # the only connection
        await asyncio.sleep(0.2)
        emulator.set_faults(FaultPlan())
        created_before = emulator.stats.created
        made = await asyncio.wait_for(dots.flows.create(steps=["payout"], timeout=0.8), 15)
        await slow
        assert emulator.stats.created == created_before + 1
        assert made.id in emulator.flows
        assert dots.stats.retries >= 1


def test_a_pool_wait_timeout_is_a_timeout_that_was_never_sent() -> None:
    exc = aiohttp.ConnectionTimeoutError("Connection timeout to host https://h/v2/flows")
    failure = connection_failure(exc, method="POST", path="/v2/flows")
    assert isinstance(failure, aiodots.APITimeoutError)
    assert not is_ambiguous(failure)
    assert aiodots.RetryPolicy().is_retryable(failure, aiodots.Replay.UNPROCESSED_ONLY)
    # The connect part ends first, and 2 s apart where aiohttp rounds both up.
    assert attempt_timeout(30).connect == 28
    assert attempt_timeout(6).connect == 5
    assert attempt_timeout(0.8).connect == pytest.approx(0.72)


async def test_a_flow_create_is_not_retried_after_the_server_dropped_the_connection(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, exception=aiohttp.ServerDisconnectedError())
    mocked.post(FLOWS, payload=flow_json())
    with pytest.raises(aiodots.APIConnectionError, match="ServerDisconnectedError"):
        await client.flows.create(steps=["compliance"])
    assert attempts(mocked, "POST", FLOWS) == 1


async def test_a_read_is_retried_after_a_dropped_connection_and_a_timeout(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOW_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(FLOW_URL, exception=TimeoutError())
    mocked.get(FLOW_URL, payload=flow_json())
    await client.flows.retrieve("f1")
    assert attempts(mocked, "GET", FLOW_URL) == 3
    assert client.stats.connection_errors == 2


async def test_a_dropped_read_is_sent_again_only_by_the_retry_policy() -> None:
    """aiohttp sends a GET, PUT or DELETE again by itself when its connection drops, past
    `max_retries`, the limiter, the budget and `client.stats` (aioresponses never runs
    that code): the emulator, a real server, shows it."""
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url,
        retry_policy=aiodots.RetryPolicy(max_retries=1, backoff_initial=0.01),
    ) as dots:
        flow = await dots.flows.create(steps=["payout"])
        served = emulator.stats.requests
        emulator.reset_next(1)
        with pytest.raises(aiodots.APIConnectionError):
            await dots.flows.retrieve(flow.id, max_retries=0)
        assert emulator.stats.requests == served + 1
        emulator.reset_next(1)
        await dots.flows.retrieve(flow.id)
        assert emulator.stats.requests == served + 3
        assert dots.stats.retries == 1
        assert dots.stats.requests == 1 + 3


async def test_a_read_on_a_dropped_connection_goes_again_at_once_the_first_time() -> None:
    # The usual cause is a pooled connection the server closed as idle, found closed
    # only when used: aiohttp resent such a request at once by itself. The policy now
    # does, counted, limited and budgeted; a second drop in a row backs off as usual.
    policy = aiodots.RetryPolicy(max_retries=3, backoff_initial=0.05, rand=lambda: 1.0)
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, retry_policy=policy
    ) as dots:
        flow = await dots.flows.create(steps=["payout"])
        emulator.reset_next(1)
        await dots.flows.retrieve(flow.id)
        assert (dots.stats.retries, dots.stats.backoff_wait_seconds) == (1, 0.0)
        emulator.reset_next(2)
        await dots.flows.retrieve(flow.id)
        assert dots.stats.retries == 3
        assert dots.stats.backoff_wait_seconds == pytest.approx(policy.wait_for(
            aiodots.APIConnectionError("x", method="GET", path="/"), 2
        ))
        emulator.reset_next(1)
        with pytest.raises(ConnectionDropped):
            await dots.flows.retrieve(flow.id, max_retries=0)


async def test_a_timeout_surfaces_as_api_timeout_error(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOW_URL, exception=TimeoutError(), repeat=True)
    with pytest.raises(aiodots.APITimeoutError):
        await client.flows.retrieve("f1", max_retries=1)
    assert attempts(mocked, "GET", FLOW_URL) == 2


async def test_max_retries_can_be_overridden_per_call(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOW_URL, status=503, repeat=True)
    with pytest.raises(aiodots.ServerError):
        await client.flows.retrieve("f1", max_retries=0)
    assert attempts(mocked, "GET", FLOW_URL) == 1
    with pytest.raises(aiodots.ServerError):
        await client.flows.retrieve("f1", max_retries=5)
    assert attempts(mocked, "GET", FLOW_URL) == 1 + 6


async def test_a_deadline_stops_retrying_before_the_wait_would_pass_it(
    mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    policy = aiodots.RetryPolicy(max_retries=10, backoff_initial=1.0, rand=lambda: 1.0)
    mocked.get(FLOW_URL, status=503, headers={"Retry-After": "5"}, repeat=True)
    async with make_client(fake_sleep, retry_policy=policy) as dots:
        with pytest.raises(aiodots.ServerError):
            await dots.flows.retrieve("f1", deadline=2.0)
    assert attempts(mocked, "GET", FLOW_URL) == 1
    assert fake_sleep.waits == []


async def test_the_retry_budget_stops_retries_during_an_outage_and_refills_on_success(
    mocked: aioresponses.aioresponses, fake_sleep: FakeSleep
) -> None:
    budget = aiodots.RetryBudget(capacity=10, retry_cost=5, success_refill=5)
    mocked.get(FLOW_URL, status=503, repeat=True)
    async with make_client(fake_sleep, retry_budget=budget, max_retries=3) as dots:
        with pytest.raises(aiodots.ServerError):
            await dots.flows.retrieve("f1")  # 1 + 2 retries: spends all 10
        assert attempts(mocked, "GET", FLOW_URL) == 3
        with pytest.raises(aiodots.ServerError):
            await dots.flows.retrieve("f1")  # budget empty: fails at once
        assert attempts(mocked, "GET", FLOW_URL) == 4
        assert dots.stats.budget_exhausted == 2
        assert budget.tokens == 0
        mocked.clear()
        mocked.get(FLOW_URL, payload=flow_json())
        await dots.flows.retrieve("f1")
        assert budget.tokens == 5


@pytest.mark.parametrize("where", ["waiting for the answer", "in the backoff"])
async def test_a_cancelled_call_is_no_failure_wherever_it_was_cancelled(
    dots_emulator: DotsEmulator, where: str
) -> None:
    """`stats.failures` counts calls that failed; a call cancelled in its retries' backoff
    was counted as one, and the same call cancelled during its first attempt was not."""
    policy = aiodots.RetryPolicy(max_retries=3, backoff_initial=30.0, rand=lambda: 1.0)
    if where == "in the backoff":
        dots_emulator.fail_next(1, status=503)
    else:
        dots_emulator.set_faults(FaultPlan(latency=30.0))
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, retry_policy=policy
    ) as dots:
        call = asyncio.create_task(dots.flows.retrieve("f1"))
        async with asyncio.timeout(5):
            while dots_emulator.stats.requests == 0 or (  # noqa: ASYNC110 - polling
                where == "in the backoff" and dots.stats.retries == 0
            ):
                await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (dots.stats.calls, dots.stats.failures) == (1, 0)
