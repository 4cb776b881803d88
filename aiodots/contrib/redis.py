"""`RedisRateLimiter`: one rate limit for every process that shares a Dots API key.

Needs the `redis` extra (redis-py's asyncio client). The bucket, the Retry-After pause and
the adaptive rate live in Redis and move in one Lua script (`redis_bucket.lua`), so many
processes on many machines behave as one `AdaptiveRateLimiter` would:

- one round trip per acquire at most, and fewer under load: the caller at the head of a
  process's queue reserves slots for the callers behind it too;
- one process's 429 lowers everyone's rate, and its Retry-After pauses every process;
- a pause another process told (a Retry-After it accepted) holds this one no longer
  than this client's `max_retry_after`: longer, and the call fails at once with
  `RateLimitError`, as on a Retry-After that long of its own (`BoundedLimiter`);
- when Redis is unreachable, `on_redis_error="local"` limits each process to its share of
  the last known rate (shared by the processes seen alive), `"raise"` fails the call
  with `RateLimiterUnavailableError`. It never runs unlimited on account of Redis, and
  goes back to Redis as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import string
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from types import TracebackType
from typing import Any, Literal

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"aiodots.contrib.redis needs its extra: pip install 'aiodots[redis]' ({exc})"
    ) from exc

from aiodots.auth import without_userinfo
from aiodots.errors import DotsError
from aiodots.ratelimit import AdaptiveRateLimiter, RateLimit, WaitTooLong

__all__ = ["RateLimiterUnavailableError", "RedisRateLimiter"]

log = logging.getLogger("aiodots")

_A = AdaptiveRateLimiter
SCRIPT = string.Template(
    resources.files(__package__).joinpath("redis_bucket.lua").read_text("utf-8")
).substitute(
    WINDOW=_A.WINDOW, MIN_MEASURE=_A.MIN_MEASURE, SETTLE=_A.SETTLE,
    SLOW_START_DOUBLING=_A.SLOW_START_DOUBLING, SLOW_START_FLOOR=_A.SLOW_START_FLOOR,
    RECOVERY=_A.RECOVERY, HOLD=_A.HOLD, PLATEAU=_A.PLATEAU, PROBE=_A.PROBE,
    PAUSE_HOLD=_A.PAUSE_HOLD,
    BETA=0.9, MIN_RATE=0.5,  # AdaptiveRateLimiter's defaults for its `beta` and `min_rate`
)


class RateLimiterUnavailableError(DotsError):
    """The shared limiter's Redis did not answer, and `on_redis_error="raise"`."""


class _Unavailable(Exception):
    """Internal: a round trip to Redis failed."""


class _YourTurn:
    """Handed to a queued caller: the head left, this caller talks to Redis now."""


_YOUR_TURN = _YourTurn()
_FALLBACK = None  # handed to queued callers once the limiter has fallen back


def _pause_left(retry_after: float, answered_at: float, now: float) -> float:
    """What is left of a 429's Retry-After told late (Redis was away): the server's
    pause counts from its answer. A pause already over stays a pause (of a
    millisecond), not a refusal without one, which would cut the rate instead."""
    if retry_after <= 0:
        return 0.0
    return max(0.001, retry_after - (now - answered_at))


def _refuse_pause(paused: float, max_wait: float) -> None:
    """`WaitTooLong` where a pause would hold the call longer than it accepts."""
    if paused > max_wait:
        raise WaitTooLong(paused, "a Retry-After pause")


def _from_url(url: str) -> aioredis.Redis:
    """A client for `url`, failing fast (a down Redis must cost a caller milliseconds,
    not redis-py's default retries; one retry still replaces a pooled connection a
    restarted server closed). A URL that cannot work fails here, shown without what may
    be its password, and an option redis-py does not know too: it would otherwise
    surface only at the first call, as a TypeError."""
    try:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=1.0, retry=Retry(NoBackoff(), 1)
        )
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)  # made, not connected
    except (ValueError, TypeError) as exc:
        reason = type(exc).__name__ if isinstance(exc, ValueError) else str(exc)
        raise ValueError(
            f"not a Redis URL that can be used: {without_userinfo(url)!r} ({reason})"
        ) from None
    return client


