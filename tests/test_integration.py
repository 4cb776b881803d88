"""The client through real sockets against the emulator: the network path users run."""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp
import pytest

import aiodots
from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit

from .conftest import ERROR_CLASSES

USER = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


async def test_create_retrieve_and_list_round_trip(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    created = await dots_client.flows.create(
        steps=["compliance", aiodots.RedirectStep(redirect_url="https://example.com/done")],
        user_id=USER,
        metadata={"campaign": "spring"},
        require_auth=True,
    )
    assert created.steps == (aiodots.Step.COMPLIANCE, aiodots.Step.REDIRECT)
    assert created.user_id == USER
    assert created.created.tzinfo is not None
    assert await dots_client.flows.retrieve(created.id) == created
    sent = dots_emulator.stats.last_requests[0]
    assert sent.body == (
        b'{"steps":["compliance",{"name":"redirect","redirect_url":"https://example.com/done"}],'
        b'"user_id":"3c90c3cc-0d44-4b50-8888-8dd25736052a","metadata":{"campaign":"spring"},'
        b'"require_auth":true}'
    )
    for _ in range(4):
        await dots_client.flows.create(steps=["payout"])
    listed = [f.id async for f in dots_client.flows.list(limit=2)]
    assert len(listed) == 5
    assert listed[-1] == created.id
    assert dots_emulator.stats.by_route["GET /api/v2/flows"] == 3


async def test_a_list_query_arrives_as_aiohttp_sends_params(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    # aiodots writes a query of plain characters into the URL itself and leaves any other
    # to aiohttp's quoting: the server must see the bytes a hand-written `params=` sends.
    first = await dots_client.flows.create(steps=["payout"])
    await dots_client.flows.create(steps=["payout"])
    odd = "a b&c=d/é+%?#"
    await dots_client.flows.list_page(limit=1)
    await dots_client.flows.list_page(limit=1, ending_before=first.id)
    with pytest.raises(aiodots.BadRequestError):  # not a flow's id: the emulator says so
        await dots_client.flows.list_page(limit=1, starting_after=odd)
    by_client = [r.target for r in dots_emulator.stats.last_requests if r.method == "GET"]

    dots_emulator.stats.last_requests.clear()
    credentials = f"{dots_emulator.client_id}:{dots_emulator.api_key}".encode()
    auth = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    async with aiohttp.ClientSession(headers=auth) as session:
        for params in (
            {"limit": "1"}, {"limit": "1", "ending_before": first.id},
            {"limit": "1", "starting_after": odd},
        ):
            async with session.get(f"{dots_emulator.base_url}/v2/flows", params=params):
                pass
    by_hand = [r.target for r in dots_emulator.stats.last_requests]

    assert by_client == by_hand
    assert by_client[:2] == [
        "/api/v2/flows?limit=1", f"/api/v2/flows?limit=1&ending_before={first.id}"
    ]
    assert by_client[2] == "/api/v2/flows?limit=1&starting_after=a+b%26c%3Dd/%C3%A9%2B%25?%23"


# Statuses that are not retried for a create, so one injected failure surfaces as is.
@pytest.mark.parametrize(
    ("status", "cls"), [(s, c) for s, c in ERROR_CLASSES if s not in (429, 503)]
)
async def test_each_error_status_raises_its_class_over_the_network(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, status: int,
    cls: type[aiodots.APIError],
) -> None:
    dots_emulator.fail_next(status=status)
    with pytest.raises(cls) as caught:
        await dots_client.flows.create(steps=["payout"])
    assert caught.value.status == status
    assert "injected by the emulator" in caught.value.message
    assert dots_emulator.stats.requests == 1


async def test_wrong_credentials_are_an_authentication_error(
    dots_emulator: DotsEmulator,
) -> None:
    async with aiodots.Client("emulator-client-id", "wrong", base_url=dots_emulator.base_url) as d:
        with pytest.raises(aiodots.AuthenticationError, match="invalid client id or API key"):
            await d.flows.create(steps=["payout"])


async def test_a_missing_flow_is_not_found(dots_client: aiodots.Client) -> None:
    with pytest.raises(aiodots.NotFoundError):
        await dots_client.flows.retrieve("00000000-0000-0000-0000-000000000000")


async def test_503s_are_ridden_out_and_the_flow_is_created_once(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(2, status=503)
    await dots_client.flows.create(steps=["payout"], user_id=USER)
    assert dots_emulator.stats.requests == 3
    assert dots_emulator.stats.created == 1
    assert dots_client.stats.retries == 2


async def test_a_reset_is_retried_for_a_read_but_not_for_a_create(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    flow = await dots_client.flows.create(steps=["payout"])
    dots_emulator.reset_next()
    assert await dots_client.flows.retrieve(flow.id) == flow
    dots_emulator.reset_next()
    with pytest.raises(aiodots.APIConnectionError):
        await dots_client.flows.create(steps=["payout"])
    assert dots_emulator.stats.resets == 2
    assert dots_emulator.stats.created == 1


async def test_a_truncated_create_response_is_reported_not_repeated(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.truncate_next()
    with pytest.raises(aiodots.InvalidResponseError):
        await dots_client.flows.create(steps=["payout"])
    assert dots_emulator.stats.requests == 1
    assert dots_emulator.stats.created == 1


async def test_an_html_502_from_a_proxy_is_a_server_error(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(4, status=502, body="html")
    with pytest.raises(aiodots.ServerError, match="502 Bad Gateway"):
        await dots_client.flows.list_page()
    assert dots_emulator.stats.requests == 4  # 1 + 3 retries


async def test_a_connection_refused_is_retried_then_reported(
    unused_tcp_port: int,
) -> None:
    policy = aiodots.RetryPolicy(max_retries=2, backoff_initial=0.01)
    base = f"http://127.0.0.1:{unused_tcp_port}/api"
    async with aiodots.Client("i", "k", base_url=base, retry_policy=policy) as dots:
        with pytest.raises(aiodots.APIConnectionError, match="could not connect"):
            await dots.flows.create(steps=["payout"])
        assert dots.stats.requests == 3


async def test_a_slow_server_times_out_per_call(dots_emulator: DotsEmulator) -> None:
    dots_emulator.set_faults(FaultPlan(latency=1.0))
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url, max_retries=0
    ) as dots:
        started = time.monotonic()
        with pytest.raises(aiodots.APITimeoutError):
            await dots.flows.list_page(timeout=0.2)
        assert time.monotonic() - started < 0.9


async def test_429_with_retry_after_is_obeyed_through_the_network(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(
        FaultPlan(rate_limit=ServerRateLimit(rate=2, burst=1, retry_after="seconds"))
    )
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as d:
        started = time.monotonic()
        await d.flows.create(steps=["payout"])
        await d.flows.create(steps=["payout"])  # 429, Retry-After: 1, then success
        assert time.monotonic() - started >= 1.0
        assert d.stats.rate_limited == 1
    assert dots_emulator.stats.created == 2


async def test_cancelling_a_call_in_flight_leaves_no_connection_behind(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=5.0))
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as d:
        task = asyncio.create_task(d.flows.list_page())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        connector = d._sessions.session().connector
        assert connector is not None
        assert len(connector._acquired) == 0
