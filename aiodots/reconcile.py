"""Exactly once without a server key: find out whether an ambiguous create took effect.

A create the API gives no idempotency key (flows, users) and that fails after the request
left (a reset, a timeout, a 500/502/504) may or may not have created its object, so the
transport never repeats it. With reconciliation each logical call carries a client-made
id under the reserved metadata key `_aiodots_call_id` (`CALL_ID_KEY`). After such a
failure the call waits `settle` seconds for a slow server to finish, then reads the
resource's list newest first down to the call's start less `clock_skew` (or, once a
create of the same `Reconciler` has succeeded, down to that object's `created`, read off
the server's own clock, less `server_skew`), and `overscan` objects past that (the
list's order need not be strict; a list found not to be newest first at all is read to
its end, up to `max_pages`), looking for the id:

- found: the call returns that object, never sending again;
- not found: the create provably did not take effect, so it is sent again under the
  same id, and the same applies to that send; `max_attempts` sends at most.

`Reconciler` is the coordinator: calls waiting for a look-up at the same time share one
scan. It is generic over any listed object with `id`, `created` and `metadata`; a
resource supplies how to list pages newest first and how to send one request. Objects
with no `created` (users) are looked up by `aiodots.watermark.WatermarkReconciler`,
which shares everything here but the scan's stopping rule.

`FOUND_AGAIN_IN` names the creates that can be reconciled and the list that finds their
objects again; the generator gives those methods their `reconcile=` parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar

import attrs

from .errors import (
    APIConnectionError,
    APIError,
    ClientClosedError,
    ConnectFailed,
    DotsError,
    InvalidResponseError,
    ValidationError,
)
from .models.common import Page
from .models.reserved import CALL_ID_KEY, TaggedMetadata, check_reserved_keys
from .retry import RETRYABLE_STATUSES, UNPROCESSED_STATUSES

__all__ = [
    "CALL_ID_KEY",
    "FOUND_AGAIN_IN",
    "Coordinator",
    "Identified",
    "Reconcile",
    "ReconcileEvent",
    "Reconciler",
    "ScanTooLong",
    "Waiter",
    "call_id_of",
    "is_ambiguous",
    "scan_newest_first",
    "tag",
    "with_call_id",
]

log = logging.getLogger("aiodots")

#: 500, 502 and 504 may come after the work was done (see `aiodots.retry`).
_AMBIGUOUS_STATUSES = RETRYABLE_STATUSES - UNPROCESSED_STATUSES

#: Creates with no idempotency key whose object a reserved metadata key can find again,
#: and the list it is found in: these take `reconcile=` on `create` and `create_many`.
#: Flows' methods are written by hand; `python -m aiodots._generate` reads this table for
#: the others.
FOUND_AGAIN_IN: dict[str, str] = {
    "POST /v2/flows": "GET /v2/flows",
    "POST /v2/users": "GET /v2/users",
}

EventKind = Literal["ambiguous", "found", "not-found", "gave-up", "scan"]


class Identified(Protocol):
    """What every reconciliation reads from a listed object."""

    @property
    def id(self) -> str | None: ...

    @property
    def metadata(self) -> Mapping[str, Any] | str | None: ...


class Listed(Identified, Protocol):
    """A listed object with its creation time, which bounds `Reconciler`'s scan."""

    @property
    def id(self) -> str: ...

    @property
    def created(self) -> datetime: ...


class _Tagged(Protocol):
    """A request model with `metadata` (an attrs class, so `attrs.evolve` works)."""

    @property
    def metadata(self) -> Mapping[str, Any] | str | None: ...


T = TypeVar("T", bound=Listed)
Obj = TypeVar("Obj", bound=Identified)
B = TypeVar("B")  # what bounds one call's look-up: a cutoff date, a watermark position
R = TypeVar("R", bound=_Tagged)
P = TypeVar("P")  # a page of whatever a list holds
Item = TypeVar("Item")  # whatever a list holds


@attrs.frozen(kw_only=True)
class ReconcileEvent:
    """What reconciliation did, for `Reconcile(on_event=...)`.

    - `ambiguous`: send number `attempt` of call `call_id` failed after the request left;
    - `found`: the look-up found the object: the call returns it;
    - `not-found`: it provably was not created: the call sends again (if attempts remain);
    - `gave-up`: the call fails with its last error (attempts spent, or the look-up failed),
      or with `ClientClosedError` (the client closed while it waited for the look-up);
    - `scan`: one shared look-up finished: `pages` list requests served `calls` calls.
    """

    kind: EventKind
    call_id: str | None = None
    attempt: int = 0
    pages: int = 0
    calls: int = 0


