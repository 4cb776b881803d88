"""The client-side limiter shared by every call of one client.

`RateLimiter` is the interface the transport talks to; `AdaptiveRateLimiter` is the
in-memory default. A limiter shared between processes (Redis, say) implements the same
two methods and is passed as `Client(rate_limiter=...)`; the transport does not change.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["AdaptiveRateLimiter", "RateLimit", "RateLimiter"]


@runtime_checkable
class RateLimiter(Protocol):
    """What the transport needs from a limiter."""

    async def acquire(self) -> float:
        """Wait until one request may be sent; return the seconds spent waiting."""
        ...

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        """Feedback for every response: its status, when its request was sent (the
        limiter's clock, as read by `now()`), and a 429's Retry-After in seconds."""
        ...

    def now(self) -> float:
        """The limiter's clock (monotonic seconds)."""
        ...


@attrs.frozen
class RateLimit:
    """A ceiling: at most `rate` requests per second, and at most `burst` sent back to
    back after an idle spell. In any window of T seconds at most `rate * T + burst`
    requests start."""

    rate: float = attrs.field(validator=attrs.validators.gt(0))
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class AdaptiveRateLimiter:
    """A GCRA token bucket whose rate adapts to 429s (CUBIC, as botocore's adaptive mode).

    - With a `ceiling`, the rate never exceeds it.
    - Without one, calls run unthrottled until the first 429; from then on the rate is
      set from the successes actually measured, cut by `beta` on each 429, and grown back
      along a cubic curve that is steep far below the last good rate and flat near it,
      so a long job spends most of its time just under the server's limit.
    - A 429 with Retry-After starts a pause that every caller of this limiter honours.
    """

    def __init__(
        self,
        ceiling: RateLimit | None = None,
        *,
        adaptive: bool = True,
        min_rate: float = 0.5,
        beta: float = 0.8,
        cubic_c: float = 0.4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < beta < 1:
            raise ValueError("beta must be between 0 and 1")
        self._ceiling = ceiling
        self._adaptive = adaptive
        self._min_rate = min_rate
        self._beta = beta
        self._cubic_c = cubic_c
        self._clock = clock
        self._sleep = sleep
        self._burst = ceiling.burst if ceiling else 1
        # None: unthrottled. Otherwise the current allowed rate (requests/s).
        self._rate: float | None = ceiling.rate if ceiling else None
        self._tat = 0.0  # GCRA "theoretical arrival time" of the next request
        self._pause_until = 0.0
        # Cubic recovery state: the rate at the last decrease, and when it happened.
        self._w_max = 0.0
        self._decreased_at = -math.inf
        # Successes counted over short windows give the rate the server really accepts.
        self._window_start = clock()
        self._window_ok = 0
        self._measured_ok_rate: float | None = None

    # -- introspection (for stats and tests) ------------------------------------------

    @property
    def rate(self) -> float | None:
        """The current allowed rate, or None while unthrottled."""
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._pause_until

    def now(self) -> float:
        return self._clock()

    # -- the two operations -------------------------------------------------------------

    async def acquire(self) -> float:
        now = self._clock()
        if self._rate is None and self._pause_until <= now:
            return 0.0  # the hot path of an unthrottled client: nothing to wait for
        start = max(now, self._pause_until)
        if self._rate is not None:
            interval = 1.0 / self._rate
            tat = max(self._tat, start)
            # GCRA: a request may start `(burst - 1) * interval` ahead of its slot.
            start = max(start, tat - (self._burst - 1) * interval)
            # Reserve the slot before sleeping, so concurrent callers get distinct slots.
            self._tat = tat + interval
        wait = start - now
        if wait > 0:
            await self._sleep(wait)
            return wait
        return 0.0

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        now = self._clock()
        if status == 429:
            if retry_after is not None and retry_after > 0:
                self._pause_until = max(self._pause_until, now + retry_after)
            if self._adaptive and sent_at >= self._decreased_at:
                # Only a request sent after the last cut can prove the cut was not enough;
                # earlier 429s are echoes of the overload that caused it.
                self._decrease(now)
            return
        if status < 500:
            self._count_success(now)
            if self._adaptive and self._rate is not None:
                self._recover(now)

    # -- adaptation ---------------------------------------------------------------------

    def _count_success(self, now: float) -> None:
        self._window_ok += 1
        elapsed = now - self._window_start
        if elapsed >= 0.5:
            measured = self._window_ok / elapsed
            previous = self._measured_ok_rate
            self._measured_ok_rate = (
                measured if previous is None else 0.5 * previous + 0.5 * measured
            )
            self._window_start = now
            self._window_ok = 0

    def _decrease(self, now: float) -> None:
        current = self._rate
        measured = self._measured_ok_rate
        if measured is None:
            # Throttled before a full measuring window: count what got through so far.
            elapsed = max(now - self._window_start, 0.05)
            measured = self._window_ok / elapsed if self._window_ok else None
        candidates = [r for r in (current, measured) if r is not None]
        w_max = min(candidates) if candidates else self._min_rate
        self._w_max = w_max
        self._decreased_at = now
        new_rate = max(self._min_rate, w_max * self._beta)
        if self._ceiling is not None:
            new_rate = min(new_rate, self._ceiling.rate)
        self._set_rate(new_rate, now)

    def _recover(self, now: float) -> None:
        if self._decreased_at == -math.inf:
            return  # never throttled: a user's ceiling stays where it was set
        t = now - self._decreased_at
        k = ((self._w_max * (1 - self._beta)) / self._cubic_c) ** (1 / 3)
        target = self._cubic_c * (t - k) ** 3 + self._w_max
        if self._ceiling is not None:
            target = min(target, self._ceiling.rate)
        target = max(target, self._min_rate)
        if self._rate is None or target > self._rate:
            self._set_rate(target, now)

    def _set_rate(self, rate: float, now: float) -> None:
        self._rate = rate
        # Keep the reservations already handed out, but never leave a huge backlog of
        # slots computed at an older, faster rate: restart the schedule from now.
        self._tat = max(min(self._tat, now + 1.0 / rate), now)
