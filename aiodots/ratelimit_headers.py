"""What a server says about its own rate limit, read from response headers.

Pure functions, no I/O and no clock of their own (the gidgethub way: decisions a test
can make from a dict). Three families are read:

- `X-RateLimit-Limit` / `X-RateLimit-Remaining` / `X-RateLimit-Reset` (GitHub and many
  others). No window is stated: the limit is read as requests per second, and a reset
  that is a Unix time (GitHub's, or in milliseconds) is turned into seconds from `now`.
- The IETF draft's separate fields `RateLimit-Limit` / `RateLimit-Remaining` /
  `RateLimit-Reset`, and its dictionary form `RateLimit: limit=100, remaining=50,
  reset=1` with `RateLimit-Policy: 100;w=1`.
- The draft's newer structured form: `RateLimit-Policy: "default";q=100;w=1` and
  `RateLimit: "default";r=50;t=1`.

A policy whose window is at most `RATE_WINDOW` (a minute) is a rate, and the tightest
such policy is the pace the server announces (`announced_rate`). A policy over a longer
window is a quota (`"daily";q=100000;w=86400`): it never sets the pace, which its
average would make far too slow; while a policy lists a window, that is what its limit
is read over, whatever `limit=` or `RateLimit-Limit` say beside it. What such a
quota says when it has nothing left is `RateLimitInfo.quota_spent_for`: the limiter
holds calls that long after a 429 that says it (`AdaptiveRateLimiter.on_spent_quota`).

A value that cannot be read is ignored, never obeyed: a malformed header must not stop a
client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

__all__ = [
    "RATE_WINDOW",
    "SIGNAL_HEADERS",
    "RateLimitInfo",
    "announced_rate",
    "limit_signal",
    "parse_rate_limit_headers",
]

#: The headers that state a limit (as opposed to what is left of it): a reader can skip
#: parsing while their values stay the same. (`RateLimit` states one only in its
#: dictionary form, `limit=...`, and only when no policy is sent; see `limit_signal`.)
SIGNAL_HEADERS = ("RateLimit-Policy", "RateLimit-Limit", "X-RateLimit-Limit")


def limit_signal(headers: Mapping[str, str]) -> tuple[str | None, ...]:
    """What a response says of the limit itself: the same tuple from two responses means
    the same announced limit, whatever their `remaining` counts."""
    signal = tuple(headers.get(name) for name in SIGNAL_HEADERS)
    if signal == _NOTHING:
        return (None, None, None, headers.get("RateLimit"))
    return signal


_NOTHING = (None,) * len(SIGNAL_HEADERS)

#: The longest window (seconds) a policy may have and still set the client's pace: a
#: minute. Paced at a window's average, a client gives up the burst the server allows
#: at the window's start, and so finishes at most one window later than it could: a
#: minute at most, no longer than a call waits for a Retry-After by default
#: (`RetryPolicy.max_retry_after`, 60 s). Per second and per minute are also how
#: servers state a rate. A longer window (an hour, a day) is a quota, whose average is
#: no pace at all: 100,000 a day, beside 100 a second, would space calls 0.86 s apart
#: where the server takes a hundred a second until the day's quota is spent.
RATE_WINDOW = 60.0

# A reset larger than this is a Unix time, not a number of seconds (a day is 86,400 s).
_EPOCH_THRESHOLD = 1_000_000_000
# And larger than this, a Unix time in milliseconds (as seconds, the year 5138).
_EPOCH_MS_THRESHOLD = 100_000_000_000


@attrs.frozen
class RateLimitInfo:
    """The limit as announced. `limit` requests per `window` seconds (`window` None when
    the server does not say), `remaining` of them left, and `reset` seconds until the
    quota is whole again.

    Where `RateLimit-Policy` lists several policies, `limit` and `window` are the
    tightest rate among those of a window up to `RATE_WINDOW`, or, where every window is
    longer, the tightest quota (`announced_rate` is then None); `remaining` and `reset`
    are those of the policy with the fewest left.

    `quota_spent_for`: where a quota (a policy over a window longer than `RATE_WINDOW`)
    has nothing left, the seconds until its reset; else None. Nothing left of a rate's
    window (the end of each second at full speed) is pacing's business, never this."""

    limit: float | None = None
    window: float | None = None
    remaining: float | None = None
    reset: float | None = None
    quota_spent_for: float | None = None


def announced_rate(info: RateLimitInfo) -> float | None:
    """The sustained requests per second the server allows, or None if it did not say.

    A limit without a window is taken per second, the usual reading of
    `X-RateLimit-Limit` when nothing else is stated. A limit over a window longer than
    `RATE_WINDOW` is a quota, not a rate: None."""
    if info.limit is None or info.limit <= 0:
        return None
    if info.window is not None and info.window > RATE_WINDOW:
        return None
    window = info.window if info.window is not None and info.window > 0 else 1.0
    return info.limit / window


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitInfo | None:
    """The announced limit from one response's headers, or None when there is none.

    `headers` is case-insensitive as aiohttp gives it (a plain dict must use the
    canonical spelling); `now` (Unix seconds) converts a reset given as a Unix time.
    The IETF fields win over the `X-` ones when both are present. The limit and its
    window are `RateLimit-Policy`'s where it lists one (see `RateLimitInfo`); a limit
    stated alone (`limit=`, `RateLimit-Limit`, `X-RateLimit-Limit`) has no window.
    """
    policies = _parse_policies(headers.get("RateLimit-Policy"))
    policy = _pace(policies)
    current, counts = _parse_ratelimit_field(headers.get("RateLimit"))
    stated = _first(
        current.get("limit"),
        _number(headers.get("RateLimit-Limit")), _number(headers.get("X-RateLimit-Limit")),
    )
    limit: float | None
    window: float | None
    if policy is not None:
        limit, window = policy.quota, policy.window
    else:
        limit, window = stated, None
    remaining = _first(
        current.get("remaining"),
        _number(headers.get("RateLimit-Remaining")),
        _number(headers.get("X-RateLimit-Remaining")),
    )
    reset = _seconds(_first(
        current.get("reset"),
        _number(headers.get("RateLimit-Reset")),
        _number(headers.get("X-RateLimit-Reset")),
    ), now)
    if limit is None and remaining is None and reset is None:
        return None
    spent = _quota_spent_for(policies, counts, stated, remaining, reset, now)
    return RateLimitInfo(
        limit=limit, window=window, remaining=remaining, reset=reset, quota_spent_for=spent
    )


