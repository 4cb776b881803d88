"""The emulator's webhook sender, end to end over 127.0.0.1: signed deliveries that Svix's
own verifier accepts, retries on Svix's (compressed) schedule with the same svix-id and a
fresh signature, and no task left behind when the emulator stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import svix.webhooks
from aiohttp import web
from aiohttp.test_utils import TestServer

import aiodots
from aiodots.testing import SVIX_SCHEDULE, DotsEmulator, WebhookSender
from aiodots.webhooks import FlowEvent, TransferEvent, WebhookEvent, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@attrs.define
class Received:
    headers: dict[str, str]
    body: bytes


@attrs.define
class Receiver:
    """A webhook endpoint for tests: answers the queued statuses first, then 204, and
    keeps every request and every event that verified."""

    statuses: list[int] = attrs.Factory(list)
    delay: float = 0.0
    requests: list[Received] = attrs.Factory(list)
    arrived: asyncio.Event = attrs.Factory(asyncio.Event)
    events: list[WebhookEvent] = attrs.Factory(list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body))
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.statuses:
            return web.Response(status=self.statuses.pop(0))
        self.events.append(verify(body, request.headers, SECRET))
        return web.Response(status=204)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        receiver.url = str(server.make_url("/hook"))
        yield receiver


def ticking_clock(step: float = 10.0) -> Callable[[], float]:
    """Real time, moved on by `step` seconds at each reading: attempts made milliseconds
    apart still get different timestamps, as Svix's retries minutes apart do."""
    start, ticks = time.time(), itertools.count()
    return lambda: start + step * next(ticks)


def running_coroutines() -> list[str]:
    return [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]


async def test_completing_a_flow_delivers_a_signed_flow_updated(
    dots_emulator: DotsEmulator, dots_client: aiodots.Client
) -> None:
    async with serving(Receiver()) as receiver:
        dots_emulator.webhooks.subscribe(receiver.url, SECRET)
        flow = await dots_client.flows.create(steps=["compliance", "payout"])
        message = dots_emulator.complete_flow(flow.id)
        async with asyncio.timeout(10):
            await message.wait()

    [request] = receiver.requests
    # The independent check: Svix's own verifier accepts what the emulator sent.
    svix.webhooks.Webhook(SECRET).verify(request.body, request.headers)
    assert json.loads(request.body) == {"event": "flow.updated", "flow_id": flow.id}
    assert request.headers["svix-id"] == message.id == request.headers["webhook-id"]
    [event] = receiver.events
    assert isinstance(event, FlowEvent)
    assert event.flow_id == flow.id
    assert event.delivery_id == message.id
    [delivery] = message.deliveries
    assert delivery.state == "succeeded"
    assert [a.status for a in delivery.attempts] == [204]
    assert (await dots_client.flows.retrieve(flow.id)).completed_steps == ("compliance", "payout")


async def test_emit_sends_dots_flat_payload_to_every_endpoint_under_one_message_id() -> None:
    other_secret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    async with (
        DotsEmulator() as emulator,
        serving(Receiver()) as first,
        serving(Receiver()) as second,
    ):
        emulator.webhooks.subscribe(first.url, SECRET)
        emulator.webhooks.subscribe(second.url, other_secret)
        second.statuses = [204]  # answered without this test's SECRET check
        message = emulator.webhooks.emit("transfer.completed", {"transfer_id": "t-1"})
        async with asyncio.timeout(10):
            await message.wait()

    [event] = first.events
    assert isinstance(event, TransferEvent)
    assert event.transfer_id == "t-1"
    [request] = second.requests
    svix.webhooks.Webhook(other_secret).verify(request.body, request.headers)
    assert request.headers["svix-id"] == message.id == first.requests[0].headers["svix-id"]


async def test_a_failed_delivery_is_retried_with_the_same_id_and_a_new_signature() -> None:
    sender = WebhookSender(schedule=(0, 0.01, 0.01), clock=ticking_clock())
    async with DotsEmulator(webhooks=sender) as emulator, serving(
        Receiver(statuses=[500, 503])
    ) as receiver:
        emulator.webhooks.subscribe(receiver.url, SECRET)
        message = emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
        async with asyncio.timeout(10):
            await message.wait()

    [delivery] = message.deliveries
    assert [a.status for a in delivery.attempts] == [500, 503, 204]
    assert delivery.state == "succeeded"
    ids = {r.headers["svix-id"] for r in receiver.requests}
    timestamps = [int(r.headers["svix-timestamp"]) for r in receiver.requests]
    signatures = {r.headers["svix-signature"] for r in receiver.requests}
    assert ids == {message.id}
    assert timestamps == sorted(set(timestamps))  # a new, later timestamp each attempt
    assert len(signatures) == 3
    for request in receiver.requests:
        svix.webhooks.Webhook(SECRET).verify(request.body, request.headers)
    # The receiver sees the message once it answers 2xx: one event, that message's id.
    assert [e.delivery_id for e in receiver.events] == [message.id]


