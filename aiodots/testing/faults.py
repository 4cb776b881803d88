"""What can go wrong on the emulator's side: the fault plan and its server rate limit."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Literal

import attrs

__all__ = ["FaultPlan", "ForcedResponse", "Padding", "ServerRateLimit", "TokenBucket"]

RetryAfterForm = Literal["seconds", "http-date", "none"]
LimitHeaders = Literal["none", "x-ratelimit", "ietf"]


@attrs.frozen(kw_only=True)
class ServerRateLimit:
    """A token bucket per emulator: `rate` requests/s, `burst` at once. Over it, 429 with
    `Retry-After` in delta-seconds, as an HTTP-date, or absent (`retry_after="none"`).

    `quota` adds a quota over a long window: at most that many requests accepted per
    `quota_window` seconds (a day by default), in fixed windows counted from when the
    plan is set. Once it is spent, every request is answered 429 until the window ends,
    its `Retry-After` the time left.

    `headers` announces the limit on every response it applies to: not at all
    (`"none"`), as `X-RateLimit-Limit` / `-Remaining` / `-Reset` (`"x-ratelimit"`: the
    rate only, as these headers state no window), or as the IETF draft's structured
    `RateLimit-Policy` / `RateLimit` (`"ietf"`): `"default";q=<rate>;w=1`, and with a
    quota `"quota";q=<quota>;w=<quota_window>` beside it, each with its own `r` and `t`.
    """

    rate: float = attrs.field(validator=attrs.validators.gt(0))
    burst: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    retry_after: RetryAfterForm = "seconds"
    headers: LimitHeaders = "none"
    quota: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    quota_window: float = attrs.field(default=86400.0, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class FaultPlan:
    """Faults applied to every request, chosen at random with `seed` for repeatable runs.

    - `latency` (+ up to `latency_jitter`) seconds added before answering;
    - `error_rate` of requests answered `error_status` (503 by default) before processing;
    - `reset_rate` of requests whose connection is dropped before processing;
    - `reset_after_rate` of creates (POST) processed, then dropped before the answer: the
      object exists and the client cannot know (what reconciliation is for);
    - `fail_after_rate` of creates (POST) processed, then answered `fail_after_status`
      (502 by default) instead: the object exists, the answer says it failed;
    - `rate_limit`: a server-side token bucket (see `ServerRateLimit`).

    One-shot faults (`fail_next`, `reset_next`, `truncate_next`, `pad_next`,
    `reset_after_next`, `fail_after_next`) live on the emulator.
    """

    rate_limit: ServerRateLimit | None = None
    latency: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    latency_jitter: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    error_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    error_status: int = 503
    reset_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    reset_after_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    fail_after_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    fail_after_status: int = 502
    seed: int | None = None


@attrs.frozen(kw_only=True)
class ForcedResponse:
    """One queued answer: a status with a JSON error body, an HTML page (`body="html"`,
    as a proxy's 502 page), or a truncated JSON body (`body="truncated"`)."""

    status: int
    body: Literal["json", "html", "truncated"] = "json"
    retry_after: str | None = None


@attrs.frozen
class Padding:
    """A successful answer's JSON padded with spaces to `size` bytes (still JSON), sent
    with a `Content-Length`, or chunked without one."""

    size: int
    chunked: bool = False


class TokenBucket:
    def __init__(self, limit: ServerRateLimit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._updated = clock()
        # The quota's current window: when it began, and the requests it has accepted.
        self._window_start = self._updated
        self._used = 0

    def take(self) -> float | None:
        """Take a token: None when granted, else the seconds until one is available (the
        end of the quota's window, while the quota is spent)."""
        now = self._clock()
        rate, burst = self.limit.rate, self.limit.burst
        self._tokens = min(burst, self._tokens + (now - self._updated) * rate)
        self._updated = now
        quota = self.limit.quota
        if quota is not None:
            left = self._quota_left(now)
            if self._used >= quota:
                return left
        if self._tokens >= 1:
            self._tokens -= 1
            self._used += 1
            return None
        return (1 - self._tokens) / rate

    def _quota_left(self, now: float) -> float:
        """The seconds left in the quota's window at `now`, starting a new one if due."""
        window = self.limit.quota_window
        if now - self._window_start >= window:
            self._window_start += window * ((now - self._window_start) // window)
            self._used = 0
        return self._window_start + window - now

    def limit_headers(self) -> dict[str, str]:
        """The limit as this bucket announces it (see `ServerRateLimit.headers`): the rate
        per second, the whole tokens left, and the seconds until the bucket is full."""
        form = self.limit.headers
        if form == "none":
            return {}
        rate, burst = self.limit.rate, self.limit.burst
        remaining = max(0, math.floor(self._tokens))
        reset = math.ceil(max(0.0, burst - self._tokens) / rate)
        limit = f"{rate:g}"
        if form == "x-ratelimit":
            return {
                "X-RateLimit-Limit": limit,
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset),
            }
        policy = f'"default";q={limit};w=1'
        current = f'"default";r={remaining};t={reset}'
        quota = self.limit.quota
        if quota is not None:
            window_left = math.ceil(self._quota_left(self._clock()))
            policy += f', "quota";q={quota};w={self.limit.quota_window:g}'
            current += f', "quota";r={max(0, quota - self._used)};t={window_left}'
        return {"RateLimit-Policy": policy, "RateLimit": current}

    def retry_after_header(self, wait: float) -> str | None:
        form = self.limit.retry_after
        if form == "none":
            return None
        seconds = max(1, math.ceil(wait))  # delta-seconds is a whole number (RFC 9110)
        if form == "seconds":
            return str(seconds)
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds + 1)
        return format_datetime(when, usegmt=True)


class FaultState:
    """The live fault plan plus the one-shot queues; swapped or appended while running."""

    def __init__(self, plan: FaultPlan) -> None:
        self.forced: deque[ForcedResponse] = deque()
        self.resets_pending = 0
        self.truncations_pending = 0
        self.paddings: deque[Padding] = deque()
        #: one-shot faults applied after processing: "reset" or a response to send instead
        self.after_processing: deque[ForcedResponse | Literal["reset"]] = deque()
        self.set_plan(plan)

    def set_plan(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.random = random.Random(plan.seed)
        self.bucket = TokenBucket(plan.rate_limit) if plan.rate_limit else None

    def latency(self) -> float:
        plan = self.plan
        if not plan.latency and not plan.latency_jitter:
            return 0.0
        return plan.latency + plan.latency_jitter * self.random.random()

    def take_reset(self) -> bool:
        if self.resets_pending:
            self.resets_pending -= 1
            return True
        return bool(self.plan.reset_rate) and self.random.random() < self.plan.reset_rate

    def take_forced(self) -> ForcedResponse | None:
        if self.forced:
            return self.forced.popleft()
        plan = self.plan
        if plan.error_rate and self.random.random() < plan.error_rate:
            return ForcedResponse(status=plan.error_status)
        return None

    def take_truncation(self) -> bool:
        if self.truncations_pending:
            self.truncations_pending -= 1
            return True
        return False

    def take_padding(self) -> Padding | None:
        return self.paddings.popleft() if self.paddings else None

    def take_after_processing(self, method: str) -> ForcedResponse | Literal["reset"] | None:
        """The fault for a request its endpoint has just processed successfully, if any:
        queued ones first, then `reset_after_rate` and `fail_after_rate` for creates."""
        if self.after_processing:
            return self.after_processing.popleft()
        rate = self.plan.reset_after_rate
        if rate and method == "POST" and self.random.random() < rate:
            return "reset"
        rate = self.plan.fail_after_rate
        if rate and method == "POST" and self.random.random() < rate:
            return ForcedResponse(status=self.plan.fail_after_status)
        return None
