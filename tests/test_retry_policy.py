"""The retry decisions as pure functions: no server, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import aiodots
from aiodots.errors import ConnectFailed
from aiodots.retry import Replay, backoff_seconds, parse_retry_after

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 2.0),  # delta-seconds are whole: a fraction is read up, never down
        ("0.05", 1.0),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:59:00 GMT", 0.0),  # in the past: go now
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
        ("Thu, 01 Jan 2026 12:00:30", 30.0),  # no zone: GMT, as HTTP-dates always are
        ("Thursday, 01-Jan-26 12:00:30 GMT", 30.0),  # RFC 850, obsolete
        ("Thu Jan  1 12:00:30 2026", 30.0),  # asctime, obsolete
        ("Fri, 31 Dec 9999 23:59:59 GMT", 251_635_031_999.0),  # fails fast, as too long
        # a year past what a C long holds: unreadable, not an OverflowError
        ("Thu, 01 Jan 99999999999999999999 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_backoff_doubles_and_caps() -> None:
    ceilings = [backoff_seconds(n, initial=0.5, maximum=4, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_seconds(3, initial=0.5, maximum=4, rand=lambda: 0.0) == 0.0


def api_error(status: int, retry_after: float | None = None) -> aiodots.APIError:
    return aiodots.errors.error_for_response(
        status, {}, b"", method="POST", path="/p", retry_after=retry_after
    )


@pytest.mark.parametrize(
    ("exc", "safe", "unprocessed_only"),
    [
        (api_error(408), True, True),
        (api_error(429), True, True),
        (api_error(503), True, True),
        (api_error(500), True, False),
        (api_error(502), True, False),
        (api_error(504), True, False),
        (api_error(400), False, False),
        (api_error(404), False, False),
        (api_error(409), False, False),
        (ConnectFailed("refused", method="POST", path="/p"), True, True),
        (aiodots.TLSVerificationError("untrusted", method="GET", path="/p"), False, False),
        (aiodots.APIConnectionError("reset", method="POST", path="/p"), True, False),
        (aiodots.APITimeoutError("slow", method="POST", path="/p"), True, False),
        (aiodots.InvalidResponseError("cut", status=200, method="POST", path="/p"), False, False),
        (ValueError("bug"), False, False),
    ],
)
def test_which_failures_retry_per_operation_kind(
    exc: BaseException, safe: bool, unprocessed_only: bool
) -> None:
    policy = aiodots.RetryPolicy()
    assert policy.is_retryable(exc, Replay.SAFE) is safe
    assert policy.is_retryable(exc, Replay.UNPROCESSED_ONLY) is unprocessed_only


def test_a_retry_after_over_the_maximum_is_not_retried_and_its_wait_is_obeyed() -> None:
    policy = aiodots.RetryPolicy(max_retry_after=10)
    assert policy.is_retryable(api_error(429, 10), Replay.SAFE)
    assert not policy.is_retryable(api_error(429, 11), Replay.SAFE)
    assert policy.wait_for(api_error(429, 7), 1) == 7
    assert policy.wait_for(api_error(503, 2), 3) == 2


def test_budget_spends_more_for_timeouts_and_refills_what_a_success_spent() -> None:
    budget = aiodots.RetryBudget(capacity=20, retry_cost=5, timeout_cost=10, success_refill=1)
    timeout = aiodots.APITimeoutError("t", method="GET", path="/")
    assert budget.try_spend(timeout) == 10
    assert budget.try_spend(api_error(503)) == 5
    assert budget.try_spend(timeout) is None  # 5 left, a timeout costs 10
    budget.on_success(spent=5)
    assert budget.tokens == 10
    budget.on_success()
    assert budget.tokens == 11
    for _ in range(50):
        budget.on_success()
    assert budget.tokens == 20


@pytest.mark.parametrize(
    ("date", "seconds"),
    [
        # the clocks agree (the Date is truncated to its second): ours keeps fractions
        ("Thu, 01 Jan 2026 12:00:00 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:59:59 GMT", 30.0),
        # ours is a minute fast or a minute slow: the server's clock decides
        ("Thu, 01 Jan 2026 11:59:00 GMT", 90.0),
        ("Thu, 01 Jan 2026 12:01:00 GMT", 0.0),
        # an unreadable Date is no evidence either way
        ("yesterday", 30.0),
        ("Thu, 01 Jan 99999999999999999999 12:00:00 GMT", 30.0),
    ],
)
def test_an_http_date_is_read_against_the_server_s_date_when_the_clocks_disagree(
    date: str, seconds: float
) -> None:
    retry_after = "Thu, 01 Jan 2026 12:00:30 GMT"
    assert parse_retry_after(retry_after, now=NOW, date=date) == seconds


def test_an_http_date_keeps_the_fraction_of_a_second_our_clock_reads() -> None:
    now = NOW.replace(microsecond=700_000)
    retry_after = "Thu, 01 Jan 2026 12:00:02 GMT"
    waited = parse_retry_after(retry_after, now=now, date="Thu, 01 Jan 2026 12:00:00 GMT")
    assert waited == pytest.approx(1.3)
