"""Reconciliation: a create that may have taken effect is looked up, not failed or sent
blindly again. Against the emulator (real sockets, faults after processing) for what a
user relies on; the engine alone, with fakes, for its bounds."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar

import attrs
import pytest

import aiodots
from aiodots.errors import ConnectFailed
from aiodots.reconcile import (
    CALL_ID_KEY,
    Reconcile,
    ReconcileEvent,
    Reconciler,
    call_id_of,
    is_ambiguous,
    scan_newest_first,
)
from aiodots.testing import DotsEmulator, FaultPlan


class At(TypedDict):
    method: str
    path: str


AT: At = {"method": "POST", "path": "/v2/flows"}
FAST = Reconcile(settle=0.05, clock_skew=1.0)  # the emulator shares this machine's clock


def list_requests(emulator: DotsEmulator) -> int:
    return emulator.stats.by_route["GET /api/v2/flows"]


def creates_sent(emulator: DotsEmulator) -> int:
    return emulator.stats.by_route["POST /api/v2/flows"]


# -- one create, against the emulator ----------------------------------------------------


async def test_a_create_whose_answer_is_lost_after_processing_returns_the_one_flow(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next()
    flow = await dots_client.flows.create(
        steps=["compliance"], metadata={"campaign": "spring"}, reconcile=FAST
    )
    assert dots_emulator.stats.created == 1
    assert dots_emulator.stats.resets == 1
    assert creates_sent(dots_emulator) == 1  # found, so never sent again
    assert list_requests(dots_emulator) == 1
    assert flow.id in dots_emulator.flows
    assert flow.metadata is not None
    assert not isinstance(flow.metadata, str)
    assert flow.metadata["campaign"] == "spring"
    assert isinstance(flow.metadata[CALL_ID_KEY], str)  # the tag stays on the flow


async def test_a_create_reset_before_processing_is_sent_again_and_created_once(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_next()
    flow = await dots_client.flows.create(steps=["payout"], reconcile=FAST)
    assert dots_emulator.stats.created == 1
    assert creates_sent(dots_emulator) == 2
    sent = [r.json() for r in dots_emulator.stats.last_requests if r.method == "POST"]
    assert sent[0]["metadata"] == sent[1]["metadata"]  # the same call id on both sends
    assert flow.metadata == sent[1]["metadata"]


@pytest.mark.parametrize("lost", ["after processing", "before processing"])
async def test_a_flow_list_oldest_first_is_read_whole_and_never_duplicates(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, lost: str
) -> None:
    # Dots lists flows newest first; a list that does not must cost more requests, never
    # a flow twice. 150 flows older than the cutoff come first here, so a scan that
    # stopped at the date would conclude "not created" on its first page.
    for _ in range(150):
        await dots_client.flows.create(steps=["payout"])
    dots_emulator.flows_order = "oldest-first"
    await asyncio.sleep(0.05)
    before = creates_sent(dots_emulator)
    if lost == "after processing":
        dots_emulator.reset_after_next()
    else:
        dots_emulator.reset_next()
    settings = attrs.evolve(FAST, clock_skew=0.01, overscan=5, page_size=20)
    flow = await dots_client.flows.create(steps=["compliance"], reconcile=settings)

    call_id = call_id_of(flow.metadata)
    tagged = [f for f in dots_emulator.flows.values() if call_id_of(f["metadata"]) == call_id]
    assert [f["id"] for f in tagged] == [flow.id]
    assert dots_emulator.stats.duplicates == 0
    # Found at the end of the list, or provably absent from all of it and sent again.
    assert creates_sent(dots_emulator) - before == (1 if lost == "after processing" else 2)
    pages = math.ceil((150 + (1 if lost == "after processing" else 0)) / 20)
    assert list_requests(dots_emulator) == pages


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_an_error_status_after_processing_returns_the_flow_created(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, status: int
) -> None:
    dots_emulator.fail_after_next(status=status)
    flow = await dots_client.flows.create(steps=["payout"], reconcile=FAST)
    assert dots_emulator.stats.created == 1
    assert creates_sent(dots_emulator) == 1
    assert dots_emulator.flows[flow.id]["metadata"] == flow.metadata


async def test_a_500_before_processing_is_sent_again(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(status=500)
    await dots_client.flows.create(steps=["payout"], reconcile=FAST)
    assert dots_emulator.stats.created == 1
    assert creates_sent(dots_emulator) == 2


async def test_a_2xx_cut_short_is_found_instead_of_failing(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.truncate_next()
    flow = await dots_client.flows.create(steps=["payout"], reconcile=FAST)
    assert dots_emulator.stats.created == 1
    assert flow.id in dots_emulator.flows


async def test_without_reconcile_a_lost_answer_still_fails_and_is_not_repeated(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next()
    with pytest.raises(aiodots.APIConnectionError):
        await dots_client.flows.create(steps=["payout"])
    assert dots_emulator.stats.created == 1
    assert list_requests(dots_emulator) == 0
    sent = dots_emulator.stats.last_request.json()
    assert "metadata" not in sent  # no tag without reconcile


async def test_string_metadata_cannot_be_reconciled_and_nothing_is_sent(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    with pytest.raises(aiodots.ValidationError, match="metadata given as a string"):
        await dots_client.flows.create(steps=["payout"], metadata="note", reconcile=True)
    assert dots_emulator.stats.requests == 0


@pytest.mark.parametrize("reconcile", [False, True])
async def test_the_reserved_key_in_caller_metadata_is_refused(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, reconcile: bool
) -> None:
    with pytest.raises(aiodots.ValidationError, match="reserved"):
        await dots_client.flows.create(
            steps=["payout"], metadata={CALL_ID_KEY: "mine"}, reconcile=reconcile
        )
    with pytest.raises(aiodots.ValidationError, match="reserved"):
        aiodots.CreateFlow(steps=["payout"], metadata={"a": 1, CALL_ID_KEY: "x"})
    assert dots_emulator.stats.requests == 0


def test_a_caller_chosen_call_id_goes_through_with_call_id() -> None:
    request = aiodots.CreateFlow(steps=["payout"], metadata={"a": 1})
    tagged = aiodots.with_call_id(request, "job-1:row-7")
    assert tagged.metadata == {"a": 1, CALL_ID_KEY: "job-1:row-7"}
    assert request.metadata == {"a": 1}  # the original is untouched
    assert aiodots.with_call_id(tagged, "job-1:row-7") is tagged
    assert aiodots.with_call_id(tagged, "other").metadata == {"a": 1, CALL_ID_KEY: "other"}
    with pytest.raises(aiodots.ValidationError, match="string"):
        aiodots.with_call_id(aiodots.CreateFlow(steps=["payout"], metadata="x"), "id")
    with pytest.raises(aiodots.ValidationError, match="call id"):
        aiodots.with_call_id(request, "")


# -- create_many, against the emulator ---------------------------------------------------


async def test_create_many_through_resets_after_processing_ends_every_item_ok_once(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    count = 200
    dots_emulator.set_faults(FaultPlan(reset_after_rate=0.1, reset_rate=0.03, seed=11))
    events: list[ReconcileEvent] = []
    # Six sends per call, not the default three: at these fault rates a call gives up
    # after three ambiguous sends about once in 40 runs of 200 items (two resets before
    # processing, then any fault), and the test is about reconciling, not giving up.
    settings = attrs.evolve(FAST, on_event=events.append, max_attempts=6)
    users = [str(uuid.uuid4()) for _ in range(count)]
    requests = ({"steps": ["payout"], "user_id": u, "metadata": {"n": i}}
                for i, u in enumerate(users))
    items = [item async for item in dots_client.flows.create_many(
        requests, concurrency=16, reconcile=settings)]

    assert all(item.ok for item in items), [item.error for item in items if not item.ok]
    stats = dots_emulator.stats
    assert stats.created == count
    assert stats.duplicates == 0
    assert set(stats.created_per_user) == set(users)
    kinds = Counter(e.kind for e in events)
    assert kinds["ambiguous"] >= 10  # the faults did strike (seeded: about 13% of creates)
    assert kinds["ambiguous"] == kinds["found"] + kinds["not-found"]
    assert kinds["found"] >= 1
    assert kinds["not-found"] >= 1
    assert kinds["gave-up"] == 0
    # Every item's request carries its call id, and its flow the same one.
    for item in items:
        assert item.result is not None
        assert call_id_of(item.result.metadata) is not None
        assert call_id_of(item.result.metadata) == call_id_of(item.request.metadata)
    # The documented bound: one scan per round, a round serves every call then due, and
    # a scan reads at most ceil((flows created in its window + overscan) / page) + 1
    # pages; the window here is at most the whole run.
    scans = [e for e in events if e.kind == "scan"]
    assert len(scans) <= kinds["ambiguous"]
    assert sum(e.calls for e in scans) == kinds["ambiguous"]
    per_scan = math.ceil((count + settings.overscan) / settings.page_size) + 1
    assert all(e.pages <= per_scan for e in scans)
    pages = sum(e.pages for e in scans)
    assert pages <= list_requests(dots_emulator) <= pages + stats.resets  # a reset list is retried


async def test_calls_waiting_at_the_same_time_share_one_scan(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next(8)
    events: list[ReconcileEvent] = []
    settings = Reconcile(settle=0.2, clock_skew=1.0, on_event=events.append)
    items = [item async for item in dots_client.flows.create_many(
        [{"steps": ["payout"]}] * 8, concurrency=8, reconcile=settings)]
    assert all(item.ok for item in items)
    assert dots_emulator.stats.created == 8
    scans = [e for e in events if e.kind == "scan"]
    assert len(scans) < 8  # shared: eight lost answers never cost eight scans
    assert sum(e.calls for e in scans) == 8
    assert list_requests(dots_emulator) == sum(e.pages for e in scans)


async def test_create_many_with_string_metadata_fails_that_item_only(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    items = [item async for item in dots_client.flows.create_many(
        [{"steps": ["payout"], "metadata": "text"}, {"steps": ["payout"]}],
        ordered=True, reconcile=True)]
    assert isinstance(items[0].error, aiodots.ValidationError)
    assert items[1].ok
    assert dots_emulator.stats.created == 1


async def test_create_many_keeps_a_caller_chosen_call_id(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next()
    request = aiodots.with_call_id(aiodots.CreateFlow(steps=["payout"]), "row-42")
    items = [item async for item in dots_client.flows.create_many([request], reconcile=FAST)]
    assert items[0].result is not None
    assert items[0].result.metadata == {CALL_ID_KEY: "row-42"}
    assert dots_emulator.stats.created == 1


# -- the engine, with fakes --------------------------------------------------------------


@attrs.frozen
class Obj:
    id: str
    created: datetime
    metadata: Any = None


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pages_of(objects: Sequence[Obj], size: int = 2) -> AsyncIterator[Sequence[Obj]]:
    async def gen() -> AsyncIterator[Sequence[Obj]]:
        for start in range(0, len(objects), size):
            yield objects[start:start + size]

    return gen()


def at(seconds: float, call_id: str | None = None, name: str = "") -> Obj:
    return Obj(name or f"o{seconds}", T0 + timedelta(seconds=seconds),
               {CALL_ID_KEY: call_id} if call_id else {"x": 1})


async def test_a_scan_keeps_reading_past_the_cutoff_by_the_overscan_margin() -> None:
    # Newest first, but not strictly: "wanted" is listed among older flows, 24 places
    # past the first one older than the cutoff.
    old = [at(40 - i) for i in range(30)]
    old.insert(24, at(60, "wanted"))
    listing = [at(100 - i) for i in range(10)] + old

    async def scan(overscan: int) -> tuple[dict[str, Obj], int]:
        return await scan_newest_first(
            pages_of(listing, 5), cutoff=T0 + timedelta(seconds=50), overscan=overscan,
            match=lambda c: c == "wanted", expect=1,
        )

    found, pages = await scan(25)
    assert found["wanted"].created == T0 + timedelta(seconds=60)
    assert pages == 7  # found as item 35 of 41, and it was the only one wanted: stop
    found, pages = await scan(20)
    assert found == {}  # a margin too small misses it: 21 old ones in a row, then stop
    assert pages == 7  # at item 32


async def test_a_scan_stops_once_every_wanted_id_is_found() -> None:
    listing = [at(9, "a"), at(8), at(7, "b")] + [at(6 - i) for i in range(20)]
    found, pages = await scan_newest_first(
        pages_of(listing), cutoff=T0, overscan=100, match={"a", "b"}.__contains__, expect=2
    )
    assert set(found) == {"a", "b"}
    assert pages == 2


async def test_a_duplicate_is_logged_with_the_servers_text_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ids and call ids are the server's text: written as they came, a newline in one
    # would forge a log line.
    forged = "x\nINFO:aiodots:all clear"
    listing = [at(9, forged, name="new\nline"), at(8, forged, name="old")]
    with caplog.at_level(logging.WARNING, logger="aiodots"):
        found, _ = await scan_newest_first(
            pages_of(listing), cutoff=T0, overscan=10, match=lambda c: True
        )
    assert found[forged].id == "old"  # the oldest object answers for its call
    (record,) = [r for r in caplog.records if "two objects" in r.getMessage()]
    assert "\n" not in record.getMessage()
    assert "INFO:aiodots:all clear" in record.getMessage()


async def test_a_scan_that_would_read_too_far_fails_instead() -> None:
    listing = [at(100 - i) for i in range(50)]
    with pytest.raises(aiodots.reconcile.ScanTooLong):
        await scan_newest_first(pages_of(listing), cutoff=T0, overscan=0,
                                match=lambda c: True, max_pages=3)


Item = TypeVar("Item")  # what a listed page holds


def listed_pages(
    objects: Sequence[Item], size: int, fetched: list[int]
) -> AsyncIterator[aiodots.Page[Item]]:
    """`objects` as the API lists them: pages that say whether more follow, each page
    counted in `fetched` as it is requested (as `Pages.pages()` stops after a last page
    without asking for another)."""
    async def gen() -> AsyncIterator[aiodots.Page[Item]]:
        for start in range(0, len(objects), size):
            fetched.append(start // size + 1)
            more = start + size < len(objects)
            yield aiodots.Page(tuple(objects[start:start + size]), has_more=more)

    return gen()


@pytest.mark.parametrize("source", ["pages", "sequences"])
async def test_a_scan_may_read_exactly_max_pages_and_no_more(source: str) -> None:
    """A list that ended on page `max_pages` raised ScanTooLong as if it went on: a lone
    create whose look-up needed every page failed instead of being sent again."""
    def scan(count: int, fetched: list[int]) -> Any:
        listing = [at(100 - i) for i in range(count)]  # all newer than the cutoff
        pages = listed_pages(listing, 10, fetched) if source == "pages" else pages_of(
            listing, 10
        )
        return scan_newest_first(pages, cutoff=T0, overscan=0,
                                 match=lambda c: c == "wanted", max_pages=3)

    fetched: list[int] = []
    assert await scan(30, fetched) == ({}, 3)  # the list ends on page 3: read whole
    with pytest.raises(aiodots.reconcile.ScanTooLong):
        await scan(31, fetched := [])  # a 4th page follows
    if source == "pages":
        assert fetched == [1, 2, 3]  # known from the 3rd page: the 4th is never asked for


async def test_a_lone_create_whose_look_up_reads_exactly_max_pages_is_sent_again(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    for _ in range(20):  # all newer than the cutoff: the list is 2 whole pages of 10
        await dots_client.flows.create(steps=["payout"])
    dots_emulator.reset_stats()
    dots_emulator.reset_next()  # not created: the look-up reads the whole list
    settings = attrs.evolve(FAST, clock_skew=30.0, page_size=10, max_pages=2)
    await dots_client.flows.create(steps=["payout"], reconcile=settings)
    assert list_requests(dots_emulator) == 2
    assert creates_sent(dots_emulator) == 2  # provably not created: sent again
    assert len(dots_emulator.flows) == 21
    # Now the list goes on past page 2: the look-up gives up there.
    dots_emulator.reset_stats()
    dots_emulator.reset_next()
    with pytest.raises(aiodots.APIConnectionError) as raised:
        await dots_client.flows.create(steps=["payout"], reconcile=settings)
    assert "could not look call" in "".join(raised.value.__notes__)
    assert list_requests(dots_emulator) == 2  # never a 3rd page
    assert creates_sent(dots_emulator) == 1


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (aiodots.APIConnectionError("reset", **AT), True),
        (aiodots.APITimeoutError("slow", **AT), True),
        (ConnectFailed("refused", **AT), False),
        (aiodots.TLSVerificationError("untrusted", **AT), False),  # never left either
        (aiodots.ServerError("x", status=500, **AT), True),
        (aiodots.ServerError("x", status=502, **AT), True),
        (aiodots.ServerError("x", status=504, **AT), True),
        (aiodots.ServerError("x", status=503, **AT), False),
        (aiodots.RateLimitError("x", status=429, **AT), False),
        (aiodots.BadRequestError("x", status=400, **AT), False),
        (aiodots.InvalidResponseError("x", status=200, **AT), True),
        (aiodots.ResponseTooLargeError("x", limit=1, size=2, declared=True, status=200, **AT),
         True),
        # An answer too large to read is judged by its status, as any other answer is: a
        # create answered 500 may have gone through, one answered 503 did not.
        (aiodots.ResponseTooLargeError("x", limit=1, size=2, declared=True, status=500, **AT),
         True),
        (aiodots.ResponseTooLargeError("x", limit=1, size=2, declared=True, status=503, **AT),
         False),
        (aiodots.ValidationError("x"), False),
    ],
)
def test_which_failures_are_ambiguous(exc: BaseException, ambiguous: bool) -> None:
    assert is_ambiguous(exc) is ambiguous


class FakeServer:
    """A send that fails ambiguously a set number of times, creating or not, and a list."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes  # per send: "ok", "lost" (created), "reset" (not created)
        self.objects: list[Obj] = []
        self.sends = 0
        self.lists = 0
        self.list_error: Exception | None = None

    async def send(self, call_id: str) -> Obj:
        outcome = self.outcomes[self.sends] if self.sends < len(self.outcomes) else "ok"
        self.sends += 1
        if outcome == "reset":
            raise aiodots.APIConnectionError("reset before processing", **AT)
        obj = Obj(f"id{len(self.objects)}", datetime.now(UTC), {CALL_ID_KEY: call_id})
        self.objects.append(obj)
        if outcome == "lost":
            raise aiodots.ServerError("after processing", status=502, **AT)
        return obj

    def newest_first(self, size: int) -> AsyncIterator[Sequence[Obj]]:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return pages_of(list(reversed(self.objects)), size)


