"""The server's token bucket, found again from the client's own send log.

Pure functions, no I/O. A server that limits with a token bucket (rate R, burst B)
refuses a request exactly when its bucket is empty. Between two 429s the client knows
when it sent each request the server accepted and when it sent the one refused, and
so where the bucket must have stood: full at the start of a phase (after an idle start
or a pause long enough to refill), and empty at the refusal. Each phase is one equation
in R and B; two phases (the first 429 of a job and the next one) give both.

Counting accepted responses over a window is the naive way, and it is flattered by the
bucket: a window after a pause includes the B requests the refilled bucket let through
on top of the rate (B/window of overestimate, 10% at B = R/10 over one second). The
replay here charges those to B instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["Phase", "bucket_level", "estimate_bucket", "solve_burst", "solve_rate"]

_ITERATIONS = 40  # bisection steps: far below a request's worth of precision
_MAX_RATE = 1e6  # requests/s beyond which a solution is nonsense
_ROUNDS = 8  # alternations between the burst and the rate; they settle in 3 or 4


@attrs.frozen
class Phase:
    """One stretch of sending that ended in a refusal.

    `sends`: when each request the server accepted was sent (sorted, all in
    [start, refused_at)); `refused_at`: when the first refused one was sent;
    `rest`: seconds the bucket had to refill before `start` (None: it started full).
    """

    start: float
    refused_at: float
    sends: Sequence[float]
    rest: float | None = None


def bucket_level(phase: Phase, rate: float, burst: float) -> float:
    """Tokens left in a (rate, burst) bucket when the refused request arrived, had the
    server seen the accepted requests at the moments they were sent."""
    level = burst if phase.rest is None else min(burst, phase.rest * rate)
    t = phase.start
    for sent in phase.sends:
        level = min(burst, level + (sent - t) * rate) - 1.0
        t = sent
    return min(burst, level + (phase.refused_at - t) * rate)


# The refused request found less than one token, every accepted one at least one: the
# level at the refusal lies in [0, 1). Aim for its middle.
_TARGET = 0.5


def solve_burst(phase: Phase, rate: float) -> float:
    """The burst that empties the bucket exactly at the phase's refusal, at `rate`."""
    low, high = 1.0, float(len(phase.sends)) + 1.0
    if bucket_level(phase, rate, high) <= _TARGET:
        return high
    for _ in range(_ITERATIONS):
        mid = (low + high) / 2
        if bucket_level(phase, rate, mid) < _TARGET:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def solve_rate(phase: Phase, burst: float) -> float | None:
    """The rate that empties a bucket of `burst` exactly at the phase's refusal; None
    when no rate does (the phase is too short to say, or the burst alone explains it)."""
    span = phase.refused_at - phase.start
    if span <= 0:
        return None
    low, high = 0.0, (len(phase.sends) + 1.0) / span
    if bucket_level(phase, low, burst) >= _TARGET:
        return None  # the burst alone would have let the whole phase through
    # Sending below the rate wastes refill (the bucket is full): the rate that explains
    # the refusal can be well above the phase's average.
    while bucket_level(phase, high, burst) < _TARGET:
        high *= 2
        if high > _MAX_RATE:
            return None
    for _ in range(_ITERATIONS):
        mid = (low + high) / 2
        if bucket_level(phase, mid, burst) < _TARGET:
            low = mid
        else:
            high = mid
    rate = (low + high) / 2
    return rate if rate > 0 else None


def estimate_bucket(first: Phase, last: Phase) -> tuple[float, float] | None:
    """(rate, burst) consistent with both phases: the burst from the first (which began
    with a full bucket), the rate from the last; alternated until they agree. None when
    the phases cannot say."""
    span = last.refused_at - last.start
    if span <= 0 or not last.sends:
        return None
    rate: float | None = len(last.sends) / span
    burst = 1.0
    for _ in range(_ROUNDS):
        assert rate is not None
        burst = solve_burst(first, rate)
        rate = solve_rate(last, burst)
        if rate is None:
            return None
    assert rate is not None
    return rate, burst