class RedisRateLimiter:
    """A `RateLimiter` whose bucket, pause and adaptive rate are shared through Redis.

    `redis` is a `redis.asyncio.Redis` (yours to close) or a URL (the limiter makes the
    client, with short timeouts, and closes it in `aclose()`). `name` prefixes every key;
    a `Client` binds the limiter to its credentials, so each API key gets its own bucket
    under a SHA-256 of `client_id:api_key` (never the key itself). `ceiling`: the
    combined rate never to exceed, a number or a `RateLimit(rate, burst)`; without one
    the processes run unthrottled until the first 429, then find the limit together.

    `on_redis_error`: `"local"` (default) falls back, while Redis is unreachable, to an
    in-memory `AdaptiveRateLimiter` capped at this process's share of the last rate
    Redis held (the rate divided by the processes that called in the last
    `LIVE_SECONDS`; with no rate known, no ceiling and no 429 yet, it finds its own
    limit from its 429s as a lone client does); `"raise"` makes each acquire raise
    `RateLimiterUnavailableError`, before anything is sent. Either way Redis is tried
    again every `RECONNECT_SECONDS`; a Redis that restarted empty starts the shared
    state anew (from `ceiling`, or unthrottled until a 429).

    One limiter per client and event loop; pass it as `Client(rate_limiter=...)`.
    """

    #: A reservation lies at most this far ahead: the longest a rate cut or a pause
    #: takes to reach a process that already holds slots.
    HORIZON = 0.1
    MAX_RESERVE = 32  # slots one round trip may reserve
    LIVE_SECONDS = 10.0  # a process that called within this long counts as alive
    KEY_TTL_MS = 3_600_000  # state of a key nobody uses for an hour is dropped
    RECONNECT_SECONDS = 1.0
    ROUND_TRIP_SECONDS = 2.0  # the longest one call to Redis may take
    MAX_REPORTS = 64  # 429s kept for Redis while it cannot be told (the latest)

    def __init__(
        self,
        redis: aioredis.Redis | str,
        *,
        name: str = "aiodots:ratelimit",
        ceiling: float | RateLimit | None = None,
        on_redis_error: Literal["local", "raise"] = "local",
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if on_redis_error not in ("local", "raise"):
            raise ValueError(f"on_redis_error must be 'local' or 'raise', not {on_redis_error!r}")
        if isinstance(redis, str):
            # Fail fast: a down Redis must cost a caller milliseconds, not the client's
            # default retries. One retry still replaces a pooled connection that a
            # restarted server closed.
            self._redis = _from_url(redis)
            self._owns_redis = True
        else:
            self._redis = redis
            self._owns_redis = False
        self._script = self._redis.register_script(SCRIPT)
        self._name = name
        self._ceiling = RateLimit(ceiling) if isinstance(ceiling, int | float) else ceiling
        self._on_redis_error = on_redis_error
        self._adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        self._process = uuid.uuid4().hex
        self._namespace: str | None = None
        self._keys = self._keys_for("unbound")
        # Callers waiting for a slot while another one talks to Redis.
        self._queue: deque[asyncio.Future[float | _YourTurn | None]] = deque()
        self._fetching = False
        self._spare: deque[float] = deque()  # slots reserved for callers that left
        self._reserved_until = 0.0  # the last slot reserved so far
        # Feedback not yet told to Redis.
        self._successes = 0
        # (sent at, Retry-After or 0, answered at) of each 429 Redis was not told yet.
        self._reports: list[tuple[float, float, float]] = []
        self._flush_task: asyncio.Task[None] | None = None
        # What Redis said last.
        self._rate: float | None = self._ceiling.rate if self._ceiling else None
        self._pause_until = -float("inf")
        self._live = 1
        self.decreases = 0
        #: Round trips to Redis so far (scripts run), successful or not.
        self.round_trips = 0
        self._fallback: AdaptiveRateLimiter | None = None
        self._redis_back: asyncio.Future[None] | None = None  # done when Redis answers again
        self._next_probe = 0.0

    def __repr__(self) -> str:
        # No URL: it may carry a password.
        return f"<RedisRateLimiter keys={self._keys[0]!r} rate={self._rate!r}>"

    # -- binding and lifetime -----------------------------------------------------------

    def bind_credentials(self, client_id: str, api_key: str) -> None:
        """Keep this limiter's state under the API key's own namespace: a SHA-256 of
        `client_id:api_key`, so Redis never holds the key. `Client` calls this."""
        digest = hashlib.sha256(f"{client_id}:{api_key}".encode()).hexdigest()[:32]
        if self._namespace is not None and self._namespace != digest:
            raise ValueError("this RedisRateLimiter is already bound to other credentials")
        self._namespace = digest
        self._keys = self._keys_for(digest)

    def _keys_for(self, namespace: str) -> list[str]:
        # One hash tag, so that the three keys share a Redis Cluster slot.
        base = f"{self._name}:{{{namespace}}}"
        return [f"{base}:state", f"{base}:ok", f"{base}:live"]

    async def aclose(self) -> None:
        """Tell Redis the last 429s, then close the Redis client if the limiter made it."""
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
        if self._owns_redis:
            await self._redis.aclose()

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- introspection ------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The shared rate as Redis last said (None while unthrottled), or the local
        fallback's while Redis is unreachable."""
        if self._fallback is not None:
            return self._fallback.rate
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._pause_until

    @property
    def live_processes(self) -> int:
        """Processes that called Redis within `LIVE_SECONDS`, as Redis last said."""
        return self._live

    @property
    def using_fallback(self) -> bool:
        return self._fallback is not None

    def now(self) -> float:
        return self._clock()

    # -- waiting ------------------------------------------------------------------------

    async def acquire(self, max_wait: float = math.inf) -> float:
        """Wait until one request may be sent; see `BoundedLimiter` for `max_wait`."""
        started = self._clock()
        while True:
            fallback = self._fallback_in_use()
            if fallback is not None:
                if await self._acquire_locally(fallback, max_wait):
                    break
                continue  # Redis is back: take a shared slot instead
            paused = self._pause_until - self._clock()
            if paused > 0:
                # Known here already (this process's own 429): no slot before it ends.
                _refuse_pause(paused, max_wait)
                await self._sleep(paused)
                continue
            slot = await self._slot()
            if slot is None:
                continue  # fell back meanwhile
            paused = self._pause_until - self._clock()
            if paused > max_wait:
                # A pause Redis told of with the slot (which lies after it): left for a
                # caller that accepts the wait.
                self._spare.appendleft(slot)
                _refuse_pause(paused, max_wait)
            delay = slot - self._clock()
            if delay > 0:
                await self._sleep(delay)
            # A 429 with Retry-After seen here after the slot was reserved voids it.
            if self._clock() >= self._pause_until:
                break
        return self._clock() - started

    def acquire_within(self, max_wait: float) -> Awaitable[float]:
        return self.acquire(max_wait)

    async def _acquire_locally(self, fallback: AdaptiveRateLimiter, max_wait: float) -> bool:
        """Wait on the local fallback; False if Redis came back first (one limiter
        must not go on granting beside the other)."""
        # Slots handed out by Redis before it went away are used first, and a pause a
        # server asked for (a Retry-After) holds here as on the shared path.
        now = self._clock()
        _refuse_pause(self._pause_until - now, max_wait)
        before = max(self._reserved_until, self._pause_until) - now
        if before > 0:
            await self._sleep(before)
        back = self._redis_back
        local: asyncio.Future[float] = asyncio.ensure_future(fallback.acquire(max_wait))
        try:
            if back is None:
                await local
            else:
                either: list[asyncio.Future[Any]] = [local, back]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            # Let through only by the fallback: not when Redis came back first.
            if not local.done() or local.cancelled():
                return False
            local.result()  # a wait the fallback refused (WaitTooLong) is this call's
            return True
        finally:
            if not local.done():
                local.cancel()

    def _fallback_in_use(self) -> AdaptiveRateLimiter | None:
        fallback = self._fallback
        if fallback is None:
            return None
        if self._fetching or self._clock() < self._next_probe:
            return fallback
        return None  # this caller probes Redis

    async def _slot(self) -> float | None:
        """A send time reserved in Redis (this process's clock), or None on falling back."""
        horizon = self._clock() - self.HORIZON
        while self._spare:
            at = self._spare.popleft()
            if at >= horizon:
                return at
        if self._fetching:
            waiter: asyncio.Future[float | _YourTurn | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._queue.append(waiter)
            try:
                got = await waiter
            except asyncio.CancelledError:
                self._give_back(waiter)
                raise
            if not isinstance(got, _YourTurn):
                return got
        else:
            self._fetching = True
        try:
            return await self._fetch()
        finally:
            self._hand_over()

    def _give_back(self, waiter: asyncio.Future[float | _YourTurn | None]) -> None:
        """A queued caller was cancelled: pass on whatever it had been handed."""
        if not waiter.done() or waiter.cancelled():
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)
            return
        if waiter.exception() is not None:  # failed with the round trip: nothing to pass on
            return
        got = waiter.result()
        if isinstance(got, _YourTurn):
            self._hand_over()
        elif got is not None:
            self._spare.appendleft(got)

    def _hand_over(self) -> None:
        while self._queue:
            head = self._queue.popleft()
            if not head.done():
                head.set_result(_YOUR_TURN)
                return
        self._fetching = False

    async def _fetch(self) -> float | None:
        """Reserve a slot for this caller, and for as many queued ones as Redis allows,
        in one round trip; None if the limiter falls back to its local share."""
        if self._fallback is not None and self._clock() < self._next_probe:
            return None
        # Slots already reserved run out no sooner than this: asking now would only add
        # the few tokens earned since the last ask, one round trip for each.
        early = self._reserved_until - self.HORIZON / 4 - self._clock()
        if early > 0:
            await self._sleep(early)
        want = min(1 + len(self._queue), self.MAX_RESERVE)
        try:
            slots = await self._round_trip(want)
        except _Unavailable as exc:
            try:
                self._fall_back(exc)
            except RateLimiterUnavailableError as error:
                # Every caller queued behind this round trip fails with it now: handed
                # the turn one by one, each would wait out a timeout of its own.
                self._fail_queue(error)
                raise
            self._release_queue()
            return None
        if self._fallback is not None:
            log.warning("aiodots: Redis answers again; the shared rate limit is back")
            self._fallback = None
            if self._redis_back is not None and not self._redis_back.done():
                self._redis_back.set_result(None)  # callers waiting locally come back
        self._reserved_until = slots[-1]
        mine, rest = slots[0], slots[1:]
        for at in rest:
            while self._queue and self._queue[0].done():
                del self._queue[0]
            if not self._queue:
                self._spare.append(at)
            else:
                self._queue.popleft().set_result(at)
        return mine

    def _fail_queue(self, error: RateLimiterUnavailableError) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _release_queue(self) -> None:
        """Send every queued caller to the fallback."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(_FALLBACK)

    # -- Redis --------------------------------------------------------------------------

    async def _round_trip(self, want: int) -> list[float]:
        """Run the script: report feedback, reserve up to `want` slots (at least one
        when `want` is not 0). Returns the slots, on this process's clock."""
        successes, self._successes = self._successes, 0
        reports, self._reports = self._reports, []
        now = self._clock()
        args: list[Any] = [
            want, self.HORIZON, self._ceiling.rate if self._ceiling else 0,
            self._ceiling.burst if self._ceiling else 1, int(self._adaptive), successes,
            self._process, self.LIVE_SECONDS, self.KEY_TTL_MS,
        ]
        for sent_at, retry_after, answered_at in reports:
            args += [max(0.0, now - sent_at), _pause_left(retry_after, answered_at, now)]
        self.round_trips += 1
        try:
            # Bounded here too: a Redis client the caller made may have no socket
            # timeouts, and a Redis that takes connections but never answers would
            # hold every caller.
            async with asyncio.timeout(self.ROUND_TRIP_SECONDS):
                reply: Sequence[Any] = await self._script(keys=self._keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            # Told at the next round trip that gets through (or to the fallback).
            self._successes += successes
            self._reports[:0] = reports
            del self._reports[: -self.MAX_REPORTS]
            raise _Unavailable(type(exc).__name__) from exc
        # Offsets count from when Redis ran the script, before the reply arrived:
        # anchoring them at its arrival can only make a slot later, never earlier.
        received = self._clock()
        granted = int(reply[0])
        self._rate = float(reply[1]) if reply[1] not in (b"", "") else None
        pause_left = float(reply[2])
        if pause_left > 0:
            self._pause_until = max(self._pause_until, received + pause_left)
        self._live = max(1, int(reply[3]))
        self.decreases = int(reply[4])
        return [received + float(offset) for offset in reply[5 : 5 + granted]]

    def _fall_back(self, exc: _Unavailable) -> None:
        self._next_probe = self._clock() + self.RECONNECT_SECONDS
        if self._on_redis_error == "raise":
            raise RateLimiterUnavailableError(
                f"the shared rate limiter's Redis is unreachable ({exc}); "
                "on_redis_error='raise' fails the call rather than send unlimited"
            ) from exc.__cause__
        if self._fallback is not None:
            return
        share = None
        if self._rate is not None:
            burst = self._ceiling.burst if self._ceiling else 1
            share = RateLimit(self._rate / self._live, max(1, burst // self._live))
        # With no rate known (no ceiling, no 429 yet) the share of the limit is unknown:
        # the process finds it itself from its own 429s, as a lone client would.
        self._fallback = AdaptiveRateLimiter(
            share, adaptive=self._adaptive, clock=self._clock, sleep=self._sleep
        )
        # The 429s Redis could not be told are this process's to act on now (they stay
        # queued for Redis too, for when it answers again).
        now = self._clock()
        for sent_at, retry_after, answered_at in self._reports:
            self._fallback.on_response(
                429, sent_at, _pause_left(retry_after, answered_at, now) or None
            )
        self._redis_back = asyncio.get_running_loop().create_future()
        log.warning(
            "aiodots: Redis is unreachable (%s); limiting this process to %s until it "
            "answers again", exc, f"{share.rate:.1f}/s" if share else "what 429s allow",
        )

    # -- feedback -----------------------------------------------------------------------

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        fallback = self._fallback
        if fallback is not None:
            fallback.on_response(status, sent_at, retry_after)
        if status == 429:
            # For Redis: told now, or (from the fallback) once it answers again.
            self._reports.append((sent_at, retry_after or 0.0, self._clock()))
            if retry_after is not None and retry_after > 0:
                # This process stops at once (on the fallback too, and on its return);
                # the others on the report's round trip.
                self._pause_until = max(self._pause_until, self._clock() + retry_after)
                self._spare.clear()
            if fallback is None:
                self._flush_soon()
            else:
                del self._reports[: -self.MAX_REPORTS]  # Redis is away: the latest only
        elif status < 500 and fallback is None:
            self._successes += 1

    def _flush_soon(self) -> None:
        """Tell Redis of a 429 now, not at this process's next acquire: the others must
        slow down or pause as soon as possible."""
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self._round_trip(0)
        except _Unavailable as exc:
            with contextlib.suppress(RateLimiterUnavailableError):
                self._fall_back(exc)