def reconciler(server: FakeServer, **settings: Any) -> tuple[Reconciler[Obj], list[str]]:
    kinds: list[str] = []
    options = {"settle": 0.0, **settings}
    return Reconciler(
        server.newest_first, Reconcile(on_event=lambda e: kinds.append(e.kind), **options)
    ), kinds


async def test_attempts_are_bounded_and_the_last_error_says_why() -> None:
    server = FakeServer(["reset"] * 10)
    engine, kinds = reconciler(server, max_attempts=3)
    with pytest.raises(aiodots.APIConnectionError) as raised:
        await engine.run("c1", lambda: server.send("c1"))
    assert server.sends == 3
    assert server.objects == []
    assert kinds.count("scan") == 3  # the last send is looked up too
    assert kinds[-1] == "gave-up"
    assert "sent 3 times" in "".join(raised.value.__notes__)


async def test_a_lost_answer_after_a_reset_is_found_on_the_second_look() -> None:
    server = FakeServer(["reset", "lost"])
    engine, kinds = reconciler(server)
    obj = await engine.run("c1", lambda: server.send("c1"))
    assert server.objects == [obj]
    assert server.sends == 2
    assert kinds == ["ambiguous", "scan", "not-found", "ambiguous", "scan", "found"]


@pytest.mark.parametrize(
    "exc",
    [ConnectFailed("refused", **AT), aiodots.ServerError("busy", status=503, **AT),
     aiodots.BadRequestError("bad", status=400, **AT)],
)
async def test_a_failure_that_cannot_have_taken_effect_is_raised_without_a_look_up(
    exc: Exception,
) -> None:
    server = FakeServer([])
    engine, kinds = reconciler(server)

    async def send() -> Obj:
        raise exc

    with pytest.raises(type(exc)):
        await engine.run("c1", send)
    assert server.lists == 0
    assert kinds == []


