"""Reconciliation for a list whose objects carry no creation time (users).

`GET /v2/users` gives no `created` and its order is not documented, so the date rule of
`aiodots.reconcile.Reconciler` cannot stop a scan. Instead a scan stops at objects the
reconciler knows to be older than the call it looks up (floors), once the list itself
has shown that it puts newer objects first.

What a `WatermarkReconciler` knows, and when (a tick counts the objects its calls got
back; a call notes the tick as it begins, its *since*):

- the watermark: in a batch, the ids on the list's first page, read once before the
  batch's first send; every one existed before any call of the batch was sent;
- every object a call of the reconciler got back (its answer, or found by a look-up):
  that call's since, and the tick it was got at. Object F *precedes* object X when F was
  got before X's call began (`F.tick <= X.since`): F was created before X was sent.

A scan reads the list from its start. An object F that precedes the call looked up is a
*floor* for it; a floor is *proven* when every object the reconciler had got before the
scan began and that F precedes was listed before F, and there is at least one. The call
is settled as not created once a proven floor and `overscan` objects past it have been
read; found, it is settled at once. A scan ends when every call it serves is settled, or
at the end of the list (`max_pages` list requests at most, then `ScanTooLong`).

Why that is right. Assume the list keeps one order by creation, newest first or oldest
first (the order may be only roughly so; `overscan` covers objects created close
together listed out of order). Oldest first, an object F precedes is listed after F, so
no floor is ever proven and the scan reads the whole list, which finds the call's object
whatever the order. Newest first, the call's object, created after F, is listed before F:
past a proven floor there is nothing left to find. An order of any other kind must list
every object the floor precedes ahead of it, by chance, before the scan stops early; any
one missing (or deleted) and the scan reads on, to the end of the list if need be. So a
"not found" is never concluded from the order unless the list has shown that order with
the reconciler's own objects.

What it costs, in list requests per scan (a scan serves every call due at once):
- in a batch, newest first: about `ceil((A + overscan) / page_size) + 1`, where A is the
  number of objects listed above the call's proven floor: those created since the
  newest object got before the call began (the batch's in-flight creates, the creates
  during `settle`, anyone else's), or since the watermark for calls sent before any
  answer came back; plus one request per batch for the watermark;
- a lone create found: its object is among the newest, so usually one request;
- a lone create not found, or any scan of a list that is not newest first: the whole
  list, `ceil(users / page_size)` requests, refused past `max_pages` with `ScanTooLong`
  (the call then fails with its own error and a note), since nothing proves where the
  object could be.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .errors import DotsError
from .models.common import Page
from .reconcile import (
    Coordinator,
    Identified,
    Reconcile,
    ScanTooLong,
    Waiter,
    call_id_of,
    closing_pages,
    more_after,
    page_contents,
)

__all__ = ["Known", "WatermarkReconciler", "scan_to_floor"]

log = logging.getLogger("aiodots")

Obj = TypeVar("Obj", bound=Identified)

#: Objects a reconciler remembers beyond its watermark (the newest are the useful
#: floors; forgetting older ones only weakens a proof, never makes it wrong).
KNOWN_LIMIT = 10_000


@attrs.frozen
class Known:
    """An object a reconciler knows exists, placed in its ticks.

    `since`: the tick at which the call that made it began (-1: in the watermark, made
    before any call). `tick`: the tick at which the reconciler learnt of it (0: the
    watermark, read before any call began).
    """

    since: int
    tick: int

    def precedes(self, other: Known) -> bool:
        """Created before `other` was sent: known before `other`'s call began."""
        return self.tick <= other.since


WATERMARK = Known(since=-1, tick=0)


async def scan_to_floor(
    pages: AsyncIterable[Sequence[Obj] | Page[Obj]],
    *,
    known: Mapping[str, Known],
    wanted: Mapping[str, int],
    overscan: int,
    max_pages: int | None = None,
) -> tuple[dict[str, Obj], int]:
    """Read `pages` (the list in its own order) for the call ids in `wanted` (each with
    its call's since) until each is found or settled past a proven floor (see the module).

    `known`: the objects the reconciler knew of as the scan began. Returns what it found
    by call id (the first listed when an id shows twice) and the pages it read.
    `max_pages` set: `ScanTooLong` when more follows the `max_pages`-th page.
    """
    async with closing_pages(pages) as iterator:
        return await _scan(iterator, known, wanted, overscan, max_pages)


