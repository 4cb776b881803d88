"""Money calls are safe to repeat: one idempotency key per logical call, the same on every
attempt, retries after ambiguous failures, and the first attempt found again when the
API refuses a retry's key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

import aiodots
from aiodots.resources._base import find_transfer
from aiodots.retry import REPLAY, Replay
from aiodots.testing import DotsEmulator
from aiodots.testing.spec import load_spec

FAST = aiodots.RetryPolicy(max_retries=3, backoff_initial=0.001, backoff_max=0.005)


@pytest_asyncio.fixture(params=["replay", "reject"])
async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[DotsEmulator]:
    """Both readings of Dots' documents: a repeated key answers the first answer again
    (the idempotency reference), or is refused (the spec's text)."""
    async with DotsEmulator(idempotency=request.param) as emu:
        yield emu


@pytest_asyncio.fixture
async def client(emulator: DotsEmulator) -> AsyncIterator[aiodots.Client]:
    async with aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, retry_policy=FAST
    ) as dots:
        yield dots


async def make_user(client: aiodots.Client) -> str:
    user = await client.users.create(
        first_name="Grace", last_name="Hopper", email="grace@example.com",
        country_code="1", phone_number="4155550100",
    )
    assert user.id is not None
    return user.id


def sent_keys(emulator: DotsEmulator, path: str) -> list[str]:
    return [r.json()["idempotency_key"] for r in emulator.stats.last_requests if r.path == path]


def test_every_operation_whose_body_takes_a_key_is_idempotent_and_no_other() -> None:
    spec = load_spec()
    keyed = set()
    for key, op in spec.operations.items():
        schema = spec.resolve(op.body_schema) if op.body_schema else {}
        if "idempotency_key" in (schema.get("properties") or {}):
            keyed.add(key)
    assert keyed == {key for key, replay in REPLAY.items() if replay is Replay.IDEMPOTENT}
    assert len(keyed) == 9


def test_the_replay_table_covers_exactly_the_operations() -> None:
    assert set(REPLAY) == set(aiodots.OPERATIONS)