async def test_a_failed_look_up_fails_the_call_with_its_own_error_and_a_note() -> None:
    server = FakeServer(["lost"])
    server.list_error = aiodots.ServerError("list down", status=503, **AT)
    engine, kinds = reconciler(server)
    with pytest.raises(aiodots.ServerError, match="after processing") as raised:
        await engine.run("c1", lambda: server.send("c1"))
    assert "could not look call c1 up" in "".join(raised.value.__notes__)
    assert server.sends == 1  # never sent blindly again
    assert kinds[-1] == "gave-up"


async def test_a_cancelled_waiter_leaves_no_scan_running() -> None:
    server = FakeServer(["reset"])
    engine, _ = reconciler(server, settle=30.0)
    task = asyncio.create_task(engine.run("c1", lambda: server.send("c1")))
    while engine._task is None:  # noqa: ASYNC110 - waiting for the look-up to start
        await asyncio.sleep(0)
    for _ in range(5):  # let the look-up reach its 30 s wait
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done, _ = await asyncio.wait([engine._task], timeout=5)
    assert done  # ended (cancelled, or found nobody waiting), not asleep for 30 s
    assert server.lists == 0


async def test_a_call_arriving_as_the_last_waiter_is_cancelled_is_still_served() -> None:
    """The look-up task of a cancelled last waiter ends at its next step; a call that
    came in between saw it not done, started none, and waited forever."""
    server = FakeServer(["lost", "lost"])
    engine, _ = reconciler(server, settle=0.2)
    first = asyncio.create_task(engine.run("c1", lambda: server.send("c1")))
    while engine._task is None:  # noqa: ASYNC110 - waiting for the look-up to start
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    first.cancel()  # its wake-up is queued before the next call's start
    second = asyncio.create_task(engine.run("c2", lambda: server.send("c2")))
    with pytest.raises(asyncio.CancelledError):
        await first
    found = await asyncio.wait_for(second, 5)
    assert call_id_of(found.metadata) == "c2"  # the object its lost answer made
    assert server.sends == 2  # each call sent once, never again


