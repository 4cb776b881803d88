"""Reconciling user creates: the user list carries no creation time and its order is not
documented, so a look-up stops only where the list has proven its order with the
reconciler's own users (`aiodots.watermark`). Against the emulator (real sockets, faults
after processing) for what a user relies on, and the scan alone, with fakes, for the
stopping rule."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import pytest

import aiodots
from aiodots.reconcile import (
    CALL_ID_KEY,
    FOUND_AGAIN_IN,
    Reconcile,
    ReconcileEvent,
    ScanTooLong,
    call_id_of,
)
from aiodots.testing import DotsEmulator, FaultPlan
from aiodots.watermark import WATERMARK, Known, scan_to_floor

from .test_cli import run_cli
from .test_readme import block_after
from .test_reconcile import listed_pages

USER: dict[str, Any] = {
    "first_name": "Ada", "last_name": "Lovelace", "country_code": "44",
    "phone_number": "2071234567",
}
FAST = Reconcile(settle=0.05)


def user(n: int, **fields: Any) -> dict[str, Any]:
    return {**USER, "email": f"user{n}@example.com", **fields}


def list_requests(emulator: DotsEmulator) -> int:
    return emulator.stats.by_route["GET /api/v2/users"]


def creates_sent(emulator: DotsEmulator) -> int:
    return emulator.stats.by_route["POST /api/v2/users"]


def users_by_email(emulator: DotsEmulator) -> Counter[str]:
    return Counter(u["email"] for u in emulator.api.users.values())


async def existing_users(client: aiodots.Client, emulator: DotsEmulator, count: int) -> None:
    """`count` users on the account before the test's own, made without reconciliation."""
    rows = (user(n, email=f"old{n}@example.com") for n in range(count))
    items = [item async for item in client.users.create_many(rows, concurrency=32)]
    assert all(item.ok for item in items)
    emulator.reset_stats()


def test_every_create_the_table_names_takes_reconcile_on_create_and_create_many() -> None:
    client = aiodots.Client("id", "key", base_url="https://api.dots.dev/api")
    for create, listing in FOUND_AGAIN_IN.items():
        assert aiodots.OPERATIONS[listing].rsplit(".", 1)[1] == "list"
        resource = getattr(client, aiodots.OPERATIONS[create].rsplit(".", 1)[0])
        for name in ("create", "create_many"):
            parameter = inspect.signature(getattr(resource, name)).parameters["reconcile"]
            assert parameter.default is False, (create, name)


# -- one create, against the emulator ----------------------------------------------------


