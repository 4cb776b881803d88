"""When to repeat a call and how long to wait first. Pure logic: no I/O, no clock of its own.

The transport asks three questions here: may this failure be retried for this operation
(`RetryPolicy.is_retryable`), how long to wait (`RetryPolicy.wait_for`), and may the client
afford another retry at all (`RetryBudget`).
"""

from __future__ import annotations

import enum
import math
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConnectFailed,
    ConnectionDropped,
    InvalidResponseError,
    TLSVerificationError,
    UnreadableResponseError,
)

__all__ = [
    "CLOCK_TOLERANCE",
    "REPLAY",
    "RETRYABLE_STATUSES",
    "UNPROCESSED_STATUSES",
    "ConnectFailed",
    "Replay",
    "RetryBudget",
    "RetryPolicy",
    "backoff_seconds",
    "is_ambiguous",
    "is_key_rejection",
    "parse_retry_after",
]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Statuses that say the server did not act on the request: 408 (it never read the whole
# request), 429 (refused before processing) and 503 (RFC 9110: "currently unable to
# handle the request"). 500, 502 and 504 may arrive after the work was done.
UNPROCESSED_STATUSES = frozenset({408, 429, 503})
AMBIGUOUS_STATUSES = RETRYABLE_STATUSES - UNPROCESSED_STATUSES


class Replay(enum.Enum):
    """Whether repeating an operation is harmless, stated once per operation."""

    #: Reads, and writes that leave the same state however often they are sent (PUT,
    #: DELETE, a POST or PATCH that sets values): repeated after resets, timeouts and 5xx.
    SAFE = "safe"
    #: Writes with no idempotency mechanism (`POST /v2/flows`): repeated only when the
    #: request provably did not take effect, so a retry can never create a duplicate.
    UNPROCESSED_ONLY = "unprocessed-only"
    #: Money-moving writes whose body carries an `idempotency_key`: the same key goes out
    #: on every attempt, so they are repeated after resets, timeouts and 5xx like reads.
    IDEMPOTENT = "idempotent"


#: What each operation may be repeated after, keyed as in Dots' OpenAPI document.
#: Reads and HTTP's idempotent methods (PUT, PATCH setting values, DELETE) are SAFE;
#: creates that carry an `idempotency_key` are IDEMPOTENT; every other POST creates or
#: triggers something the API cannot deduplicate, so it is UNPROCESSED_ONLY.
#: tests/test_idempotency.py holds this table's keys equal to `aiodots.OPERATIONS`.
REPLAY: dict[str, Replay] = {
    "GET /v2/users": Replay.SAFE,
    "POST /v2/users": Replay.UNPROCESSED_ONLY,
    "GET /v2/users/{user_id}": Replay.SAFE,
    "DELETE /v2/users/{user_id}": Replay.SAFE,
    "PATCH /v2/users/{user_id}": Replay.SAFE,
    "PUT /v2/users/{user_id}/compliance": Replay.SAFE,
    "POST /v2/users/{user_id}/send-verification-token": Replay.UNPROCESSED_ONLY,
    "POST /v2/users/{user_id}/verify": Replay.UNPROCESSED_ONLY,
    "GET /v2/users/{user_id}/payout-methods": Replay.SAFE,
    "PUT /v2/users/{user_id}/payout-methods": Replay.SAFE,
    "GET /v2/transfers": Replay.SAFE,
    "POST /v2/transfers": Replay.IDEMPOTENT,
    "GET /v2/transfers/{transfer_id}": Replay.SAFE,
    "GET /v2/flows": Replay.SAFE,
    "POST /v2/flows": Replay.UNPROCESSED_ONLY,
    "GET /v2/flows/{flow_id}": Replay.SAFE,
    "GET /v2/payout-links": Replay.SAFE,
    "POST /v2/payout-links": Replay.IDEMPOTENT,
    "GET /v2/payout-links/{payout_link_id}": Replay.SAFE,
    "DELETE /v2/payout-links/{payout_link_id}": Replay.SAFE,
    "POST /v2/payout-links/{payout_link_id}/redeliver": Replay.UNPROCESSED_ONLY,
    "POST /v2/payouts": Replay.IDEMPOTENT,
    "POST /v2/payout-batches": Replay.IDEMPOTENT,
    "GET /v2/payout-batches": Replay.SAFE,
    "GET /v2/payout-batches/{payout_batch_id}": Replay.SAFE,
    "GET /v2/payout-batches/{payout_batch_id}/results": Replay.SAFE,
    "POST /v2/payments": Replay.UNPROCESSED_ONLY,
    "POST /v2/payouts/send-payout": Replay.IDEMPOTENT,
    "POST /v2/payout-requests": Replay.UNPROCESSED_ONLY,
    "GET /v2/payout-requests": Replay.SAFE,
    "GET /v2/payout-requests/{payout_request_id}": Replay.SAFE,
    "GET /v2/transactions": Replay.SAFE,
    "GET /v2/transactions/{transaction_id}": Replay.SAFE,
    "GET /v2/transfer-batches": Replay.SAFE,
    "POST /v2/transfer-batches": Replay.IDEMPOTENT,
    "GET /v2/transfer-batches/{transfer_batch_id}": Replay.SAFE,
    "GET /v2/payment-customers": Replay.SAFE,
    "POST /v2/payment-customers": Replay.UNPROCESSED_ONLY,
    "GET /v2/payment-customers/{payment_customer_id}": Replay.SAFE,
    "GET /v2/accounts-payable/vendors": Replay.SAFE,
    "POST /v2/accounts-payable/vendors": Replay.UNPROCESSED_ONLY,
    "GET /v2/accounts-payable/vendors/{vendor_id}": Replay.SAFE,
    "DELETE /v2/accounts-payable/vendors/{vendor_id}": Replay.SAFE,
    "GET /v2/accounts-payable/vendors/{vendor_id}/payment-methods": Replay.SAFE,
    "POST /v2/accounts-payable/vendors/{vendor_id}/payment-methods": Replay.UNPROCESSED_ONLY,
    "GET /v2/accounts-payable/vendors/{vendor_id}/payment-methods/{payment_method_id}": Replay.SAFE,
    "DELETE /v2/accounts-payable/vendors/{vendor_id}/payment-methods/{payment_method_id}":
        Replay.SAFE,
    "GET /v2/accounts-payable/payables": Replay.SAFE,
    "POST /v2/accounts-payable/payables": Replay.UNPROCESSED_ONLY,
    "POST /v2/accounts-payable/payables/upload-from-file": Replay.UNPROCESSED_ONLY,
    "GET /v2/accounts-payable/payables/{payable_id}": Replay.SAFE,
    "PATCH /v2/accounts-payable/payables/{payable_id}": Replay.SAFE,
    "POST /v2/accounts-payable/payables/{payable_id}/file": Replay.SAFE,  # replaces the file
    "DELETE /v2/accounts-payable/payables/{payable_id}/file": Replay.SAFE,
    "POST /v2/accounts-payable/payables/{payable_id}/cancel": Replay.UNPROCESSED_ONLY,
    "POST /v2/accounts-payable/payables/{payable_id}/submit-for-approval":
        Replay.UNPROCESSED_ONLY,
    "POST /v2/accounts-payable/payables/{payable_id}/approve": Replay.UNPROCESSED_ONLY,
    "POST /v2/accounts-payable/payables/{payable_id}/reject": Replay.UNPROCESSED_ONLY,
    "POST /v2/accounts-payable/payables/{payable_id}/pay": Replay.UNPROCESSED_ONLY,
    "GET /v2/accounts-payable/approval-policies": Replay.SAFE,
    "POST /v2/accounts-payable/approval-policies": Replay.UNPROCESSED_ONLY,
    "PATCH /v2/accounts-payable/approval-policies/{approval_policy_id}": Replay.SAFE,
    "DELETE /v2/accounts-payable/approval-policies/{approval_policy_id}": Replay.SAFE,
    "GET /v2/accounts-payable/approvers": Replay.SAFE,
    "GET /v2/apps": Replay.SAFE,
    "POST /v2/apps": Replay.UNPROCESSED_ONLY,
    "GET /v2/apps/{app_id}": Replay.SAFE,
    "GET /v2/apps/{app_id}/compliance": Replay.SAFE,
    "PUT /v2/apps/{app_id}/compliance": Replay.SAFE,
    "GET /v2/apps/{app_id}/ach-account": Replay.SAFE,
    "PUT /v2/apps/{app_id}/ach-account": Replay.SAFE,
    "POST /v2/apps/{app_id}/deposit": Replay.IDEMPOTENT,
    "POST /v2/apps/{app_id}/withdraw": Replay.IDEMPOTENT,
    "POST /v2/apps/{app_id}/kyb-flow": Replay.UNPROCESSED_ONLY,
    "POST /v2/apps/{app_id}/change_settings": Replay.SAFE,  # sets values
    "GET /v2/organization-transfers": Replay.SAFE,
    "POST /v2/organization-transfers": Replay.IDEMPOTENT,
    "GET /v2/organization-transfers/{transfer_id}": Replay.SAFE,
    "PUT /v2/users/{user_id}/addresses": Replay.SAFE,
    "GET /v2/organizations": Replay.SAFE,
    "PUT /v2/organizations/copy-compliance-information-between-apps": Replay.SAFE,
    "PUT /v2/organizations/copy-organization-compliance-to-app/{api_app_id}": Replay.SAFE,
}


# How far this machine's clock may disagree with a server's before an HTTP-date is read
# against the server's own `Date` instead (NTP keeps clocks within milliseconds).
CLOCK_TOLERANCE = 1.0


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, date: str | None = None
) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP-date.

    An HTTP-date is read against this machine's clock (`now`), which keeps its
    fractions of a second; but when the response's own `Date` (`date`, the server's
    clock when it answered, truncated to the second) says the two clocks disagree by
    more than `CLOCK_TOLERANCE`, against that instead (RFC 9110 sec. 10.2.3 leaves the
    reading to the client; a clock a minute fast would otherwise never wait at all).

    Returns None when absent or unreadable (a malformed hint is ignored, not obeyed).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not (math.isfinite(seconds) and seconds >= 0):
            return None
        # Delta-seconds are a whole number (RFC 9110 sec. 10.2.3); a fraction is read up
        # to the next whole second. Taken as it was, a server that sends the time to its
        # next token (0.05) had the limiter release the burst a full bucket allows into
        # a bucket holding one token, pause after pause: with 20 callers against 20/s,
        # 1,300 calls of 1,550 failed with RateLimitError, none with whole seconds.
        return float(math.ceil(seconds))
    when = _http_date(value)
    if when is None:
        return None
    now = now or datetime.now(UTC)
    served = _http_date(date)
    if served is not None:
        # A `Date` of a clock that agrees with ours reads up to a second behind it.
        behind = (now - served).total_seconds()
        if not -CLOCK_TOLERANCE <= behind <= 1 + CLOCK_TOLERANCE:
            now = served
    return max(0.0, (when - now).total_seconds())


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        # OverflowError: a year past what a C long holds ("... 99999999999999999999 ...").
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed attempt may have taken effect on the server: no readable answer
    after the request left (a reset, a timeout, a 2xx cut short), or a 500/502/504."""
    if isinstance(exc, ConnectFailed):
        return False
    if isinstance(exc, APIConnectionError | UnreadableResponseError):
        return True
    return isinstance(exc, APIError) and exc.status in AMBIGUOUS_STATUSES


def is_key_rejection(exc: BaseException) -> bool:
    """Whether an error refuses an `idempotency_key` as already used. Dots does not
    document the answer: a 409, or a 400/422 that mentions the idempotency key."""
    if not isinstance(exc, APIError) or exc.status not in (400, 409, 422):
        return False
    if exc.status == 409:
        return True
    text = f"{exc.error_code or ''} {exc.message}".lower()
    return "idempoten" in text


def backoff_seconds(
    retry_number: int, *, initial: float, maximum: float, rand: Callable[[], float]
) -> float:
    """Exponential backoff with "full jitter": uniform in [0, min(max, initial * 2**(n-1))].

    Full jitter spreads a thousand retrying tasks over the whole window instead of
    bunching them at its edge (the AWS architecture blog's comparison of jitter kinds).
    """
    # Past 64 doublings the cap was reached long ago; 2.0 ** 1024 would overflow.
    doublings = min(max(0, retry_number - 1), 64)
    ceiling: float = min(maximum, initial * 2.0**doublings)
    return ceiling * rand()


def is_duration(value: object) -> bool:
    """A finite number of seconds above 0. Infinity would overflow aiohttp's timers; NaN
    compares false with everything, so it would never expire."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value) and value > 0
    )