async def _scan(
    pages: AsyncIterator[Sequence[Obj] | Page[Obj]],
    known: Mapping[str, Known],
    wanted: Mapping[str, int],
    overscan: int,
    max_pages: int | None,
) -> tuple[dict[str, Obj], int]:
    # The sinces of the calls whose objects are known, sorted: how many objects a floor of
    # tick t precedes is the count of sinces >= t. `listed` counts the same among the
    # objects read so far.
    expected = sorted(k.since for k in known.values() if k.since >= 0)
    listed: list[int] = []
    # Proven floors as (tick, position): only one of a lower tick than every earlier one
    # is kept, since it serves more calls (those that began at or after its tick).
    floors: list[tuple[int, int]] = []
    found: dict[str, Obj] = {}
    position = read = 0
    async for page in pages:
        read += 1
        for obj in page_contents(page)[0]:
            position += 1
            call_id = call_id_of(obj.metadata)
            if call_id is not None and call_id in wanted:
                if call_id in found:
                    log.warning("two objects carry call id %r: %r and %r",
                                call_id, found[call_id].id, obj.id)
                else:
                    found[call_id] = obj
                    if len(found) == len(wanted):
                        return found, read
            place = known.get(obj.id) if obj.id is not None else None
            if place is None:
                continue
            if not floors or place.tick < floors[-1][0]:
                cut = bisect.bisect_left(expected, place.tick)
                due = len(expected) - cut  # objects this one precedes
                seen = len(listed) - bisect.bisect_left(listed, place.tick)
                if due and seen == due:
                    floors.append((place.tick, position))
            if place.since >= 0:
                bisect.insort(listed, place.since)
        if all(
            _settled(since, floors, position, overscan)
            for call_id, since in wanted.items() if call_id not in found
        ):
            return found, read
        if max_pages is not None and read >= max_pages:
            if await more_after(pages, page):
                raise ScanTooLong(
                    f"the look-up read {read} pages without proving where to stop: the list"
                    " did not show newer users first, or there were no users of this batch"
                    " to show it by"
                )
            break  # the list ended on the last page it may read
    return found, read


def _settled(since: int, floors: list[tuple[int, int]], position: int, overscan: int) -> bool:
    # The first proven floor that precedes the call, read `overscan` objects past.
    for tick, at in floors:
        if tick <= since:
            return position - at >= overscan
    return False


class WatermarkReconciler(Coordinator[Obj, int]):
    """Runs reconciled calls for a resource whose objects carry no `created` (users).

    `listed(page_size)` lists the resource a page at a time, in the API's own order (as
    `Page`s, which say where the list ends, or plain sequences).
    `watermark=True` (for batches): read the list's first page before the first send.
    """

    def __init__(
        self,
        listed: Callable[[int], AsyncIterable[Sequence[Obj] | Page[Obj]]],
        settings: Reconcile,
        *,
        watermark: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        hold: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(settings, sleep=sleep, clock=clock, hold=hold)
        self._listed = listed
        self._tick = 0
        self._known: dict[str, Known] = {}  # in the order got: the oldest forgotten first
        self._watermark: dict[str, Known] = {}
        self._watermark_wanted = watermark
        self._watermark_lock = asyncio.Lock()

    async def run(self, call_id: str, send: Callable[[], Awaitable[Obj]]) -> Obj:
        if self._watermark_wanted:
            await self._take_watermark()
        return await super().run(call_id, send)

    async def _take_watermark(self) -> None:
        async with self._watermark_lock:  # one read for the batch; the others wait for it
            if not self._watermark_wanted:
                return
            try:
                first = await _first_page(self._listed(self.settings.page_size))
            except DotsError as exc:
                # The creates go ahead: without a watermark, calls sent before any answer
                # came back are looked up by reading the whole list.
                log.warning("reconciliation could not read the list before sending: %s", exc)
                first = []
            self._watermark = {obj.id: WATERMARK for obj in first if obj.id is not None}
            self._watermark_wanted = False

    def _bound(self) -> int:
        return self._tick

    def _got(self, obj: Obj, bound: int) -> Obj:
        if obj.id is not None:
            self._tick += 1
            self._known.pop(obj.id, None)
            self._known[obj.id] = Known(since=bound, tick=self._tick)
            if len(self._known) > KNOWN_LIMIT:
                del self._known[next(iter(self._known))]
        return obj

    async def _scan(self, ready: list[Waiter[Obj, int]]) -> tuple[dict[str, Obj], int]:
        settings = self.settings
        return await scan_to_floor(
            self._listed(settings.page_size),
            known={**self._watermark, **self._known},
            wanted={w.call_id: w.bound for w in ready},
            overscan=settings.overscan,
            max_pages=settings.max_pages,
        )


async def _first_page(pages: AsyncIterable[Sequence[Obj] | Page[Obj]]) -> Sequence[Obj]:
    async with closing_pages(pages) as iterator:
        async for page in iterator:
            return page_contents(page)[0]
        return []