async def test_a_user_create_whose_answer_is_lost_returns_the_one_user(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    await existing_users(dots_client, dots_emulator, 250)
    dots_emulator.reset_after_next()
    created = await dots_client.users.create(
        **user(1), metadata={"crm": "7"}, reconcile=FAST
    )
    assert dots_emulator.stats.resets == 1
    assert creates_sent(dots_emulator) == 1  # found, so never sent again
    assert list_requests(dots_emulator) == 1  # the newest user is on the first page
    assert users_by_email(dots_emulator)["user1@example.com"] == 1
    assert created.id in dots_emulator.api.users
    assert created.metadata == dots_emulator.api.users[created.id]["metadata"]
    assert isinstance(created.metadata, dict)
    assert created.metadata["crm"] == "7"
    assert isinstance(created.metadata[CALL_ID_KEY], str)


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_an_error_status_after_a_user_was_created_returns_that_user(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, status: int
) -> None:
    dots_emulator.fail_after_next(status=status)
    created = await dots_client.users.create(**user(1), reconcile=FAST)
    assert creates_sent(dots_emulator) == 1
    assert list(dots_emulator.api.users) == [created.id]


async def test_a_lone_user_create_not_made_reads_the_whole_list_then_sends_again(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    # Nothing of this call's own to prove the list's order by: the documented cost of a
    # lone create that was not made is the whole list, ceil(users / page size) requests.
    await existing_users(dots_client, dots_emulator, 250)
    dots_emulator.reset_next()
    events: list[ReconcileEvent] = []
    created = await dots_client.users.create(
        **user(1), reconcile=attrs.evolve(FAST, on_event=events.append)
    )
    assert creates_sent(dots_emulator) == 2
    assert users_by_email(dots_emulator)["user1@example.com"] == 1
    assert len(dots_emulator.api.users) == 251
    assert list_requests(dots_emulator) == math.ceil(250 / 100)
    assert [e.kind for e in events] == ["ambiguous", "scan", "not-found"]
    sent = [r.json() for r in dots_emulator.stats.last_requests if r.method == "POST"]
    assert sent[0]["metadata"] == sent[1]["metadata"] == created.metadata


async def test_a_lone_user_create_that_would_read_past_max_pages_fails_with_a_note(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    await existing_users(dots_client, dots_emulator, 30)
    dots_emulator.reset_next()
    with pytest.raises(aiodots.APIConnectionError) as raised:
        await dots_client.users.create(
            **user(1), reconcile=Reconcile(settle=0.05, page_size=10, max_pages=2)
        )
    assert "could not look call" in "".join(raised.value.__notes__)
    assert creates_sent(dots_emulator) == 1  # never sent blindly again
    assert list_requests(dots_emulator) == 2
    assert len(dots_emulator.api.users) == 30


async def test_closing_the_client_ends_a_reconciled_user_create_waiting_to_look_up(
    dots_emulator: DotsEmulator,
) -> None:
    dots_emulator.reset_after_next()
    events: list[ReconcileEvent] = []
    dots = aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url)
    task = asyncio.create_task(dots.users.create(
        **user(1), reconcile=Reconcile(settle=30.0, on_event=events.append)
    ))
    async with asyncio.timeout(5):
        while not events:  # noqa: ASYNC110 - the lost answer: the settle begins
            await asyncio.sleep(0.01)
    async with asyncio.timeout(2):  # not the 30 s settle
        await dots.close()
        with pytest.raises(aiodots.ClientClosedError, match="closed") as raised:
            await task
    assert "may have taken effect" in "".join(raised.value.__notes__)
    assert list_requests(dots_emulator) == 0
    assert len(dots_emulator.api.users) == 1


async def test_a_reconciled_user_create_that_succeeds_costs_no_list_request(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    await dots_client.users.create(**user(1), reconcile=True)
    assert dots_emulator.stats.requests == 1
    assert call_id_of(dots_emulator.stats.last_request.json()["metadata"]) is not None


async def test_string_metadata_cannot_be_reconciled_and_nothing_is_sent(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    with pytest.raises(aiodots.ValidationError, match="metadata given as a string"):
        await dots_client.users.create(**user(1), metadata="note", reconcile=True)
    with pytest.raises(aiodots.ValidationError, match="reserved"):
        await dots_client.users.create(**user(1), metadata={CALL_ID_KEY: "x"}, reconcile=True)
    with pytest.raises(aiodots.ValidationError, match="reconcile must be"):
        await dots_client.users.create(**user(1), reconcile="yes")  # type: ignore[arg-type]
    # The key is aiodots' even without reconcile=, as for flows: a tag written by hand
    # would be taken for a call's own by a later look-up.
    with pytest.raises(aiodots.ValidationError, match="reserved"):
        await dots_client.users.create(**user(1), metadata={CALL_ID_KEY: "x"})
    assert dots_emulator.stats.requests == 0


async def test_without_reconcile_a_lost_user_answer_fails_and_is_not_repeated(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next()
    with pytest.raises(aiodots.APIConnectionError):
        await dots_client.users.create(**user(1))
    assert creates_sent(dots_emulator) == 1
    assert list_requests(dots_emulator) == 0
    assert "metadata" not in dots_emulator.stats.last_request.json()


@pytest.mark.slow
async def test_users_create_on_the_command_line_reconciles_with_a_flag(
    dots_emulator: DotsEmulator,
) -> None:
    args = ("users", "create", "--first-name", "Ada", "--last-name", "L", "--email",
            "ada@example.com", "--country-code", "1", "--phone-number", "4155550100")
    dots_emulator.reset_after_next()
    code, _, err = await run_cli(dots_emulator, *args)
    assert code == 1  # as before: the answer was lost, the user may exist
    assert "error:" in err
    dots_emulator.reset_after_next()
    code, out, err = await run_cli(dots_emulator, *args, "--reconcile")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["id"] in dots_emulator.api.users
    assert creates_sent(dots_emulator) == 2  # one per run: the second was found, not resent
    assert len(dots_emulator.api.users) == 2


# -- create_many, against the emulator ---------------------------------------------------


async def test_a_reconciled_batch_reads_one_watermark_page_before_its_first_send(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    items = [item async for item in dots_client.users.create_many(
        [user(n) for n in range(10)], concurrency=5, reconcile=Reconcile(page_size=50))]
    assert all(item.ok for item in items)
    first = dots_emulator.stats.last_requests[0]
    assert (first.method, first.path, first.query) == ("GET", "/api/v2/users", {"limit": "50"})
    assert list_requests(dots_emulator) == 1
    assert creates_sent(dots_emulator) == 10


async def test_user_batch_through_lost_answers_ends_every_item_ok_once_at_a_bounded_cost(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    await existing_users(dots_client, dots_emulator, 600)
    count, page = 200, 50
    dots_emulator.set_faults(
        FaultPlan(reset_after_rate=0.08, fail_after_rate=0.05, reset_rate=0.05, seed=5)
    )
    events: list[ReconcileEvent] = []
    # Six sends per call: three resets before processing in a row (0.05 ** 3 per call)
    # would otherwise fail an item about once in 40 runs.
    settings = Reconcile(settle=0.05, overscan=10, page_size=page, max_attempts=6,
                         on_event=events.append)
    items = [item async for item in dots_client.users.create_many(
        (user(n, metadata={"n": n}) for n in range(count)), concurrency=16, reconcile=settings)]

    assert all(item.ok for item in items), [item.error for item in items if not item.ok]
    by_email = users_by_email(dots_emulator)
    assert len(dots_emulator.api.users) == 600 + count  # nothing lost, nothing twice
    assert all(by_email[f"user{n}@example.com"] == 1 for n in range(count))
    for item in items:
        assert item.result is not None
        assert call_id_of(item.result.metadata) == call_id_of(item.request.metadata)
    kinds = Counter(e.kind for e in events)
    assert kinds["ambiguous"] >= 10  # the faults did strike
    assert kinds["ambiguous"] == kinds["found"] + kinds["not-found"]
    assert kinds["found"] >= 1
    assert kinds["not-found"] >= 1
    assert kinds["gave-up"] == 0
    # The documented bound for a newest-first list: a scan reads to a proven floor and
    # `overscan` past it, and a floor is at worst the watermark, below which lie only the
    # 600 users from before: never the whole list (16 pages).
    scans = [e for e in events if e.kind == "scan"]
    assert sum(e.calls for e in scans) == kinds["ambiguous"]
    bound = math.ceil((count + settings.overscan) / page) + 1
    assert all(e.pages <= bound for e in scans), [e.pages for e in scans]
    pages = sum(e.pages for e in scans)
    watermark = 1
    resets = dots_emulator.stats.resets
    assert pages + watermark <= list_requests(dots_emulator) <= pages + watermark + resets
    # Per ambiguous item, the list requests it cost (the README quotes this).
    assert pages / kinds["ambiguous"] <= 3


async def test_a_user_list_that_is_oldest_first_is_read_whole_and_never_duplicates(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    # The order the watermark rule would get wrong: oldest first, the watermark page is
    # the account's oldest users, met at once. Taken as "newest first", every user the
    # batch lost an answer for would look not created and be made twice.
    await existing_users(dots_client, dots_emulator, 120)
    dots_emulator.api.users_order = "oldest-first"
    count, page = 80, 20
    dots_emulator.set_faults(FaultPlan(reset_after_rate=0.15, fail_after_rate=0.1,
                                       reset_rate=0.1, seed=3))
    events: list[ReconcileEvent] = []
    settings = Reconcile(settle=0.05, overscan=5, page_size=page, max_attempts=6,
                         on_event=events.append)
    items = [item async for item in dots_client.users.create_many(
        (user(n) for n in range(count)), concurrency=8, reconcile=settings)]

    assert all(item.ok for item in items), [item.error for item in items if not item.ok]
    by_email = users_by_email(dots_emulator)
    assert all(by_email[f"user{n}@example.com"] == 1 for n in range(count))
    assert len(dots_emulator.api.users) == 120 + count
    kinds = Counter(e.kind for e in events)
    assert kinds["found"] >= 1
    assert kinds["not-found"] >= 1
    # Every scan read past all 120 older users: nothing let it stop at the watermark.
    scans = [e for e in events if e.kind == "scan"]
    assert scans
    assert all(e.pages > 120 // page for e in scans), [e.pages for e in scans]


async def test_user_create_many_with_string_metadata_fails_that_item_only(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    items = [item async for item in dots_client.users.create_many(
        [user(1, metadata="text"), user(2)], ordered=True, reconcile=True)]
    assert isinstance(items[0].error, aiodots.ValidationError)
    assert items[1].ok
    assert dots_emulator.stats.created_by_resource["users"] == 1


async def test_user_create_many_keeps_a_caller_chosen_call_id(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    request = aiodots.with_call_id(aiodots.CreateUser(**user(1)), "crm-import:row-42")
    dots_emulator.set_faults(FaultPlan(fail_after_rate=1.0))  # every create: made, then 502
    items = [item async for item in dots_client.users.create_many([request], reconcile=FAST)]
    assert items[0].result is not None
    assert items[0].result.metadata == {CALL_ID_KEY: "crm-import:row-42"}
    assert len(dots_emulator.api.users) == 1


async def test_the_readme_users_example_runs_as_written(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    code = block_after("#### Users: `users.create(..., reconcile=True)`")
    body = textwrap.indent(code.replace("...", "pass"), "    ")
    namespace: dict[str, Any] = {}
    exec(f"async def example(dots, rows):\n{body}", namespace)
    dots_emulator.reset_after_next()
    await namespace["example"](dots_client, [user(n) for n in range(3)])
    assert sorted(users_by_email(dots_emulator).values()) == [1, 1, 1, 1]


# -- the scan alone, with fakes ----------------------------------------------------------


@attrs.frozen
class Obj:
    id: str
    metadata: Any = None


def pages_of(objects: Sequence[Obj], size: int = 2) -> AsyncIterator[Sequence[Obj]]:
    async def gen() -> AsyncIterator[Sequence[Obj]]:
        for start in range(0, len(objects), size):
            yield objects[start:start + size]

    return gen()


def mine(name: str, call_id: str | None = None) -> Obj:
    return Obj(name, {CALL_ID_KEY: call_id or f"call-{name}"})


def others(prefix: str, count: int) -> list[Obj]:
    return [Obj(f"{prefix}{i}") for i in range(count)]


async def scan(
    listing: Sequence[Obj], known: dict[str, Known], wanted: dict[str, int], *,
    overscan: int = 0, size: int = 2, max_pages: int | None = None,
) -> tuple[set[str], int]:
    found, pages = await scan_to_floor(
        pages_of(listing, size), known=known, wanted=wanted, overscan=overscan,
        max_pages=max_pages,
    )
    return {obj.id for obj in found.values()}, pages


# Ticks of one batch: the watermark (w0, w1); then a (got at tick 1) and b (got at tick
# 2), whose calls began before any answer came back (since 0); c (tick 3) began after a
# and b were got (since 2). The call looked up began at tick 2: after a and b, so both
# are floors for it.
WATER = {"w0": WATERMARK, "w1": WATERMARK}
A, B, C = Known(since=0, tick=1), Known(since=0, tick=2), Known(since=2, tick=3)


async def test_newest_first_the_scan_stops_at_a_proven_floor_and_overscan_past_it() -> None:
    listing = [mine("c"), *others("new", 3), mine("b"), mine("a"), *others("w", 2),
               *others("old", 40)]
    known = {**WATER, "a": A, "b": B, "c": C}
    # b precedes c, and c is listed before it: b is a proven floor for the call (since 2).
    found, pages = await scan(listing, known, {"wanted": 2})
    assert found == set()
    assert pages == 3  # b is the 5th object: pages of 2, stop at the end of page 3
    found, pages = await scan(listing, known, {"wanted": 2}, overscan=4)
    assert pages == 5  # and 4 more objects read past it
    # A call that began before any answer (since 0) can stop only at the watermark,
    # proven once a, b and c (all made after it) were listed before it.
    found, pages = await scan(listing, known, {"wanted": 0})
    assert pages == 4


async def test_one_own_user_listed_first_does_not_prove_the_order() -> None:
    # c is listed before the watermark, as if newest first, but a and b are not: the
    # order is something else, and the user looked up lies past the watermark. A rule
    # that trusted the first own user seen would say "not created" here.
    listing = [mine("c"), *others("w", 2), mine("a"), mine("target", "wanted"), mine("b"),
               *others("old", 10)]
    found, pages = await scan(listing, {**WATER, "a": A, "b": B, "c": C}, {"wanted": 0})
    assert (found, pages) == ({"target"}, 3)


async def test_oldest_first_no_floor_is_proven_and_the_scan_reads_to_the_end() -> None:
    listing = [*others("w", 2), *others("mid", 5), mine("a"), mine("b"), mine("c")]
    found, pages = await scan(listing, {**WATER, "a": A, "b": B, "c": C}, {"wanted": 2})
    assert found == set()
    assert pages == math.ceil(len(listing) / 2)
    with pytest.raises(ScanTooLong, match="without proving where to stop"):
        await scan(listing, {**WATER, "a": A, "b": B, "c": C}, {"wanted": 2}, max_pages=3)


@pytest.mark.parametrize("source", ["pages", "sequences"])
async def test_a_scan_to_the_end_may_read_exactly_max_pages_and_no_more(source: str) -> None:
    known = {**WATER, "a": A, "b": B, "c": C}  # oldest first: read to the end

    async def scan_of(count: int, fetched: list[int]) -> tuple[set[str], int]:
        listing = [*others("w", 2), mine("a"), mine("b"), mine("c"), *others("new", count - 5)]
        pages = listed_pages(listing, 2, fetched) if source == "pages" else pages_of(listing)
        found, read = await scan_to_floor(
            pages, known=known, wanted={"wanted": 2}, overscan=0, max_pages=3
        )
        return {obj.id for obj in found.values()}, read

    fetched: list[int] = []
    assert await scan_of(6, fetched) == (set(), 3)  # the list ends on page 3
    with pytest.raises(ScanTooLong):
        await scan_of(7, fetched := [])
    if source == "pages":
        assert fetched == [1, 2, 3]


async def test_a_lone_user_create_whose_look_up_reads_exactly_max_pages_is_sent_again(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    await existing_users(dots_client, dots_emulator, 20)  # 2 whole pages of 10
    dots_emulator.reset_next()  # not created: a lone create's look-up reads the whole list
    settings = Reconcile(settle=0.05, page_size=10, max_pages=2)
    await dots_client.users.create(**user(1), reconcile=settings)
    assert list_requests(dots_emulator) == 2
    assert creates_sent(dots_emulator) == 2  # provably not created: sent again
    assert len(dots_emulator.api.users) == 21
    # With 21 users the list goes on past page 2 (the boundary's other side is
    # test_a_lone_user_create_that_would_read_past_max_pages_fails_with_a_note).


async def test_with_nothing_of_its_own_to_go_by_a_scan_reads_the_whole_list() -> None:
    # A lone create: the reconciler knows no user, so no floor can be proven.
    listing = others("u", 9)
    found, pages = await scan(listing, {}, {"wanted": 0})
    assert (found, pages) == (set(), 5)
    # The watermark alone proves nothing either: nothing of the batch is listed yet.
    found, pages = await scan(listing, {"u0": WATERMARK}, {"wanted": 0})
    assert pages == 5


async def test_a_deleted_own_user_means_no_proof_and_a_whole_scan() -> None:
    # b was deleted since: the watermark cannot be proven, so the scan reads on.
    listing = [mine("c"), mine("a"), *others("w", 2), *others("old", 6)]
    found, pages = await scan(listing, {**WATER, "a": A, "b": B, "c": C}, {"wanted": 0})
    assert (found, pages) == (set(), 5)


async def test_a_scan_stops_as_soon_as_every_wanted_call_is_found() -> None:
    listing = [mine("x", "one"), *others("n", 2), mine("y", "two"), *others("old", 20)]
    found, pages = await scan(listing, {}, {"one": 0, "two": 0})
    assert found == {"x", "y"}
    assert pages == 2