def finite_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: `is_duration`, or None where the field is optional."""
    if value is not None and not is_duration(value):
        raise ValueError(
            f"{attribute.name} must be a finite number of seconds above 0, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries. Immutable; per-call overrides make a changed copy (`evolve`).

    - `max_retries`: retries after the first attempt (0 turns retrying off).
    - `backoff_initial` / `backoff_max`: the jittered exponential wait between attempts.
    - `max_retry_after`: a server asking for a longer wait than this fails the call at
      once rather than holding it (and every other caller) hostage. A `Retry-After`
      that long fails it with its answer's error (`RateLimitError` for a 429,
      `ServerError` for a 503); a wait the limiter would impose before a send for the
      server (what is left of a pause, the time to its next slot at a limit the server
      announced), with `RateLimitError`, unsent. Waits under a second are never
      refused, nor those of a `rate_limit` of the client's own.
    - `deadline`: seconds for the whole call, all attempts and waits included; None: no cap.
    """

    max_retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    backoff_initial: float = attrs.field(default=0.5, validator=finite_seconds)
    backoff_max: float = attrs.field(default=8.0, validator=finite_seconds)
    max_retry_after: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    deadline: float | None = attrs.field(default=None, validator=finite_seconds)
    rand: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)

    def is_retryable(self, exc: BaseException, replay: Replay) -> bool:
        """Whether this failure may be retried for an operation of this kind."""
        if isinstance(exc, InvalidResponseError):
            # A 2xx whose body was cut short: the call took effect. A read may simply be
            # read again; a keyed call too, its key makes the API answer (or refuse) the
            # same object. A body of the wrong shape would come back the same: no retry.
            return isinstance(exc, UnreadableResponseError) and (
                replay is not Replay.UNPROCESSED_ONLY
            )
        if isinstance(exc, APIError):
            if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                return False  # fail fast rather than hold the caller that long
            allowed = (
                UNPROCESSED_STATUSES if replay is Replay.UNPROCESSED_ONLY else RETRYABLE_STATUSES
            )
            return exc.status in allowed
        if isinstance(exc, ConnectFailed):
            return not isinstance(exc, TLSVerificationError)  # the same certificate again
        if isinstance(exc, APIConnectionError):
            # A reset or a timeout after the request was sent is ambiguous: the server
            # may have acted on it. Only operations that are safe to repeat go again.
            return replay is not Replay.UNPROCESSED_ONLY
        return False

    def wait_for(self, exc: BaseException, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based) after `exc`."""
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        if retry_number == 1 and isinstance(exc, ConnectionDropped):
            # Most often a pooled connection the server closed as idle: nothing is wrong
            # that waiting would mend. aiohttp resends such a request at once itself; its
            # own resend is off (it bypassed this policy, the limiter and the stats), so
            # the first retry here does what it did.
            return 0.0
        return backoff_seconds(
            retry_number, initial=self.backoff_initial, maximum=self.backoff_max, rand=self.rand
        )


class RetryBudget:
    """A token bucket for retries shared by one client, so an outage cannot multiply load.

    Each retry spends tokens (a timeout more, since it held a connection for the whole
    timeout); a call that succeeds gives back what its retries spent, or one token when it
    needed none. With the bucket empty, failures surface at once until successes refill
    it. The numbers and the refund follow botocore's "standard" retry mode (capacity 500,
    retry cost 5, timeout cost 10, refill 1 per success at the first attempt).
    """

    def __init__(
        self,
        capacity: int = 500,
        *,
        retry_cost: int = 5,
        timeout_cost: int = 10,
        success_refill: int = 1,
    ) -> None:
        if capacity < 0 or retry_cost < 1 or timeout_cost < 1 or success_refill < 0:
            raise ValueError("retry budget numbers must be positive")
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.timeout_cost = timeout_cost
        self.success_refill = success_refill
        self._tokens = capacity
        # Budgets are shared by every task of a client, and a client may be driven from
        # threads with their own loops; the lock keeps spend/refill atomic across them.
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        return self._tokens

    def cost_of(self, exc: BaseException) -> int:
        return self.timeout_cost if isinstance(exc, APITimeoutError) else self.retry_cost

    def try_spend(self, exc: BaseException) -> int | None:
        """Take the cost of retrying after `exc`; None when the budget cannot cover it."""
        cost = self.cost_of(exc)
        with self._lock:
            if self._tokens < cost:
                return None
            self._tokens -= cost
            return cost

    def on_success(self, spent: int = 0) -> None:
        """A call succeeded: give back what its retries spent, or the per-success refill."""
        if not spent and self._tokens >= self.capacity:
            return  # the common case: a full bucket, nothing to refill, no lock to take
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + (spent or self.success_refill))