@attrs.frozen(kw_only=True)
class Reconcile:
    """How reconciliation looks an ambiguous create up. `reconcile=True` means the defaults.

    - `settle`: seconds to wait after an ambiguous failure before looking, so that a
      server still working on the request has finished it (a create the server has not
      finished `settle` seconds after the failure is assumed never to finish).
    - `clock_skew`: how far the server's clock may be behind this machine's: the scan
      reads back to the call's start less this.
    - `server_skew`: once a create of the same batch has succeeded before a call began,
      the scan reads back only to that object's `created` (the server's clock, so this
      machine's clock no longer matters) less this, for servers whose clocks differ.
    - `overscan`: objects read past the first one older than that, since a list's order
      by `created` need not be strict.
    - `max_attempts`: sends per logical call, the first included.
    - `max_pages`: list requests one scan may make; a scan that would need more (the
      list goes on past its `max_pages`-th page) fails the call with its original error
      rather than read an account's whole history.
    - `on_event`: called with each `ReconcileEvent` (counts, logs).

    Users carry no `created` (`aiodots.watermark`): `clock_skew` and `server_skew` do not
    apply to them, and `overscan` counts users read past a proven floor.
    """

    settle: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    clock_skew: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    server_skew: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    overscan: int = attrs.field(default=100, validator=attrs.validators.ge(0))
    max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    max_pages: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    page_size: int = attrs.field(
        default=100, validator=[attrs.validators.ge(1), attrs.validators.le(100)]
    )
    on_event: Callable[[ReconcileEvent], None] | None = attrs.field(
        default=None, eq=False, repr=False
    )

    @classmethod
    def of(cls, value: bool | Reconcile) -> Reconcile | None:
        """The settings a `reconcile=` argument asks for; None when it is off."""
        if isinstance(value, Reconcile):
            return value
        if value is True:
            return cls()
        if value is False:
            return None
        raise ValidationError(f"reconcile must be true, false or a Reconcile, not {value!r}")


# -- pure decisions ----------------------------------------------------------------------


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may have taken effect: the failures the retry policy refuses
    to repeat for `Replay.UNPROCESSED_ONLY` for that very reason."""
    if _certainly_created(exc):
        return True
    if isinstance(exc, APIError):  # an answer over `max_response_size` too, by its status
        return exc.status in _AMBIGUOUS_STATUSES
    return isinstance(exc, APIConnectionError) and not isinstance(exc, ConnectFailed)


def _certainly_created(exc: BaseException) -> bool:
    # A 2xx whose body could not be read: created for sure, so never sent again.
    return isinstance(exc, InvalidResponseError) and exc.status is not None and (
        200 <= exc.status < 300
    )


def call_id_of(metadata: Mapping[str, Any] | str | None) -> str | None:
    """The call id in an object's (or a request's) metadata, if it carries one."""
    if isinstance(metadata, Mapping):
        value = metadata.get(CALL_ID_KEY)
        if isinstance(value, str):
            return value
    return None


def with_call_id(request: R, call_id: str) -> R:
    """`request` tagged with a call id of your choosing (stable across runs, say a row's
    identity), for `create_many(..., reconcile=True)`; its metadata must be a mapping."""
    metadata = request.metadata
    if isinstance(metadata, TaggedMetadata):
        if metadata.call_id == call_id:
            return request
        metadata = {k: v for k, v in metadata.items() if k != CALL_ID_KEY}
    if isinstance(metadata, str):
        raise ValidationError(
            "metadata given as a string cannot carry the reconciliation call id: give it as"
            " a mapping, or create without reconcile"
        )
    if metadata is not None:
        # Request models that do not refuse the key themselves still never carry a
        # caller's copy of it: the call would be looked up under someone else's id.
        check_reserved_keys(metadata)
    evolved: R = attrs.evolve(request, metadata=TaggedMetadata(metadata, call_id))  # type: ignore[misc]
    return evolved


def tag(request: R) -> R:
    """`request` as it is if already tagged, else tagged with a new random call id."""
    if isinstance(request.metadata, TaggedMetadata):
        return request
    return with_call_id(request, uuid.uuid4().hex)


# -- the scan ----------------------------------------------------------------------------


class ScanTooLong(DotsError):
    """A look-up would have needed more list requests than `Reconcile.max_pages`."""


def page_contents(page: Sequence[Item] | Page[Item]) -> tuple[Sequence[Item], bool | None]:
    """A listed page's objects, and whether more follow it: a `Page` says so (as
    `Pages.pages()` reads it), a plain sequence does not (None)."""
    if isinstance(page, Page):
        return page.data, page.has_more and bool(page.data)
    return page, None


async def more_after(
    pages: AsyncIterator[Sequence[Item] | Page[Item]], page: Sequence[Item] | Page[Item]
) -> bool:
    """Whether the list goes on past `page`, the `max_pages`-th read: a `Page` says so;
    after a plain sequence the iterator is asked for the next one (a request, for a list
    that goes on), which is not read. A list that ends exactly there is no reason to
    give up."""
    more = page_contents(page)[1]
    if more is not None:
        return more
    try:
        await anext(pages)
    except StopAsyncIteration:
        return False
    return True


#: Objects read before the order is judged, and the share of the changes of `created`
#: from one listed object to the next that may go up (a newest-first list has a few, from
#: creates finishing out of order; an oldest-first list has nearly all). Equal times say
#: nothing: objects created in the same millisecond list either way.
_ORDER_SAMPLE = 20
_MAX_INVERSIONS = 0.5


async def scan_newest_first(
    pages: AsyncIterable[Sequence[T] | Page[T]],
    *,
    cutoff: datetime,
    overscan: int,
    match: Callable[[str], bool],
    expect: int | None = None,
    max_pages: int | None = None,
) -> tuple[dict[str, T], int]:
    """Read `pages` (a list, newest first) for objects whose call id satisfies `match`.

    Stops when the list ends, when `expect` distinct ids have been found, or once more
    than `overscan` objects in a row were created before `cutoff`, if the list has shown
    itself newest first by then; a list that has not is read to its end, since stopping
    at a date would prove nothing there. Returns what it found by call id (the oldest
    object when an id shows twice) and the pages it read. `max_pages` set: `ScanTooLong`
    rather than read further, when more follows the `max_pages`-th page (pages given as
    `Page`s say so; after a plain sequence the iterator is asked for one more).
    """
    async with closing_pages(pages) as iterator:
        return await _scan(iterator, cutoff, overscan, match, expect, max_pages)


@contextlib.asynccontextmanager
async def closing_pages(pages: AsyncIterable[P]) -> AsyncIterator[AsyncIterator[P]]:
    """An iterator over `pages`, closed on leaving: a scan that stops early lets the
    pages' generator finish now (its request context, its cleanup), not at GC time."""
    iterator = aiter(pages)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