async def test_a_delivery_that_never_succeeds_makes_every_attempt_of_svix_schedule() -> None:
    assert list(SVIX_SCHEDULE) == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    # 1e-5 turns Svix's 27.6 hours into about a second.
    sender = WebhookSender(time_scale=1e-5)
    async with DotsEmulator(webhooks=sender) as emulator, serving(
        Receiver(statuses=[500] * 100)
    ) as receiver:
        emulator.webhooks.subscribe(receiver.url, SECRET)
        message = emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
        async with asyncio.timeout(30):
            await message.wait()

    [delivery] = message.deliveries
    assert delivery.state == "failed"
    assert [a.number for a in delivery.attempts] == list(range(1, 9))
    assert len(receiver.requests) == 8


async def test_no_response_counts_as_a_failure_with_its_reason() -> None:
    sender = WebhookSender(schedule=(0, 0.01), timeout=0.2)
    async with DotsEmulator(webhooks=sender) as emulator, serving(
        Receiver(delay=5)
    ) as slow:
        # A port nothing listens on: take one from a server that has stopped.
        async with serving(Receiver()) as gone:
            closed_url = gone.url
        emulator.webhooks.subscribe(closed_url, SECRET)
        emulator.webhooks.subscribe(slow.url, SECRET)
        message = emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
        async with asyncio.timeout(10):
            await message.wait()

    refused, timed_out = message.deliveries
    for delivery in (refused, timed_out):
        assert delivery.state == "failed"
        assert [a.status for a in delivery.attempts] == [None, None]
    assert all("Connect" in (a.error or "") for a in refused.attempts)
    assert all("Timeout" in (a.error or "") for a in timed_out.attempts)


async def test_stopping_the_emulator_cancels_pending_deliveries_and_leaves_no_task() -> None:
    sender = WebhookSender(schedule=(0, 3600))
    async with serving(Receiver(statuses=[500])) as receiver:
        async with DotsEmulator(webhooks=sender) as emulator:
            emulator.webhooks.subscribe(receiver.url, SECRET)
            message = emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
            async with asyncio.timeout(10):
                await receiver.arrived.wait()
            assert sender.pending == 1
            assert "WebhookSender._deliver" in running_coroutines()
        assert sender.pending == 0
        assert message.deliveries[0].state == "cancelled"
        assert len(receiver.requests) == 1
        assert "WebhookSender._deliver" not in running_coroutines()


async def test_drain_waits_for_every_delivery() -> None:
    sender = WebhookSender(schedule=(0, 0.01))
    async with DotsEmulator(webhooks=sender) as emulator, serving(
        Receiver(statuses=[500])
    ) as receiver:
        emulator.webhooks.subscribe(receiver.url, SECRET)
        for n in range(3):
            emulator.webhooks.emit("flow.updated", {"flow_id": f"f-{n}"})
        async with asyncio.timeout(10):
            await sender.drain()
        assert sender.pending == 0
        assert len(receiver.events) == 3
        assert len(receiver.requests) == 4


async def test_a_generated_secret_is_in_svix_format_and_never_in_a_repr() -> None:
    sender = WebhookSender()
    endpoint = sender.subscribe("http://127.0.0.1:9/hook")
    assert endpoint.secret.startswith("whsec_")
    svix.webhooks.Webhook(endpoint.secret)  # Svix reads it
    assert endpoint.secret not in repr(endpoint)
    assert endpoint.secret not in repr(sender.endpoints)
    await sender.close()


def test_bad_settings_fail_at_once() -> None:
    with pytest.raises(ValueError, match="schedule"):
        WebhookSender(schedule=())
    with pytest.raises(ValueError, match="schedule"):
        WebhookSender(schedule=(0, -1))
    with pytest.raises(ValueError, match="time_scale"):
        WebhookSender(time_scale=-1)
    with pytest.raises(aiodots.WebhookVerificationError):
        WebhookSender().subscribe("http://127.0.0.1:9/hook", "whsec_***")


async def test_complete_flow_names_an_unknown_flow(dots_emulator: DotsEmulator) -> None:
    with pytest.raises(KeyError, match="no flow"):
        dots_emulator.complete_flow("nope")
