"""The fan-out engine: run one async call per input item, at most `concurrency` at once.

- Input is pulled lazily from an iterable or async iterable, only when a worker is free,
  and results wait in a queue bounded by `concurrency`: memory stays flat however long
  the input is.
- Each item ends as exactly one `BatchItem`, success or failure. Bad input and API
  errors become per-item errors; they never stop the batch.
- `ordered=True` yields in input order, holding back at most `4 * concurrency` finished
  items while an earlier one is still running.
- Leaving the loop early, cancelling the consumer, or closing the batch cancels the
  calls in flight and waits for them, so no task outlives the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import attrs

from .errors import ValidationError
from .running_loop import being_cancelled, running_loop

__all__ = ["Batch", "BatchItem", "BatchSummary"]

Req = TypeVar("Req")
Res = TypeVar("Res")
T = TypeVar("T")

_ORDERED_WINDOW_FACTOR = 4


@attrs.frozen(slots=True)
class BatchItem(Generic[Req, Res]):
    """The outcome of one input item. `request` is the prepared request, or the raw input
    when it could not be prepared (then `error` is the `ValidationError`)."""

    index: int
    request: Req | Any
    result: Res | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.define
class BatchSummary:
    """Running totals of a batch; the final one is `Batch.summary` after the loop."""

    done: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Items finished per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


class _End:
    """Marks a worker that ran out of input."""


class _Results(Generic[T]):
    """What the workers hand the one consumer, at most `capacity` items waiting: the job
    of an `asyncio.Queue(capacity)` without its task accounting (`join`, `task_done`) and
    its layers of method calls. A put and a get of asyncio.Queue measured 9k instructions
    per item (callgrind), these 3.7k."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._consumer: asyncio.Future[None] | None = None
        self._producers: deque[asyncio.Future[None]] = deque()  # waiting for room
        self._closed = False

    async def put(self, item: T) -> None:
        while len(self._items) >= self._capacity:
            room = running_loop().create_future()
            self._producers.append(room)
            try:
                await room
            except BaseException:
                if not room.done():
                    self._producers.remove(room)
                elif not room.cancelled():
                    self._make_room()  # woken, but cancelled before using it: pass it on
                raise
        self._items.append(item)
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            consumer.set_result(None)

    async def get(self) -> T | None:
        """The next item; None once closed and empty (nothing more will come)."""
        while not self._items:
            if self._closed:
                return None
            self._consumer = running_loop().create_future()
            await self._consumer
        item = self._items.popleft()
        self._make_room()
        return item

    def close(self) -> None:
        """The producers are gone (cancelled): a waiting `get` returns None, not waits."""
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            consumer.set_result(None)

    def _make_room(self) -> None:
        while self._producers:
            room = self._producers.popleft()
            if not room.done():
                room.set_result(None)
                return


_WORKER_DONE = _End()


