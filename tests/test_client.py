"""Configuration and lifecycle: credentials, environments, close, use after close."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import math
import os
import sys
import threading
import warnings
from typing import Any

import aiohttp
import aioresponses
import pytest

import aiodots
from aiodots.resources._options import call_options
from aiodots.retry import backoff_seconds
from aiodots.testing import DotsEmulator, FaultPlan

from .conftest import API_KEY, BASE_URL, CLIENT_ID, flow_json


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOTS_CLIENT_ID", "env-id")
    monkeypatch.setenv("DOTS_API_KEY", "env-key")
    monkeypatch.setenv("DOTS_BASE_URL", "http://127.0.0.1:9/api")
    client = aiodots.Client()
    assert client.client_id == "env-id"
    assert client.base_url == "http://127.0.0.1:9/api"


def test_missing_credentials_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOTS_CLIENT_ID", raising=False)
    monkeypatch.delenv("DOTS_API_KEY", raising=False)
    with pytest.raises(aiodots.ValidationError, match="DOTS_CLIENT_ID and DOTS_API_KEY"):
        aiodots.Client()
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("id-only")


def test_environment_maps_to_the_documented_hosts_and_base_url_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOTS_BASE_URL", raising=False)
    assert aiodots.Client("i", "k").base_url == "https://api.dots.dev/api"
    assert aiodots.Client("i", "k", environment="sandbox").base_url == (
        "https://pls.senddotssandbox.com/api"
    )
    assert aiodots.Client(
        "i", "k", environment="sandbox", base_url="https://api.senddotssandbox.com/api"
    ).base_url == "https://api.senddotssandbox.com/api"
    with pytest.raises(aiodots.ValidationError, match="unknown environment"):
        aiodots.Client("i", "k", environment="staging")
    with pytest.raises(aiodots.ValidationError, match="http"):
        aiodots.Client("i", "k", base_url="api.dots.dev")


def test_invalid_settings_are_validation_errors() -> None:
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", timeout=0)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", max_retries=-1)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", max_connections=0)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", rate_limit=0)


@pytest.mark.parametrize("seconds", [math.inf, math.nan, True, "30", -1.0])
def test_a_duration_that_could_never_expire_or_be_timed_is_refused(seconds: Any) -> None:
    """Infinity overflowed aiohttp's timer on every request; NaN compares false with
    everything, so it passed the check and never expired."""
    with pytest.raises(aiodots.ValidationError, match="timeout must be a finite number"):
        aiodots.Client("i", "k", timeout=seconds)
    with pytest.raises(aiodots.ValidationError, match="deadline must be a finite number"):
        aiodots.Client("i", "k", deadline=seconds)
    with pytest.raises(aiodots.ValidationError, match="timeout must be a finite number"):
        call_options(timeout=seconds)
    with pytest.raises(ValueError, match="backoff_max must be a finite number"):
        aiodots.RetryPolicy(backoff_max=seconds)


def test_settings_beside_a_retry_policy_apply_or_are_refused_never_dropped() -> None:
    policy = aiodots.RetryPolicy(max_retries=5)
    dots = aiodots.Client("i", "k", retry_policy=policy, deadline=12.0, max_retry_after=7.0)
    assert (dots.retry_policy.max_retries, dots.retry_policy.deadline) == (5, 12.0)
    assert dots.retry_policy.max_retry_after == 7.0
    assert aiodots.Client("i", "k", retry_policy=policy, max_retries=5).retry_policy == policy
    with pytest.raises(aiodots.ValidationError, match="max_retries=0 conflicts"):
        aiodots.Client("i", "k", retry_policy=policy, max_retries=0)


@pytest.mark.parametrize(
    "setting", [{"rate_limit": 5}, {"rate_limit": aiodots.RateLimit(5, 2)}, {"adaptive": False}]
)
def test_settings_of_the_own_limiter_beside_a_given_limiter_are_refused_never_dropped(
    setting: dict[str, Any],
) -> None:
    # `rate_limit` is a rate "never to exceed"; with `rate_limiter=` the client makes no
    # limiter of its own, and the ceiling (or adaptive=False) was dropped unsaid.
    with pytest.raises(aiodots.ValidationError, match="rate_limiter"):
        aiodots.Client("i", "k", rate_limiter=aiodots.AdaptiveRateLimiter(), **setting)


@pytest.mark.parametrize("rate", ["10", [10], True, {"rate": 10}])
def test_a_rate_limit_of_another_kind_is_a_validation_error(rate: Any) -> None:
    with pytest.raises(aiodots.ValidationError, match="rate_limit must be requests per second"):
        aiodots.Client("i", "k", rate_limit=rate)


def test_backoff_after_a_thousand_retries_is_its_cap_not_an_overflow() -> None:
    wait = backoff_seconds(5000, initial=0.5, maximum=8.0, rand=lambda: 1.0)
    assert wait == 8.0


async def test_close_is_idempotent_and_a_closed_client_refuses_calls(
    mocked: aioresponses.aioresponses,
) -> None:
    mocked.post(f"{BASE_URL}/v2/flows", payload=flow_json(), repeat=True)
    dots = aiodots.Client("i", "k", base_url=BASE_URL)
    await dots.flows.create(steps=["payout"])
    await dots.close()
    await dots.close()
    assert dots.closed
    with pytest.raises(aiodots.ClientClosedError, match="closed"):
        await dots.flows.create(steps=["payout"])
    with pytest.raises(aiodots.ClientClosedError):
        async with dots:
            pass


async def test_a_client_closed_before_first_use_never_opens_a_session() -> None:
    dots = aiodots.Client("i", "k")
    await dots.close()
    with pytest.raises(aiodots.ClientClosedError):
        await dots.flows.retrieve("f1")


async def test_async_with_closes_the_pool_and_leaves_no_warning(
    dots_emulator: DotsEmulator,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emu = dots_emulator
        async with aiodots.Client(**emu.credentials, base_url=emu.base_url) as d:
            await d.flows.create(steps=["payout"])
            session = d._sessions.session()
        assert session.closed
        del d, session
        gc.collect()


async def test_an_unclosed_client_warns_with_a_resource_warning(
    dots_emulator: DotsEmulator,
) -> None:
    dots = aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url)
    await dots.flows.create(steps=["payout"])
    session = dots._sessions.session()
    with pytest.warns(ResourceWarning, match="was not closed"):
        dots.__del__()
    await session.close()
    dots._sessions._closed = True  # closed by hand above; keep __del__ quiet


async def test_one_pool_serves_every_call_of_a_client(
    dots_emulator: DotsEmulator,
) -> None:
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as d:
        first = d._sessions.session()
        await asyncio.gather(*(d.flows.create(steps=["payout"]) for _ in range(20)))
        assert d._sessions.session() is first


async def test_pool_limits_are_given_as_one_object_or_by_their_count(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.05))
    limits = aiodots.Limits(max_connections=3, keepalive=5.0)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, limits=limits
    ) as dots:
        await asyncio.gather(*(dots.flows.create(steps=["payout"]) for _ in range(12)))
    assert dots_emulator.stats.max_in_flight == 3
    assert aiodots.Client(CLIENT_ID, API_KEY, limits=limits, max_connections=3) is not None
    with pytest.raises(aiodots.ValidationError, match="max_connections=8 conflicts"):
        aiodots.Client(CLIENT_ID, API_KEY, limits=limits, max_connections=8)
    with pytest.raises(aiodots.ValidationError, match="limits must be"):
        aiodots.Client(CLIENT_ID, API_KEY, limits=3)  # type: ignore[arg-type]


async def test_closing_fails_a_call_waiting_for_a_connection_and_does_not_cancel_it(
    dots_emulator: DotsEmulator,
) -> None:
    """aiohttp's close cancels the futures of requests still waiting for a pooled
    connection: such a call ended in a CancelledError nobody asked for, which a web
    handler takes for its own cancellation (and a batch for a failure of the call)."""
    dots_emulator.set_faults(FaultPlan(latency=0.5))
    queued = asyncio.Event()

    async def on_queued(*_: Any) -> None:
        queued.set()

    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(on_queued)
    dots = aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, max_connections=1,
        max_retries=0, trace_configs=[trace],
    )
    holder = asyncio.create_task(dots.flows.retrieve("f1"))
    waiting = asyncio.create_task(dots.flows.retrieve("f2"))
    async with asyncio.timeout(5):
        await queued.wait()  # `holder` has the one connection, `waiting` waits for it
        await dots.close()
        with pytest.raises(aiodots.ClientClosedError, match="closed"):
            await waiting
        with pytest.raises(aiodots.APIConnectionError):
            await holder  # its connection was closed under it
    assert dots.stats.failures == 2


async def test_trace_hooks_hear_every_answer_body(dots_emulator: DotsEmulator) -> None:
    """aiohttp tells `on_response_chunk_received` of a body from `ClientResponse.read()`
    alone: a client given trace hooks reads through it, where one without them takes
    the body from aiohttp's buffer."""
    bodies: list[bytes] = []

    async def on_chunk(*args: Any) -> None:
        bodies.append(args[-1].chunk)

    trace = aiohttp.TraceConfig()
    trace.on_response_chunk_received.append(on_chunk)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, trace_configs=[trace]
    ) as dots:
        flow = await dots.flows.create(steps=["compliance"])
        await dots.flows.retrieve(flow.id)
    assert [json.loads(body)["id"] for body in bodies] == [flow.id, flow.id]


