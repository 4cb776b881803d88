"""Reading a server's announced limit: pure functions over a headers mapping."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from aiodots.ratelimit_headers import (
    RATE_WINDOW,
    RateLimitInfo,
    announced_rate,
    limit_signal,
    parse_rate_limit_headers,
)


def parse(headers: dict[str, str], now: float | None = None) -> RateLimitInfo | None:
    return parse_rate_limit_headers(CIMultiDict(headers), now=now)


def test_no_rate_limit_headers_is_none() -> None:
    assert parse({"Content-Type": "application/json"}) is None


def test_x_ratelimit_headers_are_read_per_second() -> None:
    info = parse({"x-ratelimit-limit": "100", "X-RateLimit-Remaining": "42",
                  "X-RateLimit-Reset": "1"})
    assert info == RateLimitInfo(limit=100, window=None, remaining=42, reset=1)
    assert info is not None
    assert announced_rate(info) == 100


def test_a_reset_given_as_a_unix_time_becomes_seconds_from_now() -> None:
    info = parse({"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": "1767225600"},
                 now=1767225600 - 42.0)
    assert info is not None
    assert info.reset == pytest.approx(42.0)
    # without a clock to compare with, an absolute reset is dropped, not misread
    info = parse({"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": "1767225600"})
    assert info is not None
    assert info.reset is None


def test_a_reset_given_as_a_unix_time_in_milliseconds_becomes_seconds_from_now() -> None:
    # Read as Unix seconds, 1767225600000 was a reset some 55,000 years away.
    info = parse({"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": "1767225600000"},
                 now=1767225600 - 42.0)
    assert info is not None
    assert info.reset == pytest.approx(42.0)


def test_ietf_dictionary_form_with_its_policy() -> None:
    info = parse({"RateLimit": "limit=100, remaining=50, reset=1",
                  "RateLimit-Policy": "100;w=1"})
    assert info == RateLimitInfo(limit=100, window=1, remaining=50, reset=1)
    info = parse({"RateLimit": "limit=600, remaining=0, reset=30",
                  "RateLimit-Policy": "600;w=60"})
    assert info is not None
    assert announced_rate(info) == 10


def test_ietf_separate_fields() -> None:
    info = parse({"RateLimit-Limit": "20", "RateLimit-Remaining": "3", "RateLimit-Reset": "2"})
    assert info == RateLimitInfo(limit=20, window=None, remaining=3, reset=2)


def test_ietf_structured_form() -> None:
    info = parse({"RateLimit-Policy": '"default";q=100;w=1',
                  "RateLimit": '"default";r=50;t=1'})
    assert info == RateLimitInfo(limit=100, window=1, remaining=50, reset=1)
    assert announced_rate(info) == 100


def test_several_policies_the_tightest_rate_wins() -> None:
    info = parse({"RateLimit-Policy": '"burst";q=100;w=1, "day";q=86400;w=86400, '
                                      '"minute";q=600;w=60',
                  "RateLimit": '"burst";r=80;t=1, "minute";r=7;t=12'})
    assert info is not None
    assert announced_rate(info) == 10  # 600 a minute: a minute's window is still a rate
    assert info.remaining == 7
    assert info.reset == 12


# -- a quota over a long window is not a pace ----------------------------------------


@pytest.mark.parametrize(
    "policy",
    ['"burst";q=100;w=1, "daily";q=100000;w=86400', "100;w=1, 100000;w=86400",
     '"daily";q=100000;w=86400, "burst";q=100;w=1'],
)
def test_a_daily_quota_beside_a_per_second_limit_does_not_set_the_pace(policy: str) -> None:
    # Read as its average, 100,000 a day paced every call 0.86 s apart where the server
    # allows 100 a second until the day's quota is spent.
    info = parse({"RateLimit-Policy": policy})
    assert info is not None
    assert announced_rate(info) == 100
    assert (info.limit, info.window) == (100, 1)


@pytest.mark.parametrize(
    "policy", ["100;w=3600", '"hourly";q=1000;w=3600, "daily";q=10000;w=86400'],
)
def test_a_quota_over_a_long_window_alone_announces_no_pace(policy: str) -> None:
    # `100;w=3600` made each call wait 36 s, or fail unsent past max_retry_after.
    info = parse({"RateLimit-Policy": policy})
    assert info is not None
    assert info.window is not None
    assert info.window > RATE_WINDOW
    assert announced_rate(info) is None


def test_a_window_of_a_minute_is_a_rate_and_a_longer_one_a_quota() -> None:
    assert RATE_WINDOW == 60
    assert announced_rate(RateLimitInfo(limit=120, window=RATE_WINDOW)) == 2
    assert announced_rate(RateLimitInfo(limit=120, window=RATE_WINDOW + 1)) is None
    info = parse({"RateLimit-Policy": f"61;w={RATE_WINDOW + 1:g}, 1000;w=86400"})
    assert info is not None
    assert announced_rate(info) is None


def test_a_dictionary_form_limit_does_not_override_the_policies_windows() -> None:
    # `limit=` names the daily quota (the one with the fewest left); read per second
    # beside the policy's short window it would have been 100,000 a second.
    info = parse({"RateLimit": "limit=100000, remaining=5, reset=3600",
                  "RateLimit-Policy": "100;w=1, 100000;w=86400"})
    assert info is not None
    assert announced_rate(info) == 100


@pytest.mark.parametrize(
    ("headers", "spent_for"),
    [
        pytest.param({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400',
                      "RateLimit": '"burst";r=80;t=1, "daily";r=0;t=3600'},
                     3600, id="structured"),
        pytest.param({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400',
                      "RateLimit": '"daily";r=0;t=3600'},
                     3600, id="structured-only-the-spent-one"),
        pytest.param({"RateLimit-Policy": '"hourly";q=1000;w=3600, "daily";q=9000;w=86400',
                      "RateLimit": '"hourly";r=0;t=100, "daily";r=0;t=3600'},
                     3600, id="structured-the-later-of-two"),
        pytest.param({"RateLimit-Policy": "100;w=3600",
                      "RateLimit": "limit=100, remaining=0, reset=1200"},
                     1200, id="dictionary"),
        pytest.param({"RateLimit-Policy": "100;w=1, 100000;w=86400",
                      "RateLimit": "limit=100000, remaining=0, reset=3600"},
                     3600, id="dictionary-its-limit-names-the-policy"),
        pytest.param({"RateLimit-Policy": "100;w=1, 100000;w=86400",
                      "RateLimit-Remaining": "0", "RateLimit-Reset": "3600"},
                     3600, id="separate-a-reset-no-second-can-have"),
        pytest.param({"RateLimit-Policy": "5000;w=3600", "X-RateLimit-Limit": "5000",
                      "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225600"},
                     42, id="x-ratelimit-with-a-policy"),
    ],
)
def test_a_spent_quota_says_how_long_it_stays_spent(
    headers: dict[str, str], spent_for: float
) -> None:
    info = parse(headers, now=1767225600 - 42.0)
    assert info is not None
    assert info.quota_spent_for == pytest.approx(spent_for)


@pytest.mark.parametrize(
    "headers",
    [
        # the end of each second at full speed: pacing's business, not a pause
        pytest.param({"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=100000;w=86400',
                      "RateLimit": '"burst";r=0;t=1, "daily";r=500;t=3600'}, id="short-r0"),
        pytest.param({"RateLimit-Policy": "100;w=1, 100000;w=86400",
                      "RateLimit": "limit=100, remaining=0, reset=1"}, id="dictionary-short"),
        pytest.param({"RateLimit-Policy": "100;w=1, 100000;w=86400",
                      "RateLimit-Remaining": "0", "RateLimit-Reset": "1"}, id="separate-short"),
        pytest.param({"RateLimit-Policy": '"daily";q=100000;w=86400',
                      "RateLimit": '"daily";r=3;t=3600'}, id="quota-not-spent"),
        pytest.param({"RateLimit-Policy": "100;w=3600", "RateLimit-Remaining": "0"},
                     id="no-reset"),
        # no window stated: read per second, as documented (GitHub's hourly 5,000 too)
        pytest.param({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0",
                      "X-RateLimit-Reset": "3600"}, id="x-ratelimit-no-window"),
    ],
)
def test_nothing_left_of_a_short_window_or_of_an_unknown_one_is_no_spent_quota(
    headers: dict[str, str],
) -> None:
    info = parse(headers)
    assert info is not None
    assert info.quota_spent_for is None


def test_x_ratelimit_without_a_window_is_still_read_per_second() -> None:
    info = parse({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0",
                  "X-RateLimit-Reset": "3600"})
    assert info == RateLimitInfo(limit=5000, window=None, remaining=0, reset=3600)
    assert announced_rate(info) == 5000


def test_the_ietf_fields_win_over_the_x_ones() -> None:
    info = parse({"RateLimit-Policy": "50;w=1", "X-RateLimit-Limit": "5000"})
    assert info is not None
    assert announced_rate(info) == 50


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Limit": "lots"},
        {"X-RateLimit-Limit": "-5"},
        {"X-RateLimit-Limit": "nan"},
        {"RateLimit-Policy": "garbage;;;w=x"},
        {"RateLimit-Policy": '"p";q=0;w=1'},
        {"RateLimit": "limit=abc"},
    ],
)
def test_an_unreadable_value_is_ignored_not_obeyed(headers: dict[str, str]) -> None:
    info = parse(headers)
    assert info is None or announced_rate(info) is None


def test_a_quoted_comma_does_not_split_a_policy() -> None:
    info = parse({"RateLimit-Policy": '"a,b";q=10;w=2'})
    assert info is not None
    assert announced_rate(info) == 5


def test_the_limit_signal_ignores_what_is_left() -> None:
    first = CIMultiDict({"RateLimit-Policy": '"d";q=100;w=1', "RateLimit": '"d";r=50;t=1'})
    later = CIMultiDict({"RateLimit-Policy": '"d";q=100;w=1', "RateLimit": '"d";r=3;t=1'})
    assert limit_signal(first) == limit_signal(later)
    changed = CIMultiDict({"RateLimit-Policy": '"d";q=50;w=1'})
    assert limit_signal(changed) != limit_signal(first)
    # the dictionary form carries its limit in RateLimit itself
    assert limit_signal(CIMultiDict({"RateLimit": "limit=10, remaining=1, reset=1"})) != (
        limit_signal(CIMultiDict({}))
    )