async def test_a_payout_gets_a_uuid4_key_when_the_caller_gives_none(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user_id = await make_user(client)
    await client.payouts.create(user_id=user_id, amount=1500, platform="paypal")
    (key,) = sent_keys(emulator, "/api/v2/payouts")
    assert uuid.UUID(key).version == 4


async def test_each_logical_call_gets_its_own_key(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user_id = await make_user(client)
    for _ in range(3):
        await client.payouts.create(user_id=user_id, amount=1500, platform="paypal")
    assert len(set(sent_keys(emulator, "/api/v2/payouts"))) == 3
    assert emulator.stats.created_by_resource["payouts"] == 3


async def test_the_callers_key_is_sent_as_given(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user_id = await make_user(client)
    mine = uuid.uuid4()
    await client.transfers.create(user_id=user_id, amount=-200, idempotency_key=mine)
    assert sent_keys(emulator, "/api/v2/transfers") == [str(mine)]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_keyed_payout_is_retried_after_5xx_with_the_same_key(
    client: aiodots.Client, emulator: DotsEmulator, status: int
) -> None:
    user_id = await make_user(client)
    emulator.fail_next(2, status=status)
    transfer = await client.payouts.create(user_id=user_id, amount=900, platform="venmo")
    keys = sent_keys(emulator, "/api/v2/payouts")
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert emulator.stats.created_by_resource["payouts"] == 1
    assert transfer.amount == 900


async def test_a_keyed_transfer_is_retried_after_a_connection_reset(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user_id = await make_user(client)
    emulator.reset_next(1)
    await client.transfers.create(user_id=user_id, amount=-300)
    assert emulator.stats.resets == 1
    (key,) = set(sent_keys(emulator, "/api/v2/transfers"))
    assert emulator.stats.requests_per_key[key] == 2
    assert emulator.stats.created_by_resource["transfers"] == 1


async def test_a_lost_answer_after_the_money_moved_returns_that_transfer_in_both_readings(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    # The first attempt creates the payout, then its answer is cut short. The retry
    # carries the same key: the API answers the first answer again ("replay"), or refuses
    # the key ("reject") and the client finds the payout in the transfers list.
    user_id = await make_user(client)
    emulator.truncate_next(1)
    transfer = await client.payouts.create(
        user_id=user_id, amount=4200, platform="ach", metadata={"invoice": "A-17"}
    )
    assert emulator.stats.created_by_resource["payouts"] == 1
    (stored,) = emulator.api.transfers.values()
    assert transfer.id == stored["id"]
    assert transfer.amount == 4200


async def test_a_refused_key_that_cannot_be_matched_raises_the_distinct_error() -> None:
    async with DotsEmulator(idempotency="reject") as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, retry_policy=FAST
    ) as client:
        user_id = await make_user(client)
        # An identical payout made moments before: two candidates, so no guess.
        await client.payouts.create(user_id=user_id, amount=700, platform="paypal")
        emulator.truncate_next(1)
        with pytest.raises(aiodots.IdempotencyKeyReusedError) as caught:
            await client.payouts.create(user_id=user_id, amount=700, platform="paypal")
    error = caught.value
    assert error.idempotency_key is not None
    assert error.idempotency_key in str(error)
    assert "went through" in str(error)
    assert emulator.stats.created_by_resource["payouts"] == 2


async def test_a_key_used_before_this_call_answers_the_same_transfer_in_both_readings(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    # An earlier run died before recording its answer; the rerun sends the same key.
    user_id = await make_user(client)
    key = uuid.uuid4()
    first = await client.transfers.create(user_id=user_id, amount=-100, idempotency_key=key)
    again = await client.transfers.create(user_id=user_id, amount=-100, idempotency_key=key)
    assert again.id == first.id
    assert emulator.stats.created_by_resource["transfers"] == 1


async def test_a_key_reused_for_a_different_transfer_is_an_ordinary_conflict() -> None:
    async with DotsEmulator(idempotency="reject") as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, retry_policy=FAST
    ) as client:
        user_id = await make_user(client)
        key = uuid.uuid4()
        await client.transfers.create(user_id=user_id, amount=-100, idempotency_key=key)
        with pytest.raises(aiodots.ConflictError) as caught:
            await client.transfers.create(user_id=user_id, amount=-999, idempotency_key=key)
    assert not isinstance(caught.value, aiodots.IdempotencyKeyReusedError)
    assert emulator.stats.created_by_resource["transfers"] == 1


async def test_a_payout_link_key_answers_the_existing_link_in_both_readings(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    key = uuid.uuid4()
    first = await client.payout_links.create(amount=1000, idempotency_key=key)
    again = await client.payout_links.create(amount=1000, idempotency_key=key)
    assert first.id == again.id
    assert emulator.stats.created_by_resource["payout_links"] == 1


async def test_create_many_payouts_keeps_one_key_per_item_across_attempts(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user_id = await make_user(client)
    emulator.fail_next(3, status=502)
    requests: list[dict[str, Any]] = [
        {"user_id": user_id, "amount": 100 + n, "platform": "paypal"} for n in range(10)
    ]
    items = [item async for item in client.payouts.create_many(requests, concurrency=4)]
    assert all(item.ok for item in items), [item.error for item in items]
    keys: set[str] = {str(item.request.idempotency_key) for item in items}
    assert len(keys) == 10
    assert emulator.stats.created_by_resource["payouts"] == 10
    assert sum(emulator.stats.requests_per_key[key] for key in keys) == 13


async def test_a_bad_amount_fails_before_anything_is_sent(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    before = emulator.stats.requests
    with pytest.raises(aiodots.ValidationError, match="amount"):
        await client.payouts.create(user_id=str(uuid.uuid4()), amount=0, platform="paypal")
    with pytest.raises(aiodots.ValidationError, match="integer"):
        await client.payouts.create(
            user_id=str(uuid.uuid4()), amount=10.5, platform="paypal"  # type: ignore[arg-type]
        )
    assert emulator.stats.requests == before


async def test_a_payout_status_change_is_delivered_as_a_webhook(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    received: list[bytes] = []
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        emulator.webhooks.subscribe(f"http://127.0.0.1:{port}/hook")
        user_id = await make_user(client)
        payout = await client.payouts.create(user_id=user_id, amount=800, platform="paypal")
        assert payout.id is not None
        emulator.set_transfer_status(payout.id, "completed")
        await emulator.webhooks.drain()
    finally:
        await runner.cleanup()
    events = [aiodots._json.loads(body)["event"] for body in received]
    assert events == ["transfer.pending", "transfer.completed"]


@pytest.mark.parametrize("as_listed", [{}, None], ids=["empty-object", "null"])
async def test_recovery_takes_metadata_listed_empty_as_the_none_that_was_sent(
    as_listed: dict[str, Any] | None,
) -> None:
    """A payout sent without metadata may be listed with `{}` (or null): recovering the
    transfer a lost answer made must still find it, or the call fails though it paid."""
    started = datetime.now(UTC)
    listed = aiodots.Transfer(
        id="t-1", created=started + timedelta(seconds=1), user_id="u-1", amount=700,
        metadata=as_listed,
    )
    queries: list[Any] = []

    class Listing:
        async def _send(self, op: Any, *, params: Any = None, options: Any = None) -> Any:
            queries.append(params)
            return aiodots.Page(data=(listed,), has_more=False)

    sent = {"user_id": "u-1", "amount": 700, "platform": "paypal"}  # no metadata
    found = await find_transfer(Listing(), sent, started, None)  # type: ignore[arg-type]
    assert found is listed
    assert queries[0]["user_id"] == "u-1"
    tagged = {**sent, "metadata": {"invoice": "A-1"}}  # metadata that was sent must match
    assert await find_transfer(Listing(), tagged, started, None) is None  # type: ignore[arg-type]