@pytest.mark.parametrize("held_by", ["a Retry-After pause", "a retry's backoff"])
async def test_closing_ends_a_call_that_waits_to_send_at_once(
    dots_emulator: DotsEmulator, held_by: str
) -> None:
    """A call held by the limiter or sleeping before a retry went on waiting after
    `close()`, up to `max_retry_after` (60 s), only to fail with ClientClosedError then:
    a shutdown waited on calls that could never be sent."""
    policy = aiodots.RetryPolicy(max_retries=3, backoff_initial=30.0, rand=lambda: 1.0)
    dots = aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, retry_policy=policy
    )
    if held_by == "a Retry-After pause":
        dots.limiter.on_response(429, dots.limiter.now(), 30.0)
    else:
        dots_emulator.fail_next(1, status=503)
    limiter = dots.limiter
    assert isinstance(limiter, aiodots.AdaptiveRateLimiter)

    def waiting() -> bool:
        return bool(limiter._waiters) if held_by == "a Retry-After pause" else (
            dots.stats.retries > 0  # counted as the backoff's sleep begins
        )

    call = asyncio.create_task(dots.flows.retrieve("f1"))
    async with asyncio.timeout(5):
        while not waiting():  # noqa: ASYNC110 - polling until the call waits
            await asyncio.sleep(0.01)
    async with asyncio.timeout(1):
        await dots.close()
        with pytest.raises(aiodots.ClientClosedError, match="closed"):
            await call
    assert dots.stats.failures == 1
    with pytest.raises(aiodots.ClientClosedError):
        await dots.flows.retrieve("f1")  # and a call after close, as before