def _seconds(reset: float | None, now: float | None) -> float | None:
    """A reset as seconds from `now`: a Unix time (in seconds or milliseconds) is turned
    into one, or dropped without a `now` to compare with."""
    if reset is not None and reset > _EPOCH_THRESHOLD:
        if reset > _EPOCH_MS_THRESHOLD:
            reset /= 1000
        return None if now is None else max(0.0, reset - now)
    return reset


def _quota_spent_for(
    policies: list[_Policy], counts: list[_Count], stated: float | None,
    remaining: float | None, reset: float | None, now: float | None,
) -> float | None:
    """`RateLimitInfo.quota_spent_for`. The structured form names the policy of each
    count. The other forms state one count, of the policy closest to running out: it is
    a quota's where the limit stated with it is that quota's (`limit=100000` beside
    `100000;w=86400`), or, where no policy has that limit (or none is stated), where its
    reset comes later than any rate's window listed could end (`100;w=1,
    100000;w=86400` with a reset an hour away)."""
    quotas = [policy for policy in policies if policy.is_quota]
    if not quotas:
        return None
    if counts:
        names = {policy.name for policy in quotas}
        waits = [
            _seconds(count.reset, now) for count in counts
            if count.name in names and count.remaining == 0
        ]
        return max((wait for wait in waits if wait), default=None)
    if remaining != 0 or not reset:
        return None
    owners = [policy for policy in policies if policy.quota == stated]
    if owners:
        return reset if all(policy.is_quota for policy in owners) else None
    longest_rate = max(
        (policy.window or 1.0 for policy in policies if not policy.is_quota), default=0.0
    )
    return reset if reset > longest_rate else None


def _first(*values: float | None) -> float | None:
    for value in values:
        if value is not None:
            return value
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _split_items(text: str) -> list[str]:
    """Split a structured-field list on commas outside quoted strings."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _params(item: str) -> tuple[str, dict[str, str]]:
    """`"name";q=100;w=1` -> ('"name"', {'q': '100', 'w': '1'})."""
    head, *rest = item.split(";")
    params = {}
    for part in rest:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return head.strip(), params


@attrs.frozen
class _Policy:
    """One policy of `RateLimit-Policy`: `quota` requests per `window` seconds (None:
    not said, read per second); `name`, the structured form's, without its quotes."""

    name: str | None
    quota: float
    window: float | None

    @property
    def per_second(self) -> float:
        return self.quota / (self.window or 1.0)

    @property
    def is_quota(self) -> bool:
        """Whether its window is too long for a pace (see `RATE_WINDOW`)."""
        return self.window is not None and self.window > RATE_WINDOW


def _parse_policies(text: str | None) -> list[_Policy]:
    """`RateLimit-Policy`: every policy listed that can be read.

    Old form: `100;w=1` (the bare number is the quota); new form: `"name";q=100;w=1`."""
    if not text:
        return []
    policies = []
    for item in _split_items(text):
        head, params = _params(item)
        quota = _number(params.get("q")) if "q" in params else _number(head)
        window = _number(params.get("w"))
        if quota is None or quota <= 0:
            continue
        name = head.strip('"') if "q" in params else None
        policies.append(_Policy(name, quota, window if window is not None and window > 0 else None))
    return policies


def _pace(policies: list[_Policy]) -> _Policy | None:
    """The policy that sets the pace: the tightest of those of a rate's window; where
    there is none, the tightest quota (which `announced_rate` then declines)."""
    rates = [policy for policy in policies if not policy.is_quota]
    return min(rates or policies, key=lambda policy: policy.per_second, default=None)


@attrs.frozen
class _Count:
    """One item of the structured `RateLimit`: what is left of the policy `name`."""

    name: str
    remaining: float
    reset: float | None


def _parse_ratelimit_field(text: str | None) -> tuple[dict[str, float], list[_Count]]:
    """`RateLimit`: `limit=100, remaining=50, reset=1` (dictionary form) or
    `"name";r=50;t=1` (one item per policy: each, and the fewest remaining as the
    values)."""
    if not text:
        return {}, []
    items = _split_items(text)
    if all("=" in item and ";" not in item for item in items):
        values: dict[str, float] = {}
        for item in items:
            key, _, raw = item.partition("=")
            number = _number(raw.strip().strip('"'))
            name = key.strip().lower()
            if number is not None and name in ("limit", "remaining", "reset"):
                values[name] = number
        return values, []
    counts: list[_Count] = []
    found: dict[str, float] = {}
    for item in items:
        head, params = _params(item)
        remaining, reset = _number(params.get("r")), _number(params.get("t"))
        if remaining is None:
            continue
        counts.append(_Count(head.strip('"'), remaining, reset))
        if "remaining" not in found or remaining < found["remaining"]:
            found = {"remaining": remaining}
            if reset is not None:
                found["reset"] = reset
    return found, counts