async def test_after_a_success_the_scan_window_follows_the_servers_clock() -> None:
    # This machine's clock runs an hour behind the server's. Once one create of the batch
    # has succeeded, its `created` bounds the scan, so the window does not stretch back
    # an hour (and a clock far off cannot make the scan read the whole history).
    def engine(server: FakeServer, pages: list[int]) -> Reconciler[Obj]:
        def on_event(event: ReconcileEvent) -> None:
            if event.kind == "scan":
                pages.append(event.pages)

        return Reconciler(
            server.newest_first,
            Reconcile(settle=0.0, overscan=2, page_size=2, on_event=on_event),
            now=lambda: datetime.now(UTC) - timedelta(hours=1),
        )

    now = datetime.now(UTC)
    older = [Obj(f"old{i}", now - timedelta(seconds=200 - i)) for i in range(100)]

    pages: list[int] = []
    anchored = FakeServer(["ok", "reset"])
    anchored.objects = list(older)
    reconciler_ = engine(anchored, pages)
    await reconciler_.run("c1", lambda: anchored.send("c1"))
    await reconciler_.run("c2", lambda: anchored.send("c2"))
    assert anchored.sends == 3  # c2: reset, looked up (not found), sent again
    # Newest first: c1's object, then older ones past the cutoff: past the overscan (2),
    # and enough of them (20 objects in all) to judge the list's order: 10 pages of 2.
    assert pages == [10]

    pages.clear()
    alone = FakeServer(["reset"])
    alone.objects = list(older)
    await engine(alone, pages).run("c3", lambda: alone.send("c3"))
    assert pages == [50]  # no success to go by: back to the skewed clock, the whole list