async def _scan(
    pages: AsyncIterator[Sequence[T] | Page[T]],
    cutoff: datetime,
    overscan: int,
    match: Callable[[str], bool],
    expect: int | None,
    max_pages: int | None,
) -> tuple[dict[str, T], int]:
    found: dict[str, T] = {}
    read = 0
    older_in_a_row = 0
    seen = ups = downs = 0
    previous: datetime | None = None
    warned = False
    async for page in pages:
        read += 1
        for obj in page_contents(page)[0]:
            seen += 1
            if previous is not None:
                if obj.created > previous:
                    ups += 1
                elif obj.created < previous:
                    downs += 1
            previous = obj.created
            call_id = call_id_of(obj.metadata)
            if call_id is not None and match(call_id):
                earlier = found.get(call_id)
                if earlier is None or obj.created < earlier.created:
                    if earlier is not None:
                        log.warning("two objects carry call id %r: %r and %r",
                                    call_id, earlier.id, obj.id)
                    found[call_id] = obj
                if expect is not None and len(found) >= expect:
                    return found, read
            if obj.created < cutoff:
                older_in_a_row += 1
                # Stopping at a date needs the order: only a list that has shown itself
                # newest first may end the scan here; any other is read on, to its end
                # if it never does.
                if older_in_a_row > overscan and seen >= _ORDER_SAMPLE:
                    if downs and ups <= _MAX_INVERSIONS * (ups + downs):
                        return found, read
                    if ups > _MAX_INVERSIONS * (ups + downs) and not warned:
                        warned = True
                        log.warning(
                            "%d of %d listed objects were newer than the one before them: "
                            "the list is not newest first, so the look-up reads it to its "
                            "end", ups, seen,
                        )
            else:
                older_in_a_row = 0
        if max_pages is not None and read >= max_pages:
            if await more_after(pages, page):
                raise ScanTooLong(f"the look-up read {read} pages without reaching its cutoff")
            break  # the list ended on the last page it may read
    return found, read


# -- the coordinator ---------------------------------------------------------------------