class Batch(Generic[Req, Res]):
    """An async iterator of `BatchItem`s, and an async context manager that closes it.

    Use as `async for item in batch:`; wrap in `async with` to close deterministically
    when leaving the loop early.
    """

    def __init__(
        self,
        inputs: Iterable[Any] | AsyncIterable[Any],
        call: Callable[[Req], Awaitable[Res]],
        *,
        prepare: Callable[[Any], Req],
        concurrency: int,
        ordered: bool = False,
        on_progress: Callable[[BatchSummary], None] | None = None,
        retry_counter: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValidationError(f"concurrency must be a positive integer, not {concurrency!r}")
        self._sync_inputs: Iterator[Any] | None = None
        self._async_inputs: AsyncIterator[Any] | None = None
        if isinstance(inputs, AsyncIterable):
            self._async_inputs = aiter(inputs)
        else:
            self._sync_inputs = iter(inputs)  # a TypeError here names what was passed
        self._call = call
        self._prepare = prepare
        self._concurrency = concurrency
        self._ordered = ordered
        self._on_progress = on_progress
        self._retry_counter = retry_counter
        self._retries_at_start = 0
        self._pull_lock = asyncio.Lock()
        self._next_index = 0
        self._exhausted = False
        self._error: BaseException | None = None
        self._results: _Results[BatchItem[Req, Res] | _End] = _Results(concurrency)
        self._workers: list[asyncio.Task[None]] = []
        # Ordered mode: workers may not run further ahead than this of the next index due.
        self._window = concurrency * _ORDERED_WINDOW_FACTOR
        self._next_due = 0
        self._window_moved = asyncio.Event()
        self._started_at = 0.0
        self._finished_at = 0.0
        self._summary = BatchSummary()
        self._iterating = False
        self._closed = False

    @property
    def summary(self) -> BatchSummary:
        """The running totals; `elapsed` and `retries` are brought up to date on read."""
        summary = self._summary
        if self._started_at:
            summary.elapsed = (self._finished_at or time.monotonic()) - self._started_at
        if self._retry_counter is not None:
            summary.retries = self._retry_counter() - self._retries_at_start
        return summary

    # -- consumer side --------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[BatchItem[Req, Res]]:
        if self._iterating or self._closed:
            raise RuntimeError("a Batch can be iterated only once")
        self._iterating = True
        return self._iterate()

    async def __aenter__(self) -> Batch[Req, Res]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel whatever is in flight and wait for it. Idempotent. A loop over the
        batch (in another task, or this one's body) then ends after what it has; the
        input is let go of, so a generator the caller no longer holds is closed."""
        self._closed = True
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        self._results.close()  # cancelled workers put no end marker: wake the loop
        self._sync_inputs = self._async_inputs = None

    async def _iterate(self) -> AsyncIterator[BatchItem[Req, Res]]:
        self._started_at = time.monotonic()
        if self._retry_counter is not None:
            self._retries_at_start = self._retry_counter()
        self._workers = [
            asyncio.create_task(self._work(), name=f"aiodots-batch-worker-{n}")
            for n in range(self._concurrency)
        ]
        running = len(self._workers)
        held: dict[int, BatchItem[Req, Res]] = {}
        try:
            while running:
                got = await self._results.get()
                if got is None:  # closed (`aclose`) while this loop waited
                    return
                if isinstance(got, _End):
                    running -= 1
                    continue
                if not self._ordered:
                    self._count(got)
                    yield got
                    continue
                held[got.index] = got
                while self._next_due in held:
                    item = held.pop(self._next_due)
                    self._next_due += 1
                    self._window_moved.set()
                    self._count(item)
                    yield item
            if self._error is not None:
                raise self._error
        finally:
            self._finished_at = time.monotonic()
            await self.aclose()

    def _count(self, item: BatchItem[Req, Res]) -> None:
        summary = self._summary
        summary.done += 1
        if item.error is None:
            summary.succeeded += 1
        else:
            summary.failed += 1
        if self._on_progress is not None:
            self._on_progress(self.summary)

    # -- worker side ----------------------------------------------------------------------

    async def _work(self) -> None:
        # A plain iterable in any order (the common case) is pulled without a lock and
        # without a coroutine: `next()` cannot interleave with another worker's.
        plain = self._async_inputs is None and not self._ordered
        try:
            while (pulled := self._pull_sync() if plain else await self._pull()) is not None:
                index, raw = pulled
                item: BatchItem[Req, Res]
                # The call is awaited here rather than in a helper coroutine: every level
                # of coroutines is crossed again each time the request resumes.
                try:
                    request = self._prepare(raw)
                except Exception as exc:
                    item = BatchItem(index, raw, None, exc)
                else:
                    try:
                        item = BatchItem(index, request, await self._call(request), None)
                    except Exception as exc:
                        item = BatchItem(index, request, None, exc)
                    except asyncio.CancelledError as exc:
                        if being_cancelled():
                            raise  # the batch is closing
                        # The call cancelled something of its own and let it out: this
                        # item's failure, not the worker's end (its item would be lost).
                        item = BatchItem(index, request, None, exc)
                await self._results.put(item)
        except asyncio.CancelledError:
            raise  # the batch is closing; nobody waits for this worker's end marker
        except BaseException as exc:  # a bug here must surface, not hang the consumer
            self._fail(exc)
        await self._results.put(_WORKER_DONE)

    async def _pull(self) -> tuple[int, Any] | None:
        async with self._pull_lock:
            if self._ordered:
                while self._next_index >= self._next_due + self._window:
                    self._window_moved.clear()
                    await self._window_moved.wait()
            if self._async_inputs is None:
                return self._pull_sync()
            if self._exhausted:
                return None
            try:
                raw = await anext(self._async_inputs)
            except StopAsyncIteration:
                self._exhausted = True
                return None
            except Exception as exc:
                self._fail(exc)
                return None
            index = self._next_index
            self._next_index += 1
            return index, raw

    def _pull_sync(self) -> tuple[int, Any] | None:
        assert self._sync_inputs is not None
        if self._exhausted:
            return None
        try:
            raw = next(self._sync_inputs)
        except StopIteration:
            self._exhausted = True
            return None
        except Exception as exc:
            self._fail(exc)
            return None
        index = self._next_index
        self._next_index += 1
        return index, raw

    def _fail(self, exc: BaseException) -> None:
        # The caller's iterable broke (or the engine did): stop pulling, let what is in
        # flight finish and be yielded, then raise it from the loop.
        self._exhausted = True
        if self._error is None:
            self._error = exc