async def test_leaving_a_reconciled_batch_early_leaves_no_look_up_running(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next(3)
    batch = dots_client.flows.create_many(
        [{"steps": ["payout"]}] * 6, concurrency=6, reconcile=Reconcile(settle=30.0)
    )

    def look_ups() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "aiodots-reconcile"]

    async with batch:
        async for item in batch:
            assert item.ok  # one of the three answered at once
            async with asyncio.timeout(5):
                while not look_ups():  # noqa: ASYNC110 - the lost answers start a look-up
                    await asyncio.sleep(0.01)
            break
    async with asyncio.timeout(5):
        while look_ups():  # noqa: ASYNC110 - waiting for the cancelled task to finish
            await asyncio.sleep(0.01)
    assert list_requests(dots_emulator) == 0
    assert dots_emulator.stats.created == 6


@pytest.mark.parametrize("how", ["create", "create_many"])
async def test_closing_the_client_ends_a_reconciled_call_waiting_to_look_up_at_once(
    dots_emulator: DotsEmulator, how: str
) -> None:
    """A create whose answer was lost waits `settle` before it is looked up; `close()`
    left it waiting the whole settle, and only then failed, where every other call
    waiting to be sent ends at once with ClientClosedError."""
    dots_emulator.reset_after_next()
    events: list[ReconcileEvent] = []
    settings = Reconcile(settle=30.0, on_event=events.append)
    dots = aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url)

    async def call() -> Any:
        if how == "create":
            return await dots.flows.create(steps=["payout"], reconcile=settings)
        (item,) = [i async for i in dots.flows.create_many(
            [{"steps": ["payout"]}], reconcile=settings
        )]
        if item.error is not None:
            raise item.error
        return item.result

    task = asyncio.create_task(call())
    async with asyncio.timeout(5):
        while not events:  # noqa: ASYNC110 - the lost answer: the settle begins
            await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await dots.close()
        with pytest.raises(aiodots.ClientClosedError, match="closed") as raised:
            await task
    # What it does not know is said: the create may have taken effect.
    assert isinstance(raised.value.__cause__, aiodots.APIConnectionError)
    assert "may have taken effect" in "".join(raised.value.__notes__)
    assert [e.kind for e in events] == ["ambiguous", "gave-up"]
    async with asyncio.timeout(1):
        while [t for t in asyncio.all_tasks() if t.get_name() == "aiodots-reconcile"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the look-up nobody waits for is cancelled too
    assert list_requests(dots_emulator) == 0
    assert dots_emulator.stats.created == 1


async def test_an_unreadable_2xx_that_the_list_does_not_show_is_never_sent_again() -> None:
    server = FakeServer([])
    engine, kinds = reconciler(server)

    async def send() -> Obj:
        server.sends += 1
        raise aiodots.InvalidResponseError("cut short", status=200, **AT)

    with pytest.raises(aiodots.InvalidResponseError) as raised:
        await engine.run("c1", send)
    assert server.sends == 1
    assert "not sending again" in "".join(raised.value.__notes__)
    assert kinds == ["ambiguous", "scan", "not-found", "gave-up"]


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_reconcile_takes_true_false_or_settings_only(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator, value: Any
) -> None:
    with pytest.raises(aiodots.ValidationError, match="reconcile must be"):
        await dots_client.flows.create(steps=["payout"], reconcile=value)
    assert dots_emulator.stats.requests == 0


async def test_a_list_that_is_not_newest_first_is_read_to_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Oldest first: stopping at the date would wrongly conclude "not created".
    listing = [at(i) for i in range(30)] + [at(100, "wanted")]
    with caplog.at_level(logging.WARNING, logger="aiodots"):
        found, read = await scan_newest_first(
            pages_of(listing, 10), cutoff=T0 + timedelta(seconds=50),
            overscan=5, match=lambda c: c == "wanted",
        )
    assert set(found) == {"wanted"}
    assert read == 4
    assert "not newest first" in caplog.text
    # Not there at all: every page is read, and the answer is "not created".
    found, read = await scan_newest_first(
        pages_of(listing[:-1], 10), cutoff=T0 + timedelta(seconds=50),
        overscan=5, match=lambda c: c == "wanted",
    )
    assert found == {}
    assert read == 3
    # ... within `max_pages`, past which the look-up gives up rather than guess.
    with pytest.raises(aiodots.reconcile.ScanTooLong):
        await scan_newest_first(
            pages_of(listing, 10), cutoff=T0 + timedelta(seconds=50),
            overscan=5, match=lambda c: c == "wanted", max_pages=3,
        )
    # Newest first with some disorder (creates finishing out of order) is fine.
    shuffled = [at(60 - i + (1.5 if i % 5 == 0 else 0)) for i in range(60)]
    found, _ = await scan_newest_first(pages_of(shuffled, 10), cutoff=T0 + timedelta(seconds=30),
                                       overscan=5, match=lambda c: c == "wanted")
    assert found == {}


async def test_one_call_id_in_flight_twice_is_refused(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.05))
    request = aiodots.with_call_id(aiodots.CreateFlow(steps=["payout"]), "same")
    items = [item async for item in dots_client.flows.create_many(
        [request, request], concurrency=2, ordered=True, reconcile=FAST)]
    assert items[0].ok
    assert isinstance(items[1].error, aiodots.ValidationError)
    assert "already in use" in str(items[1].error)
    assert dots_emulator.stats.created == 1