def _unheld(wait: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    return wait()


@attrs.define(eq=False)
class Waiter(Generic[Obj, B]):
    call_id: str
    bound: B  #: what this call's look-up may stop at (a cutoff date, a watermark)
    due: float
    future: asyncio.Future[Obj | None]


class Coordinator(Generic[Obj, B]):
    """What every reconciler shares: the attempts of one call, and rounds of look-ups in
    which the calls waiting at the same time share one scan. Subclasses say what bounds
    a call's look-up (`_bound`), what they learn from an object a call got (`_got`) and
    how one scan reads the list (`_scan`).

    `hold(wait)` awaits a call's wait for its look-up (`settle`, then the scan): the
    client's `Transport.held`, so that closing the client ends it with
    `ClientClosedError`, as it ends a call waiting for the limiter or a backoff.
    """

    def __init__(
        self,
        settings: Reconcile,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        hold: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._hold = hold or _unheld
        self._waiting: list[Waiter[Obj, B]] = []
        self._serving: list[Waiter[Obj, B]] = []
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()  # two calls under one id would find one object

    # -- what subclasses decide ---------------------------------------------------------

    def _bound(self) -> B:
        """Taken as a call begins, before its first send."""
        raise NotImplementedError

    def _got(self, obj: Obj, bound: B) -> Obj:
        """A call of bound `bound` ends with `obj` (its answer, or found)."""
        return obj

    async def _scan(self, ready: list[Waiter[Obj, B]]) -> tuple[dict[str, Obj], int]:
        """One scan for every waiter in `ready`: what it found by call id, and its pages."""
        raise NotImplementedError

    # -- the calls ------------------------------------------------------------------------

    def prepare(self, coerce: Callable[[Any], R]) -> Callable[[Any], R]:
        """A `create_many` preparer: `coerce`, then tag (a caller's own id is kept)."""
        return lambda raw: tag(coerce(raw))

    async def create(self, request: R, send: Callable[[R], Awaitable[Obj]]) -> Obj:
        """Tag `request` (unless it is already) and send it, reconciled."""
        tagged = tag(request)
        return await self.send_tagged(tagged, send)

    def sender(self, send: Callable[[R], Awaitable[Obj]]) -> Callable[[R], Awaitable[Obj]]:
        """A `create_many` call: `send` for requests `prepare` tagged, reconciled."""
        return lambda request: self.send_tagged(request, send)

    async def send_tagged(self, request: R, send: Callable[[R], Awaitable[Obj]]) -> Obj:
        call_id = call_id_of(request.metadata)
        if call_id is None:
            raise ValidationError("a reconciled request needs a call id: tag it first")
        return await self.run(call_id, lambda: send(request))

    async def run(self, call_id: str, send: Callable[[], Awaitable[Obj]]) -> Obj:
        """Send, and after each ambiguous failure look `call_id` up before sending again.

        Call ids must be unique: one already in flight here is a `ValidationError`.
        """
        if call_id in self._in_flight:
            raise ValidationError(f"call id {call_id!r} is already in use by another call")
        self._in_flight.add(call_id)
        try:
            return await self._run(call_id, send)
        finally:
            self._in_flight.discard(call_id)

    async def _run(self, call_id: str, send: Callable[[], Awaitable[Obj]]) -> Obj:
        settings = self.settings
        bound = self._bound()
        last: DotsError | None = None
        for attempt in range(1, settings.max_attempts + 1):
            try:
                return self._got(await send(), bound)
            except DotsError as exc:
                if not is_ambiguous(exc):
                    raise
                last = exc
            self._emit("ambiguous", call_id, attempt=attempt)
            lookup_error: DotsError | None = None
            try:
                found = await self._look_up(call_id, bound)
            except ClientClosedError as closed:
                # Ended, as any call the client still held: but not as if it failed
                # cleanly, since the send it did not look up may have created the object.
                closed.add_note(
                    f"reconciliation: send {attempt} of call {call_id} failed after the"
                    f" request left ({last}) and was not looked up: it may have taken effect"
                )
                self._emit("gave-up", call_id, attempt=attempt)
                raise closed from last
            except DotsError as exc:
                lookup_error = exc
            if lookup_error is not None:
                last.add_note(f"reconciliation could not look call {call_id} up: {lookup_error}")
                self._emit("gave-up", call_id, attempt=attempt)
                raise last
            if found is not None:
                self._emit("found", call_id, attempt=attempt)
                return self._got(found, bound)
            self._emit("not-found", call_id, attempt=attempt)
            if _certainly_created(last):
                last.add_note(
                    f"reconciliation: the API answered 2xx yet its list shows no object with"
                    f" call id {call_id}; not sending again"
                )
                self._emit("gave-up", call_id, attempt=attempt)
                raise last
        assert last is not None
        last.add_note(
            f"reconciliation: sent {settings.max_attempts} times under call id {call_id};"
            " each send failed after the request left, and none took effect"
        )
        self._emit("gave-up", call_id, attempt=settings.max_attempts)
        raise last

    def _emit(self, kind: EventKind, call_id: str | None, **fields: int) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("reconcile %s: %s %s", kind, call_id, fields)
        if self.settings.on_event is not None:
            self.settings.on_event(ReconcileEvent(kind=kind, call_id=call_id, **fields))

    # -- the shared look-up ---------------------------------------------------------------

    async def _look_up(self, call_id: str, bound: B) -> Obj | None:
        future: asyncio.Future[Obj | None] = asyncio.get_running_loop().create_future()
        waiter = Waiter(call_id, bound, self._clock() + self.settings.settle, future)
        self._waiting.append(waiter)
        # A task being cancelled (its last waiter was) will not serve this one: it ends
        # at its next step. Another is started.
        if self._task is None or self._task.done() or self._task.cancelling():
            self._task = asyncio.create_task(self._rounds(), name="aiodots-reconcile")
        try:
            found: Obj | None = await self._hold(lambda: future)
        except (asyncio.CancelledError, ClientClosedError):
            # This call was cancelled, or its client closed (its future with it): stop
            # the look-up if it was the last one waiting, so no task outlives the calls
            # it serves.
            future.cancel()
            self._stop_if_unwanted()
            raise
        return found

    def _stop_if_unwanted(self) -> None:
        pending = [w for w in (*self._waiting, *self._serving) if not w.future.done()]
        if not pending and self._task is not None:
            self._task.cancel()

    async def _rounds(self) -> None:
        # One round at a time: wait until the earliest waiter is due, then serve every
        # waiter due by then with one scan. Waiters arriving meanwhile go to the next round.
        while True:
            self._waiting = [w for w in self._waiting if not w.future.done()]
            if not self._waiting:
                return
            delay = min(w.due for w in self._waiting) - self._clock()
            if delay > 0:
                await self._sleep(delay)
            now = self._clock()
            ready = [w for w in self._waiting if w.due <= now and not w.future.done()]
            self._waiting = [w for w in self._waiting if w not in ready]
            if not ready:
                continue
            self._serving = ready
            try:
                await self._serve(ready)
            finally:
                if self._serving is ready:  # not a later task's, started as this one ended
                    self._serving = []

    async def _serve(self, ready: list[Waiter[Obj, B]]) -> None:
        try:
            found, pages = await self._scan(ready)
        except Exception as exc:  # a DotsError, or a bug: either way no waiter may hang
            for w in ready:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        self._emit("scan", None, pages=pages, calls=len(ready))
        for w in ready:
            if not w.future.done():
                w.future.set_result(found.get(w.call_id))


class Reconciler(Coordinator[T, datetime]):
    """Runs reconciled calls for one resource whose objects carry `created`; calls
    waiting for a look-up at the same time share one scan. One per `create_many` batch,
    or per single reconciled call.

    `newest_first(page_size)` lists the resource a page at a time, newest first (as
    `Page`s, which say where the list ends, or plain sequences).
    """

    def __init__(
        self,
        newest_first: Callable[[int], AsyncIterable[Sequence[T] | Page[T]]],
        settings: Reconcile,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        hold: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(settings, sleep=sleep, clock=clock, hold=hold)
        self._newest_first = newest_first
        self._now = now
        # The newest `created` among objects this reconciler's calls got back: on the
        # server's clock, and older than anything a call started afterwards can create.
        self._anchor: datetime | None = None

    def _bound(self) -> datetime:
        # No object this call creates can be older than this.
        settings = self.settings
        if self._anchor is not None:
            return self._anchor - timedelta(seconds=settings.server_skew)
        return self._now() - timedelta(seconds=settings.clock_skew)

    def _got(self, obj: T, bound: datetime) -> T:
        created = obj.created
        if self._anchor is None or created > self._anchor:
            self._anchor = created
        return obj

    async def _scan(self, ready: list[Waiter[T, datetime]]) -> tuple[dict[str, T], int]:
        settings = self.settings
        wanted = {w.call_id for w in ready}
        return await scan_newest_first(
            self._newest_first(settings.page_size),
            cutoff=min(w.bound for w in ready),
            overscan=settings.overscan,
            match=wanted.__contains__,
            expect=len(wanted),
            max_pages=settings.max_pages,
        )