def test_the_public_names_are_the_documented_ones() -> None:
    documented = {
        "Client", "Flow", "CreateFlow", "Step", "FlowStep", "RedirectStep", "BatchItem",
        "DotsError", "APIError", "BadRequestError", "AuthenticationError",
        "PermissionDeniedError", "NotFoundError", "ConflictError", "UnprocessableEntityError",
        "RateLimitError", "ServerError", "APIConnectionError", "APITimeoutError",
        "ValidationError",
    }
    assert documented <= set(aiodots.__all__)
    for name in aiodots.__all__:
        assert hasattr(aiodots, name), name


def _first_use(client: aiodots.Client) -> asyncio.AbstractEventLoop:
    """A loop, not running now, in which `client` made its session."""
    loop = asyncio.new_event_loop()

    async def use() -> None:
        client._sessions.session()

    loop.run_until_complete(use())
    return loop


def _close(client: aiodots.Client, loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(client.close())
    loop.close()


def test_a_client_used_in_a_second_loop_says_so_before_sending() -> None:
    client = aiodots.Client("id", "key", base_url=BASE_URL)
    first = _first_use(client)
    try:
        with pytest.raises(RuntimeError, match="first used in another event loop"):
            asyncio.run(client.flows.retrieve("f"))
    finally:
        _close(client, first)


def test_a_client_used_from_a_loop_in_another_thread_says_so() -> None:
    client = aiodots.Client("id", "key", base_url=BASE_URL)
    first = _first_use(client)
    errors: list[BaseException] = []

    async def from_main_thread_loop() -> None:
        try:
            client._sessions.session()
        except RuntimeError as exc:
            errors.append(exc)

    # The first loop runs (in its own thread) while another thread's loop uses the client.
    runner = threading.Thread(target=first.run_forever)
    runner.start()
    try:
        asyncio.run(from_main_thread_loop())
    finally:
        first.call_soon_threadsafe(first.stop)
        runner.join(timeout=5)
        _close(client, first)
    assert len(errors) == 1
    assert "first used in another event loop" in str(errors[0])


async def test_a_task_handing_work_to_another_loop_is_told_so_there() -> None:
    # run_coroutine_threadsafe copies the calling task's context, in which this task's
    # loop was seen: the copy runs in the other loop's thread, and must ask again.
    client = aiodots.Client("id", "key", base_url=BASE_URL)
    client._sessions.session()
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever)
    runner.start()

    async def use() -> None:
        client._sessions.session()

    try:
        with pytest.raises(RuntimeError, match="first used in another event loop"):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(use(), other))
        client._sessions.session()  # this loop still may
    finally:
        other.call_soon_threadsafe(other.stop)
        runner.join(timeout=5)
        other.close()
        await client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_is_told_its_loop_is_not_the_clients() -> None:
    # The child inherits this task's context and thread id; it must not reuse the
    # parent's pool (its sockets are the parent's), whatever loop it runs.
    client = aiodots.Client("id", "key", base_url=BASE_URL)

    async def use() -> None:
        client._sessions.session()

    async def fork_after_use() -> int:
        await use()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads around
            pid = os.fork()
        if pid == 0:  # the child: exit 0 only if told
            try:
                asyncio.run(use())
            except RuntimeError as exc:
                os._exit(0 if "first used in another event loop" in str(exc) else 2)
            except BaseException:
                os._exit(3)
            os._exit(1)
        return pid

    loop = asyncio.new_event_loop()
    try:
        pid = loop.run_until_complete(fork_after_use())
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        _close(client, loop)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio's own answer is cheap there")
async def test_a_task_asks_asyncio_for_its_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # On 3.11 each asyncio.get_running_loop() is a getpid() system call: 2.5 us of CPU
    # per request, so a task's calls after its first take the loop it saw.
    asked = 0
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    async with aiodots.Client("id", "key", base_url=BASE_URL) as client:
        client._sessions.session()  # made, and this task has seen its loop
        monkeypatch.setattr(asyncio, "get_running_loop", counted)

        async def twice() -> None:  # in a task of its own (gather makes one)
            client._sessions.session()
            client._sessions.session()

        for _ in range(5):
            client._sessions.session()
        await asyncio.gather(*(twice() for _ in range(3)))  # copies of this context
        assert asked == 0
        await asyncio.create_task(twice(), context=contextvars.Context())  # a fresh one
        monkeypatch.undo()
    assert asked == 1


async def test_the_loop_that_made_the_session_keeps_using_it() -> None:
    async with aiodots.Client("id", "key", base_url=BASE_URL) as client:
        assert client._sessions.session() is client._sessions.session()
