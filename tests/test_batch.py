"""create_many: every input ends as exactly one item, bounded and lazy, cancellable."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiodots
from aiodots.testing import DotsEmulator, FaultPlan
from benchmarks._emulator import emulator_process
from benchmarks.memory import measure


def users(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_every_request_yields_one_ok_item_and_one_flow(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    ids = users(300)
    requests = (aiodots.CreateFlow(steps=["compliance"], user_id=u) for u in ids)
    items = [item async for item in dots_client.flows.create_many(requests, concurrency=32)]
    assert sorted(i.index for i in items) == list(range(300))
    assert all(i.ok for i in items)
    assert {i.result.user_id for i in items if i.result} == set(ids)
    assert {i.request.user_id for i in items} == set(ids)
    assert dots_emulator.stats.created == 300
    assert dots_emulator.stats.duplicates == 0


async def test_mappings_are_accepted_and_bad_ones_fail_alone_without_a_request(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    inputs: list[Any] = [
        {"steps": ["compliance"]},
        {"steps": ["not-a-step"]},
        {"steps": ["payout"], "bogus": 1},
        "not a mapping",
        aiodots.CreateFlow(steps=["payout"]),
    ]
    items = {i.index: i async for i in dots_client.flows.create_many(inputs, concurrency=2)}
    assert [items[n].ok for n in range(5)] == [True, False, False, False, True]
    for n in (1, 2, 3):
        assert isinstance(items[n].error, aiodots.ValidationError)
        assert items[n].request == inputs[n]
    assert dots_emulator.stats.requests == 2
    assert dots_emulator.stats.created == 2


async def test_api_errors_are_per_item_and_the_batch_goes_on(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(3, status=400)
    items = [i async for i in dots_client.flows.create_many(
        [{"steps": ["payout"]}] * 10, concurrency=1, ordered=True
    )]
    assert [i.ok for i in items] == [False] * 3 + [True] * 7
    assert all(isinstance(i.error, aiodots.BadRequestError) for i in items[:3])
    assert dots_emulator.stats.created == 7


async def test_at_most_concurrency_calls_are_in_flight(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.02))
    async for _ in dots_client.flows.create_many([{"steps": ["payout"]}] * 120, concurrency=12):
        pass
    assert dots_emulator.stats.max_in_flight == 12


async def test_input_is_pulled_lazily_as_results_are_consumed(
    dots_client: aiodots.Client,
) -> None:
    pulled = 0

    def requests() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield {"steps": ["payout"]}

    consumed = 0
    async with dots_client.flows.create_many(requests(), concurrency=8) as batch:
        async for _ in batch:
            consumed += 1
            # 8 running, 8 finished and queued, 1 being handed over: never more ahead
            assert pulled <= consumed + 2 * 8 + 1
            if consumed == 50:
                await asyncio.sleep(0.05)  # a slow consumer must not make input pile up
                assert pulled <= consumed + 2 * 8 + 1
            if consumed == 100:
                break
    assert pulled < 150


async def test_async_iterables_are_accepted(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    async def requests() -> AsyncIterator[aiodots.CreateFlow]:
        for _ in range(40):
            await asyncio.sleep(0)
            yield aiodots.CreateFlow(steps=["payout"])

    items = [i async for i in dots_client.flows.create_many(requests(), concurrency=5)]
    assert sorted(i.index for i in items) == list(range(40))
    assert dots_emulator.stats.created == 40


async def test_ordered_yields_in_input_order_despite_uneven_latency(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.001, latency_jitter=0.02, seed=3))
    ids = users(60)
    items = [i async for i in dots_client.flows.create_many(
        ({"steps": ["payout"], "user_id": u} for u in ids), concurrency=10, ordered=True
    )]
    assert [i.index for i in items] == list(range(60))
    assert [i.result.user_id for i in items if i.result] == ids


async def test_progress_and_summary_count_successes_failures_and_retries(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(2, status=503)
    seen: list[tuple[int, int, int]] = []
    batch = dots_client.flows.create_many(
        [{"steps": ["payout"]}] * 5 + [{"steps": []}],
        concurrency=1,
        on_progress=lambda s: seen.append((s.done, s.succeeded, s.failed)),
    )
    async for _ in batch:
        pass
    summary = batch.summary
    assert (summary.done, summary.succeeded, summary.failed) == (6, 5, 1)
    assert summary.retries == 2
    assert summary.elapsed > 0
    assert summary.rate > 0
    assert len(seen) == 6
    assert seen[-1] == (6, 5, 1)


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_cancelling_the_consumer_cancels_in_flight_calls_and_leaves_no_task(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.05))
    before = other_tasks()
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        async for _ in dots_client.flows.create_many([{"steps": ["payout"]}] * 1000,
                                                     concurrency=20):
            consumed += 1

    task = asyncio.create_task(consume())
    # Cancelled once answers come back and more are in flight. A fixed 0.3 s stood for
    # that, and a loaded machine used it all up before the first answer (0 consumed).
    async with asyncio.timeout(10):
        while not consumed:  # noqa: ASYNC110 - polling what the loop has consumed
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert consumed < 1000
    leftover = {t for t in other_tasks() - before if "aiodots-batch" in t.get_name()}
    assert leftover == set()
    created_then = dots_emulator.stats.created
    await asyncio.sleep(0.2)
    assert dots_emulator.stats.created <= created_then + 20  # nothing new was started


async def test_breaking_out_of_the_loop_stops_the_batch(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    async for item in dots_client.flows.create_many([{"steps": ["payout"]}] * 1000,
                                                    concurrency=10):
        if item.index >= 0:
            break
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0.01)  # the loop's async-generator finalizer closes it
    assert not [t for t in other_tasks() if "aiodots-batch" in t.get_name()]
    assert dots_emulator.stats.created < 100


async def test_an_error_raised_by_the_input_surfaces_after_what_was_in_flight(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    def requests() -> Iterator[dict[str, Any]]:
        for _ in range(5):
            yield {"steps": ["payout"]}
        raise RuntimeError("the spreadsheet is corrupt")

    seen: list[aiodots.BatchItem[Any, Any]] = []

    async def consume() -> None:
        async for item in dots_client.flows.create_many(requests(), concurrency=3):
            seen.append(item)

    with pytest.raises(RuntimeError, match="spreadsheet"):
        await consume()
    assert len(seen) == 5
    assert all(item.ok for item in seen)
    assert dots_emulator.stats.created == 5


async def test_closing_the_batch_while_a_loop_waits_on_it_ends_that_loop(
    dots_client: aiodots.Client, dots_emulator: DotsEmulator
) -> None:
    """`aclose` from another task (a shutdown handler, say) cancelled the workers, and
    the loop waited for end markers that cancelled workers never send: forever."""
    dots_emulator.set_faults(FaultPlan(latency=0.2))
    batch = dots_client.flows.create_many([{"steps": ["payout"]}] * 100, concurrency=5)
    seen: list[int] = []

    async def consume() -> None:
        async for item in batch:
            seen.append(item.index)

    loop_task = asyncio.create_task(consume())

    async def first_answers() -> None:
        while not seen:  # noqa: ASYNC110 - polling what the loop has yielded
            await asyncio.sleep(0.01)

    await asyncio.wait_for(first_answers(), 10)  # answers yielded, more in flight
    await batch.aclose()
    await asyncio.wait_for(loop_task, 5)
    assert 0 < len(seen) < 100
    assert not [t for t in other_tasks() if "aiodots-batch" in t.get_name()]


async def test_closing_the_batch_in_its_own_loop_ends_the_loop() -> None:
    async def call(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    batch = aiodots.Batch(range(50), call, prepare=int, concurrency=4)
    seen = []
    async with asyncio.timeout(5):
        async for item in batch:
            seen.append(item.result)
            if len(seen) == 2:
                await batch.aclose()  # not `break`: the loop must still end
    assert len(seen) < 50


async def test_a_cancelled_error_of_the_call_itself_is_that_items_error() -> None:
    """A call that lets out a CancelledError of something it awaited (a future another
    task cancelled) is not the batch closing: its worker ended without the item, and the
    loop waited for that worker forever."""
    async def call(n: int) -> int:
        if n == 3:
            cancelled: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            return await cancelled
        await asyncio.sleep(0)
        return n

    async with asyncio.timeout(5):
        items = [
            item async for item in aiodots.Batch(range(10), call, prepare=int, concurrency=3)
        ]
    assert sorted(item.index for item in items) == list(range(10))
    (failed,) = [item for item in items if not item.ok]
    assert failed.index == 3
    assert isinstance(failed.error, asyncio.CancelledError)


async def test_a_closed_batch_lets_go_of_its_input() -> None:
    """The caller's generator, left suspended by a `break`, is closed once nothing holds
    it, even while the caller keeps the batch to read its summary."""
    closed: list[bool] = []

    async def requests() -> AsyncIterator[int]:
        try:
            for n in range(1000):
                yield n
        finally:
            closed.append(True)

    async def call(n: int) -> int:
        await asyncio.sleep(0)
        return n

    batch = aiodots.Batch(requests(), call, prepare=int, concurrency=2)
    async with batch:
        async for _ in batch:
            break
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0.01)  # the loop's async-generator finalizer closes it
    assert closed == [True]
    assert batch.summary.done >= 1


@pytest.mark.parametrize("concurrency", [0, -1, True, 2.5])
async def test_concurrency_must_be_a_positive_integer(
    dots_client: aiodots.Client, concurrency: Any
) -> None:
    with pytest.raises(aiodots.ValidationError):
        dots_client.flows.create_many([], concurrency=concurrency)


async def test_an_empty_input_yields_nothing(dots_client: aiodots.Client) -> None:
    batch = dots_client.flows.create_many([])
    assert [i async for i in batch] == []
    assert batch.summary.done == 0


async def test_a_batch_iterates_once(dots_client: aiodots.Client) -> None:
    batch = dots_client.flows.create_many([])
    async for _ in batch:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        batch.__aiter__()


@pytest.mark.slow
def test_memory_stays_flat_from_10k_to_100k_requests() -> None:
    with emulator_process() as base_url:
        small = measure(base_url, 10_000)
        large = measure(base_url, 100_000)
    assert small["ok"] == 10_000
    assert large["ok"] == 100_000
    growth_mib = (large["peak_rss_kib"] - small["peak_rss_kib"]) / 1024
    assert growth_mib < 4, f"peak RSS grew by {growth_mib:.1f} MiB from 10k to 100k"
