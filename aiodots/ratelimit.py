"""The client-side limiter shared by every call of one client.

`RateLimiter` is the interface the transport talks to; `AdaptiveRateLimiter` is the
in-memory default. A limiter shared between processes (Redis, say) implements the same
two methods and is passed as `Client(rate_limiter=...)`; the transport does not change.

What the server asks for (a Retry-After pause, an announced limit, a quota it says is
spent) can hold a call for as long as the server likes. A limiter that is also a
`BoundedLimiter` refuses such a wait when it is longer than the call accepts
(`RetryPolicy.max_retry_after`), and the call fails at once with `RateLimitError`, as
it does on a Retry-After that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from .errors import DotsError
from .ratelimit_estimate import UNSAID, Phase, estimate_bucket, probe_bracket
from .ratelimit_headers import announced_rate, limit_signal, parse_rate_limit_headers
from .running_loop import running_loop

__all__ = [
    "AdaptiveRateLimiter", "BoundedLimiter", "CredentialBound", "HeaderAwareLimiter",
    "ImmediateLimiter", "QuotaAwareLimiter", "RateLimit", "RateLimiter", "WaitTooLong",
]


#: A time that has not happened (`-inf`, a constant: the hot path compares with it).
_NEVER = -math.inf


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


@runtime_checkable
class CredentialBound(Protocol):
    """A limiter that keeps separate state per API key (one shared across processes, say).
    `Client` calls `bind_credentials` with its own; the limiter must never store the key
    itself (a hash of it, at most)."""

    def bind_credentials(self, client_id: str, api_key: str) -> None: ...


@runtime_checkable
class ImmediateLimiter(Protocol):
    """A limiter that can say at once, without a coroutine, that a request may go now.
    Optional: the transport calls `try_acquire()` first and awaits `acquire()` only when
    it returns None. Nearly every request of an unthrottled client finds a slot free, and
    creating and finishing `acquire()`'s coroutine measured 1.5k instructions (callgrind);
    the time it returns saves reading the clock again for `on_response`'s `sent_at`."""

    def try_acquire(self) -> float | None:
        """Take a slot if one is free now and nobody is queued for one, and return the
        limiter's clock (`now()`); None, without waiting, if there is none."""
        ...


class WaitTooLong(DotsError):
    """What the server asked for would hold a call longer than it accepts: raised by
    `BoundedLimiter.acquire_within` instead of waiting, before anything is sent. The
    transport turns it into the call's `RateLimitError`."""

    def __init__(self, seconds: float, cause: str) -> None:
        super().__init__(f"{cause} would hold the call {seconds:.0f} s")
        #: how long the call would have waited
        self.seconds = seconds
        #: what holds it: "a Retry-After pause", "the server's announced rate limit",
        #: "the server's spent quota"
        self.cause = cause


@runtime_checkable
class BoundedLimiter(Protocol):
    """A limiter that can refuse a wait a call will not accept. Optional: the transport
    awaits `acquire_within(max_wait)` instead of `acquire()` where a limiter has it."""

    def acquire_within(self, max_wait: float) -> Awaitable[float]:
        """As `acquire`, but raise `WaitTooLong` at once, taking no slot, where what the
        server asked for (what is left of a Retry-After pause, the time to the next slot
        at a rate it announced) would hold the call longer than `max_wait` seconds. The
        waits of a limit of the client's own (a ceiling, the adaptive rate) are its own
        choice, and a queue of the caller's own calls is theirs: neither is refused."""
        ...


@runtime_checkable
class HeaderAwareLimiter(Protocol):
    """A limiter that also reads what the server says of its limit. Optional: the
    transport hands a success's headers over only while `wants_headers` is true (the
    success path is hot), and a 429's always."""

    @property
    def wants_headers(self) -> bool: ...

    def on_headers(self, headers: Mapping[str, str]) -> None: ...


@runtime_checkable
class QuotaAwareLimiter(Protocol):
    """A limiter that holds every call while a quota of the server's is spent. Optional:
    on a 429 whose headers say a quota over a long window has nothing left
    (`RateLimitInfo.quota_spent_for`), the transport calls `on_spent_quota` before
    `on_response`, and the call itself waits as for a Retry-After that long."""

    def on_spent_quota(self, seconds: float) -> None:
        """Hold every call for `seconds`, as a Retry-After pause that long (one a caller
        will not wait is refused by `acquire_within`), and take the refusals that come
        meanwhile for no sign of the rate: the quota, not the pace, refused them."""
        ...


@attrs.frozen
class RateLimit:
    """A ceiling: at most `rate` requests per second, and at most `burst` sent back to
    back after an idle spell. In any window of T seconds at most `rate * T + burst + 1`
    requests start: a queue's head woken late keeps the token it earned meanwhile (see
    `AdaptiveRateLimiter._take`), one more than an idle bucket holds."""

    rate: float = attrs.field(validator=attrs.validators.gt(0))
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class AdaptiveRateLimiter:
    """A token bucket whose rate adapts to 429s; the in-memory default limiter.

    - With a `ceiling`, the rate never exceeds it; nor does it exceed a limit the server
      announces in its headers (`X-RateLimit-*`, the IETF `RateLimit` fields): a server
      that says its limit is sent at that rate and never probed past it. Only a window
      of up to a minute sets that pace (`ratelimit_headers.RATE_WINDOW`); a quota over
      a longer one (`"daily";q=100000;w=86400`) does not, and where the server lists
      nothing else the rate is found from 429s as without headers.
    - Without either, calls run unthrottled until the first 429. The limit is then found
      the way TCP finds a path's capacity: a slow start (the rate doubles every
      `SLOW_START_DOUBLING` seconds) until the next 429, then a multiplicative cut to
      `beta` of the rate that was refused.
    - A 429 with Retry-After starts a pause that every caller of this limiter honours,
      and each such pause costs the whole job its length. So after one, the limit is
      not guessed from a window of successes (which the server's refilled bucket
      flatters) but solved for: the server's token bucket is replayed from this
      client's own send log (`ratelimit_estimate`), and the rate set to the solution
      at once, without a recovery climb that would meet the limit again.
    - Without Retry-After a refusal costs only its own retry, and marks the moment the
      server's bucket ran dry: a known state too, so the next refusal solves the bucket
      the same way, and the rate is set to that instead of a cut below it.
    - After each cut the rate climbs back (concave, over `RECOVERY`) to just under the
      last good rate, holds there for `HOLD` seconds (longer when the server makes 429s
      cost a Retry-After pause), then probes upwards slowly in
      case the server's limit has risen. A long job so spends most of its time just
      under the server's limit, and meets a 429 once per probe.
    - When a pause ends, waiting callers are released at the current rate, after the
      server's burst (less a margin) once the log has said what it is; never all at
      once.
    - Waiters are served first come, first served; the head of the queue alone sleeps
      until the next token, so a thousand waiting tasks cost one timer, not a thousand.
    - A 429 that says a quota over a long window is spent (`on_spent_quota`) holds
      every call until the quota's reset, as a Retry-After pause, and the refusals it
      explains leave the rate alone.
    - `acquire_within(max_wait)` (`BoundedLimiter`) refuses, with `WaitTooLong`, a wait
      for what the server asked (a pause, an announced limit, a spent quota) longer
      than `max_wait`.
    """

    SLOW_START_DOUBLING = 0.25
    # The same after an HTTP-date pause: the probe's refusal is best just before the
    # server's next whole second (see `_after_pause`), so its ramp spans that second.
    SLOW_START_DOUBLING_ON_THE_SECOND = 0.5
    SLOW_START_FLOOR = 1.0  # requests/s a slow start begins at, at the least
    RECOVERY = 1.0
    HOLD = 10.0
    PLATEAU = 0.96  # share of the last good rate held after recovering
    # Share of a rate solved from the send log that is used: the solution is the
    # server's rate itself, give or take timer jitter.
    SOLVED_PLATEAU = 1.0
    PROBE = 0.02  # growth while probing: PROBE * rate * seconds**2
    WINDOW = 1.0  # seconds of successes that measure the accepted rate
    MIN_MEASURE = 0.2  # the shortest span a measured rate is trusted over
    # Right after a pause the server's bucket is full again, and what it lets through
    # then overstates its rate: measuring starts this long after a pause ends.
    SETTLE = 0.25
    # A probe that meets a 429 with Retry-After costs that whole pause: after pauses of
    # P seconds, hold PAUSE_HOLD * P seconds longer before probing.
    PAUSE_HOLD = 20.0
    # A first burst whose accepted requests all left within this many seconds is taken
    # as the server's burst (its bucket refilled by less than a token meanwhile).
    BURST_SPAN = 0.005
    # Tokens of a server's burst this client leaves unused (see `_after_pause`).
    BURST_MARGIN = 2.0
    # How long before a server's whole second a probe is refused at the latest, when
    # its pauses are HTTP-dates (at least three times the time a refusal took to come
    # back: the request must reach the server before its second turns).
    PROBE_LEAD = 0.05
    # A probe that started from the first refusal's guess solves the rate only when the
    # rates its log allows are at most this far apart; otherwise it is probed again from
    # the least of them (`_reprobe`). Their lower end is what the limiter holds, until
    # it probes for a higher limit HOLD + PAUSE_HOLD * P seconds later: 10% under the
    # rate over those 30 s (at 1 s pauses) costs three pauses' worth, a second probe
    # one. Traced first probes at 50/s and more: 0.5-4.5% apart.
    PRECISE = 1.1
    # How many probes may be started again for want of precision: one after a pause
    # (each costs a pause), more without Retry-After (each costs one refusal).
    PRECISE_TRIES = 1
    PRECISE_TRIES_WITHOUT_PAUSE = 3
    # Seconds a probe started again from such bounds takes to ramp across them (its
    # doubling time follows): slow enough that its phase lasts long and says the rate
    # closely, where a 0.25 s doubling at 20/s refills only a few tokens.
    BRACKET_RAMP = 1.0
    LOG_SIZE = 4096  # accepted send times kept for replaying the server's bucket
    # Responses without rate-limit headers after which a success's headers are no
    # longer read (a 429's always are).
    QUIET_RESPONSES = 32

    def __init__(
        self,
        ceiling: RateLimit | None = None,
        *,
        adaptive: bool = True,
        min_rate: float = 0.5,
        beta: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < beta < 1:
            raise ValueError("beta must be between 0 and 1")
        self._ceiling = ceiling
        self._adaptive = adaptive
        self._min_rate = min_rate
        self._beta = beta
        self._clock = clock
        self._sleep = sleep
        # None: unthrottled. Otherwise the current allowed rate (requests/s).
        self._rate: float | None = ceiling.rate if ceiling else None
        self._capacity = float(ceiling.burst if ceiling else 1)
        self._tokens = self._capacity
        self._refilled_at = clock()
        self._pause_until = _NEVER
        # Until when a quota the server said is spent holds every call (`on_spent_quota`).
        self._quota_until = _NEVER
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Adaptation state.
        self._decreased_at = _NEVER
        self._slow_start = False
        self._start_rate = 0.0
        self._w_max = 0.0
        self._ok_times: deque[float] = deque()
        self._first_ok_at: float | None = None
        self._last_pause = 0.0
        self.decreases = 0
        # The send log, in phases that each end in a refusal followed by a pause (see
        # ratelimit_estimate): when each accepted request was sent; when this phase
        # began (None: with the first request); when its first refused one was sent.
        self._accepted: deque[float] = deque(maxlen=self.LOG_SIZE)
        self._phase_start: float | None = None
        self._phase_rest: float | None = None
        self._refused_at: float | None = None
        self._first_phase: Phase | None = None
        self._decision_due = False  # a refusal's pause runs: the rate is decided at its end
        # Without Retry-After: when the first refused request was sent and answered (its
        # phase is closed at the next refusal, once every answer to the burst is back),
        # and the answer time of the last refusal counted (earlier sends are echoes).
        self._ran_dry: tuple[float, float] | None = None
        self._echoes_before = _NEVER
        # Whether the last pause was an HTTP-date (it ended on a whole second of the
        # server's clock), how long its refusal took to come back, and when the probe
        # after it is to be refused at the latest (see `_after_pause`).
        self._on_the_second = False
        self._answer_time = 0.0
        self._probe_until = math.inf
        self._forced = False  # whether the probe's refusal was brought about by this client
        # Probes left that solve the rate only within PRECISE (see `_reprobe`).
        self._precise_tries = 0
        self._first_burst: float | None = None  # the first refusal's burst, if it was one
        self._doubling = self.SLOW_START_DOUBLING
        #: (rate, burst) of the server's bucket, once solved from the send log.
        self.solved: tuple[float, float] | None = None
        # What the server announces of its limit.
        self._announced: float | None = None
        self._announced_at = _NEVER
        self._signal: tuple[str | None, ...] = (None, None, None, None)
        self._quiet = 0
        #: Whether a success's headers are worth reading: while the server has shown
        #: rate-limit headers, or has not yet had `QUIET_RESPONSES` chances to. (An
        #: attribute, not a property: the transport reads it on every success.)
        self.wants_headers = adaptive

    # -- introspection ------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The current allowed rate, or None while unthrottled."""
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._pause_until

    @property
    def announced_rate(self) -> float | None:
        """The requests per second the server's headers announced, if any."""
        return self._announced

    def now(self) -> float:
        return self._clock()

    # -- waiting ------------------------------------------------------------------------

    def try_acquire(self) -> float | None:
        now = self._clock()
        return now if not self._waiters and self._take(now) else None

    async def acquire(self, max_wait: float = math.inf) -> float:
        """Wait until one request may be sent; see `BoundedLimiter` for `max_wait`."""
        started = self._clock()
        if not self._waiters and self._take(started):
            return 0.0
        if self._waiters:
            # Queued behind others it waits at least this long: refused before queueing.
            self._refuse_longer(started, max_wait)
        waiter = running_loop().create_future()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            waiter.set_result(None)
        try:
            await waiter  # until this caller is at the head of the queue
            while True:
                now = self._clock()
                if self._take(now, backlog=True):
                    break
                self._refuse_longer(now, max_wait)
                await self._sleep(self._time_to_token(now))
        finally:
            self._leave(waiter)
        return self._clock() - started

    def acquire_within(self, max_wait: float) -> Awaitable[float]:
        return self.acquire(max_wait)

    def _refuse_longer(self, now: float, max_wait: float) -> None:
        """Raise `WaitTooLong` where what the server asked for holds a send at `now`
        longer than `max_wait`: what is left of a pause, or, where the rate is the one
        the server announced, the time to the next token at it."""
        if now < self._pause_until:
            wait = self._pause_until - now
            if self._pause_until <= self._quota_until:
                cause = "the server's spent quota"
            else:
                cause = "a Retry-After pause"
        else:
            rate, announced = self._rate, self._announced
            if rate is None or announced is None or rate < announced:
                return  # not the server's: a ceiling of the client's own, or a cut below it
            # The tokens as `_take` would count them now (the most a queue may hold).
            tokens = min(self._capacity + 1, self._tokens + (now - self._refilled_at) * rate)
            wait, cause = (1 - tokens) / rate, "the server's announced rate limit"
        if wait > max_wait:
            raise WaitTooLong(wait, cause)

    def _leave(self, waiter: asyncio.Future[None]) -> None:
        if self._waiters and self._waiters[0] is waiter:
            del self._waiters[0]
            # Hand the head of the queue on to the next caller still waiting.
            while self._waiters:
                head = self._waiters[0]
                if not head.done():
                    head.set_result(None)
                    return
                del self._waiters[0]
        else:
            # Cancelled while still queued.
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _take(self, now: float, backlog: bool = False) -> bool:
        if now < self._pause_until:
            return False
        if self._decision_due:
            self._after_pause(now)
        if self._decreased_at != _NEVER:
            # The recovery curve is a function of time, not only of successes: a web
            # backend that met one 429 must not stay throttled until its next call.
            self._grow(now)
        rate = self._rate
        if rate is None:
            return True
        # An idle bucket fills up to `capacity` only. While callers queue, the bucket was
        # never idle: a head woken late by the event loop keeps the fraction it earned
        # meanwhile instead of losing it (at burst 1, timer lateness alone would cost
        # 10-20% of the rate at a few hundred requests per second).
        cap = self._capacity + 1 if backlog else self._capacity
        self._tokens = min(cap, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _time_to_token(self, now: float) -> float:
        if now < self._pause_until:
            return self._pause_until - now
        rate = self._rate
        if rate is None:
            return 0.0
        wait = max((1 - self._tokens) / rate, 1e-4)
        if self._slow_start:
            # The rate doubles while we sleep: wake up to pick up the faster pace.
            wait = min(wait, self._doubling / 2)
        return wait

    # -- feedback -----------------------------------------------------------------------

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        if status == 429:
            now = self._clock()
            if now < self._quota_until:
                # Refused for a spent quota (`on_spent_quota`), not for the pace.
                if retry_after is not None and retry_after > 0:
                    self._pause_until = max(self._pause_until, now + retry_after)
                return
            if retry_after is not None and retry_after > 0:
                if self._adaptive:
                    self._refused(sent_at, now)
                    # Delta-seconds are whole; an HTTP-date less the clock is not, and
                    # ends the pause on a whole second of the server's clock.
                    self._on_the_second = retry_after != int(retry_after)
                    self._answer_time = now - sent_at
                self._pause_until = max(self._pause_until, now + retry_after)
                self._last_pause = retry_after
            elif self._adaptive and sent_at >= self._echoes_before and not self._decision_due:
                # Only a request sent after the last refusal was answered can prove the
                # rate since is too high; earlier 429s are echoes of that refusal. So is
                # one that comes while a pause's decision is due: it was sent in the
                # pause's episode, which that decision (at the pause's end) covers.
                self._echoes_before = now
                self._decrease(sent_at, now)
            return
        if status < 500 and self._adaptive:
            now = self._clock()
            self._accepted.append(sent_at)
            # Successes of the last WINDOW seconds (`_measured_rate`), counted here and
            # not in a method of their own: this runs once per request.
            if self._first_ok_at is None:
                self._first_ok_at = now
            times = self._ok_times
            times.append(now)
            horizon = now - self.WINDOW
            while times[0] < horizon:
                times.popleft()
            if self._decreased_at != _NEVER:
                self._grow(now)

    def on_spent_quota(self, seconds: float) -> None:
        """See `QuotaAwareLimiter`. Held whether or not the limiter adapts, as a
        Retry-After is; the pause does not count towards the hold before a probe
        (`PAUSE_HOLD`), which is for pauses that a probe of the rate brings about."""
        if not seconds > 0:
            return
        until = self._clock() + seconds
        self._quota_until = max(self._quota_until, until)
        self._pause_until = max(self._pause_until, until)

    def on_headers(self, headers: Mapping[str, str]) -> None:
        """Read what the server announces of its limit (any response's headers): the
        pace of its tightest policy over a window of up to `RATE_WINDOW`, if any. Parsed
        only when `limit_signal` changes; a quota over a longer window sets no pace."""
        if not self._adaptive:
            return
        signal = limit_signal(headers)
        if signal == self._signal:
            # Nothing new (the common case: parse only when a limit header changes).
            if self._announced is None:
                self._quiet += 1
                if self._quiet >= self.QUIET_RESPONSES:
                    self.wants_headers = False
            return
        self._signal = signal
        info = parse_rate_limit_headers(headers, now=time.time())
        rate = None if info is None else announced_rate(info)
        if rate is not None and rate != self._announced:
            self._announce(rate, self._clock())

    def _announce(self, rate: float, now: float) -> None:
        self._announced = rate
        self._announced_at = now
        self.wants_headers = True
        self._slow_start = False
        # Send at what the server says, never above; below it only after a refusal.
        if self._rate is None or self._rate > rate or self._decreased_at == _NEVER:
            self._w_max = rate
            self._set_rate(self._bounded(rate), now)

    def _refused(self, sent_at: float, now: float) -> None:
        """A 429 with Retry-After: note where this phase's refusals began; what to do
        about the rate is decided when the pause ends, once every response sent before
        it has come back."""
        if self._phase_start is not None and sent_at < self._phase_start:
            return  # sent before the last pause ended: an echo of the last refusal
        if self._refused_at is None:
            self.decreases += 1
            self._decreased_at = now
            self._refused_at = sent_at
            self._decision_due = True
        else:
            self._refused_at = min(self._refused_at, sent_at)

    def _after_pause(self, now: float) -> None:
        self._decision_due = False
        refused = self._refused_at
        assert refused is not None
        start = self._pause_until
        phase = self._close_phase(refused, start)
        rate = self._rate
        if self._announced is not None:
            if refused < self._announced_at:
                # Sent before the server said its limit: that limit stands.
                self._w_max = self._announced
                self._set_rate(self._bounded(self._announced), now)
            else:
                self._cut(now)
        elif rate is None:
            # First refusal of an unthrottled client: all that is known is what got
            # through. Start slow from half of that and double until refused again.
            self._first_phase = phase
            elapsed = max(phase.refused_at - phase.start, 0.1)
            seen = max(len(phase.sends) / elapsed, 2 * self.SLOW_START_FLOOR)
            if phase.refused_at - phase.start <= self.BURST_SPAN:
                # The first burst went out at once, so what got through is the server's
                # burst (see `_probe`).
                self._first_burst = float(len(phase.sends))
            self._probe(self._bounded(seen / 2), start, now, tries=self.PRECISE_TRIES)
        elif self._first_phase is None:
            # Throttled by a ceiling from the start: this phase still began with the
            # server's bucket full, and so says what its burst is.
            self._first_phase = phase
            self._cut(now)
        else:
            self._probe_until = math.inf
            # A refusal brought about ends the longest probe an HTTP-date allows: a
            # probe started again would say the rate no more closely.
            precise = self._slow_start and self._precise_tries > 0 and not self._forced
            solved = estimate_bucket(
                self._first_phase, phase, self.PRECISE if precise else UNSAID
            )
            if solved is None and self._slow_start and self._forced:
                # A probe refused only when brought about, with the bucket still full:
                # the rate is above anything sent yet. Go on probing from there.
                self._probe(rate, start, now, tries=self._precise_tries)
            elif solved is None and self._slow_start:
                # The server refused the probe itself, too soon after it began for the
                # bucket's refill to say its rate closely: the probe started above it,
                # or near it (the first burst's guess is high when the server's rate is
                # a few times its burst or less). Probing on from there would be
                # refused as soon, pause after pause.
                self._reprobe(phase, rate, start, now)
            elif solved is None or solved[0] > rate:
                self._cut(now)
            else:
                # The server's bucket is full again after the pause.
                self._settle(solved, now, full=True)

    def _probe(
        self, rate: float, start: float, now: float, *, tries: int = 0,
        doubling: float | None = None,
    ) -> None:
        """Probe for the rate after a pause that ended at `start` (or, without one, a
        refusal answered at `start`): a slow start from `rate`, doubling every
        `doubling` seconds (at the least) until refused; `tries`: see `_reprobe`."""
        self._slow_start = True
        self._forced = False
        self._precise_tries = tries
        self._start_rate = rate
        self._set_rate(rate, now)
        self._doubling = max(self.SLOW_START_DOUBLING, doubling or 0.0)
        if self._on_the_second and self._first_burst is not None:
            # An HTTP-date has a resolution of a second, and a server that rounds it up
            # (the safe way) makes the next pause last from its refusal to the second
            # whole second after it: 1 to 2 s, the less the later in its second the
            # refusal comes. This pause ended on a whole second; the probe's refusal is
            # best just before the next one, and so is brought about then if the probe
            # has not met it (`_force_refusal`).
            self._probe_until = self._probe_deadline(start)
            self._doubling = max(self._doubling, self.SLOW_START_DOUBLING_ON_THE_SECOND)
        if self._first_burst is not None:
            # The server's bucket is full again: send its burst (less the margin) at
            # once. Nothing is lost to a slow start below the rate, and the probe's log
            # runs from an empty bucket, which is what lets it say the rate to within a
            # request or two.
            self._capacity = self._tokens = max(1.0, self._first_burst - self.BURST_MARGIN)

    def _reprobe(self, phase: Phase, rate: float, start: float, now: float) -> None:
        """Probe again, after a probe's `phase` that the server refused too soon to say
        its rate closely: from under the rates the phase allows, across them in about
        BRACKET_RAMP seconds. A probe with `_precise_tries` left settles only for a
        rate within PRECISE; the last one for any the log says (UNSAID), so that the
        pauses spent finding the rate stay few."""
        assert self._first_phase is not None
        low, top = probe_bracket(self._first_phase, phase, rate)
        begin = self._bounded(max(low, self.SLOW_START_FLOOR))
        doubling = self.BRACKET_RAMP / math.log2(top / begin) if top > begin else None
        tries = max(0, self._precise_tries - 1)
        self._probe(begin, start, now, tries=tries, doubling=doubling)

    def _probe_deadline(self, start: float) -> float:
        """Just before the server's next whole second after a pause that ended on one
        at `start`: the request must reach the server before its second turns."""
        return start + 1.0 - max(self.PROBE_LEAD, 3 * self._answer_time)

    def _settle(self, solved: tuple[float, float], now: float, *, full: bool) -> None:
        """Send at a (rate, burst) solved from the send log: the plateau at once
        (recovery would only climb to the same place), and, when the server's bucket
        is `full` (after a pause), its burst at once too."""
        assert self._rate is not None
        if not self._slow_start:
            # Refused at a rate held (solved before, or a ceiling): the solution replays
            # a long stretch sent close to the limit, where a send that left late weighs
            # most, and another client sharing the limit takes tokens this log cannot
            # see. Trust it no further than an ordinary cut would go.
            solved = (max(solved[0], self._beta * self._rate), solved[1])
        self.solved = solved
        self._slow_start = False
        self._w_max = solved[0]
        # Less two tokens: `_take` lets a queue hold one more than the capacity, and a
        # head woken late then meets a server bucket that stopped filling at its burst
        # (traced: a third pause otherwise).
        burst = max(1.0, math.floor(solved[1]) - self.BURST_MARGIN)
        if self._ceiling is not None:
            burst = min(burst, float(self._ceiling.burst))
        self._set_rate(self._bounded(self.SOLVED_PLATEAU * solved[0]), now)
        self._capacity = burst
        self._tokens = burst if full else 0.0

    def _close_phase(self, refused: float, next_start: float) -> Phase:
        """The phase that just ended in a refusal, and the start of the next one."""
        begun = self._phase_start
        sends = sorted(t for t in self._accepted if t < refused and (begun is None or t >= begun))
        start = begun if begun is not None else min([refused, *sends[:1]])
        phase = Phase(start, refused, sends, self._phase_rest)
        last_sent = max([refused, *(t for t in self._accepted if t < next_start)])
        self._phase_start = next_start
        self._phase_rest = max(0.0, next_start - last_sent)
        self._refused_at = None
        return phase

    def _measured_rate(self, now: float) -> float | None:
        """Successes per second over the last window, counting only time spent sending
        (not a pause); None while that time is too short to say anything."""
        if self._first_ok_at is None:
            return None
        start = max(now - self.WINDOW, self._first_ok_at, self._pause_until + self.SETTLE)
        span = now - start
        if span < self.MIN_MEASURE:
            return None
        return sum(1 for t in self._ok_times if t >= start) / span

    def _decrease(self, sent_at: float, now: float) -> None:
        """A 429 without Retry-After. The server's bucket ran dry when `sent_at` found
        it: like a pause's end, a known state a phase of the send log can start from."""
        if self._rate is None:
            # First 429 of an unthrottled client: nothing is known of the limit yet but
            # what got through. Start slow from half of that and double until refused.
            self.decreases += 1
            self._decreased_at = now
            self._ran_dry = (sent_at, now)
            elapsed = max(now - (self._first_ok_at or now), 0.1)
            seen = max(len(self._ok_times) / elapsed, 2 * self.SLOW_START_FLOOR)
            self._slow_start = True
            self._precise_tries = self.PRECISE_TRIES_WITHOUT_PAUSE
            self._start_rate = self._bounded(seen / 2)
            self._set_rate(self._start_rate, now)
            return
        phase = None  # the send log since the bucket last ran dry, where it says the rate
        if self._ran_dry is not None and self._announced is None:
            if self._first_phase is None:
                self._first_phase = self._close_phase(*self._ran_dry)
            phase = self._close_phase(sent_at, now)
            if not phase.sends:
                # Refused before the bucket earned a token since it last ran dry: it says
                # nothing of the rate. The slow start goes on.
                return
        self.decreases += 1
        self._decreased_at = now
        if phase is None:
            self._cut(now)
            return
        assert self._first_phase is not None
        precise = self._slow_start and self._precise_tries > 0
        solved = estimate_bucket(self._first_phase, phase, self.PRECISE if precise else UNSAID)
        if solved is not None and solved[0] <= self._rate:
            self._settle(solved, now, full=False)
        elif solved is None and precise:
            # As after a pause (`_after_pause`): a slow start from the first burst's
            # guess, refused too soon to say the rate closely. Cuts of 10% from above the
            # rate would each cost a refusal; the bounds of this phase say where to start
            # again from.
            self._reprobe(phase, self._rate, now, now)
        else:
            self._cut(now)

    def _cut(self, now: float) -> None:
        assert self._rate is not None
        measured = self._measured_rate(now)
        refused = self._rate if measured is None else min(self._rate, measured)
        self._slow_start = False
        self._w_max = refused
        self._set_rate(self._bounded(refused * self._beta), now)

    def _grow(self, now: float) -> None:
        if self._decision_due:
            return  # decided when the pause ends
        # The curve starts when sending resumes: a Retry-After pause is not recovery time.
        t = now - max(self._decreased_at, self._pause_until)
        if t <= 0:
            return
        if self._slow_start:
            if now >= self._probe_until:
                self._force_refusal()
            # Only a 429 ends a slow start, so one that meets none (a job under the
            # limit, an idle hour) doubles on: past 64 doublings the rate is unthrottled
            # in all but name, and 2.0 ** 1024 would raise OverflowError.
            target = self._start_rate * 2 ** min(t / self._doubling, 64)
        else:
            w = self._w_max
            plateau = self.PLATEAU * w
            hold_until = self.RECOVERY + self.HOLD + self.PAUSE_HOLD * self._last_pause
            if t < self.RECOVERY:
                gap = plateau - self._beta * w
                target = plateau - gap * (1 - t / self.RECOVERY) ** 3
            elif t < hold_until:
                target = plateau
            else:
                probing = t - hold_until
                target = plateau + self.PROBE * w * probing**2
        target = self._bounded(target)
        if self._rate is None or target > self._rate:
            self._set_rate(target, now)

    def _force_refusal(self) -> None:
        """End a probe with a refusal now: release at once more requests than the
        server's bucket can hold (its burst, seen in the first refusal, and one more).
        What it lets through is still work done, and how much it lets through says
        how full it was: the probe's log so solves the rate as a natural refusal does."""
        self._probe_until = math.inf
        self._forced = True
        assert self._first_burst is not None  # a deadline is set only when it is known
        self._capacity = self._tokens = self._first_burst + 1.0

    def _bounded(self, rate: float) -> float:
        rate = max(self._min_rate, rate)
        if self._ceiling is not None:
            rate = min(rate, self._ceiling.rate)
        if self._announced is not None:
            rate = min(rate, self._announced)
        return rate

    def _set_rate(self, rate: float, now: float) -> None:
        if self._rate is not None:
            # Settle the tokens earned at the old rate before switching.
            self._tokens = min(
                self._capacity, self._tokens + (now - self._refilled_at) * self._rate
            )
        else:
            self._tokens = 0.0
        self._refilled_at = now
        self._rate = rate
