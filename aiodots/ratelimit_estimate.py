"""The server's token bucket, found again from the client's own send log.

Pure functions, no I/O. A server that limits with a token bucket (rate R, burst B)
refuses a request exactly when its bucket holds less than one token. Between two 429s
the client knows when it sent each request the server accepted and when it sent the one
refused, and so where the bucket must have stood: full at the start of a phase (after
an idle start or a pause long enough to refill), at least one token for every accepted
request, less than one for the refused. Each phase so bounds (R, B) from both sides;
two phases (the first 429 of a job and the next one) pin both down.

Counting accepted responses over a window is the naive way, and it is flattered by the
bucket: a window after a pause includes the B requests the refilled bucket let through
on top of the rate (B/window of overestimate, 10% at B = R/10 over one second). The
replay here charges those to B instead.

Why bounds and not one equation: the refused request is the first to find the bucket
below one token, so the level it found lies between what the request before it left
behind and one token, not anywhere in [0, 1). Aiming for the middle of [0, 1) (the
first version) solved the rate 1-3% low in traced runs; the bounds hold the truth in
every traced run, an interval about 1% of the rate wide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

__all__ = [
    "UNSAID", "Phase", "bucket_level", "burst_bounds", "estimate_bucket", "probe_bracket",
    "rate_bounds", "replay", "solve_burst",
]

# Bisection steps: 2**-24 of the range is far below a request's worth of precision. The
# solve runs when a pause ends, holding up the first request after it: fewer steps
# and rounds make it a few milliseconds for a log of a hundred sends.
_ITERATIONS = 24
_MAX_RATE = 1e6  # requests/s beyond which a solution is nonsense
#: Rates wider apart than this in a phase's bounds mean the phase did not say the rate
#: (traced phases that did: 1-5% apart).
UNSAID = 1.5
_ROUNDS = 6  # most alternations between the burst and the rate; they settle in 2 or 3
#: Where in the interval of rates that explain the log the estimate is taken (0: its
#: lower end). An estimate above the server's rate drains its bucket and, with
#: Retry-After, costs a third pause; one below it costs that share of the rate for the
#: rest of the job. The lower end is the truth only when the tightest accepted request
#: was sent exactly at the limit, yet it is taken: in traced runs (100/s and 200/s,
#: bursts 10 and 20) the interval was 1-2% of the rate wide and held the truth, and a
#: third pause costs more than the share below the rate.
RATE_POSITION = 0.0


@attrs.frozen
class Phase:
    """One stretch of sending that ended in a refusal.

    `sends`: when each request the server accepted was sent (sorted, all in
    [start, refused_at)); `refused_at`: when the first refused one was sent;
    `rest`: seconds the bucket had to refill before `start` since it was last seen
    empty (None: it started full). "Empty" is below one token, so a bucket that started
    from `rest` may have held up to a token more: the bounds allow for it.
    """

    start: float
    refused_at: float
    sends: Sequence[float]
    rest: float | None = None


def replay(
    phase: Phase, rate: float, burst: float, leftover: float = 0.0
) -> tuple[float, float]:
    """Replay a (rate, burst) bucket over the phase, as if the server had seen each
    request when it was sent: (the fewest tokens any accepted request found, the tokens
    the refused one found). The phase fits the bucket when the first is at least one
    and the second below one. Both grow with `rate` and with `burst`. `leftover`: the
    tokens a phase that starts from an empty bucket is taken to have started with."""
    level = burst if phase.rest is None else min(burst, leftover + phase.rest * rate)
    t = phase.start
    lowest = math.inf
    # Comparisons, not min(): this loop runs about 150 times over the whole phase per
    # solve, on the event loop, and the two calls per send measured half its time.
    for sent in phase.sends:
        level += (sent - t) * rate
        if level > burst:
            level = burst
        if level < lowest:
            lowest = level
        level -= 1.0
        t = sent
    return lowest, min(burst, level + (phase.refused_at - t) * rate)


def bucket_level(phase: Phase, rate: float, burst: float) -> float:
    """Tokens left in a (rate, burst) bucket when the refused request arrived."""
    return replay(phase, rate, burst)[1]


# A bucket last seen empty held less than a token: the least rate (or burst) that lets
# every accepted request through is the least with any such leftover, up to one; the
# least that would have let the refused one through, the least with none.
_LEFTOVER = 1.0


def _threshold(found: Callable[[float], float], low: float, high: float) -> float:
    """The least x in [low, high] where the increasing `found(x)` reaches one token."""
    if found(low) >= 1:
        return low
    if found(high) < 1:
        return high
    for _ in range(_ITERATIONS):
        mid = (low + high) / 2
        if found(mid) < 1:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def burst_bounds(phase: Phase, rate: float) -> tuple[float, float]:
    """The bursts that fit the phase at `rate`: (least that lets every accepted request
    through, least that would have let the refused one through too)."""
    top = len(phase.sends) + 2.0
    return (
        _threshold(lambda b: replay(phase, rate, b, _LEFTOVER)[0], 1.0, top),
        _threshold(lambda b: replay(phase, rate, b)[1], 1.0, top),
    )


def solve_burst(phase: Phase, rate: float) -> float:
    """The server's burst from a phase that began with its bucket full, at `rate`.

    Bursts are configured as whole requests: when a whole number fits the phase, it is
    the answer (the bounds are one token apart, so there is at most one or two);
    otherwise (timer jitter moved a send) the middle of the bounds."""
    low, high = burst_bounds(phase, rate)
    whole = math.ceil(low - 1e-9)
    return float(whole) if whole <= high else (low + high) / 2


def rate_bounds(phase: Phase, burst: float) -> tuple[float, float] | None:
    """The rates that fit the phase with `burst`: (least that lets every accepted request
    through, least that would have let the refused one through too); None when no rate
    does (the burst alone would have let the refused request through)."""
    if phase.refused_at <= phase.start or replay(phase, 0.0, burst)[1] >= 1:
        return None
    high = (len(phase.sends) + 1.0) / (phase.refused_at - phase.start)
    # Sending below the rate wastes refill (the bucket is full): the rate that explains
    # the refusal can be well above the phase's average.
    while replay(phase, high, burst)[1] < 1:
        high *= 2
        if high > _MAX_RATE:
            return None
    return (
        _threshold(lambda r: replay(phase, r, burst, _LEFTOVER)[0], 0.0, high),
        _threshold(lambda r: replay(phase, r, burst)[1], 0.0, high),
    )


def solve_rate(phase: Phase, burst: float, within: float = UNSAID) -> float | None:
    """The server's rate from a phase, given its burst (see `RATE_POSITION`); None when
    the rates that explain it are more than `within` times apart."""
    bounds = rate_bounds(phase, burst)
    if bounds is None:
        return None
    low, high = bounds
    if high > within * low:
        # The bucket was still (nearly) full when the refusal came, as when a refusal
        # is brought about before the sending reached the rate: all the log says is
        # that the rate is above what was sent.
        return None
    # Jitter can cross the bounds (a send that left late): then the refusal, which is
    # what a third pause would repeat, decides.
    rate = low + RATE_POSITION * (high - low) if low <= high else high
    return rate if rate > 0 else None


def estimate_bucket(
    first: Phase, last: Phase, within: float = UNSAID
) -> tuple[float, float] | None:
    """(rate, burst) consistent with both phases: the burst from the first (which began
    with a full bucket), the rate from the last; alternated until they agree. None when
    the phases cannot say, or say the rate only more loosely than `within` (the ratio
    of the most to the least rate that explains the last phase)."""
    span = last.refused_at - last.start
    if span <= 0 or not last.sends:
        return None
    rate: float | None = len(last.sends) / span
    burst = 0.0
    for _ in range(_ROUNDS):
        assert rate is not None
        previous, burst = burst, solve_burst(first, rate)
        if burst == previous:
            break  # the same burst gives the same rate
        rate = solve_rate(last, burst, within)
        if rate is None:
            return None
    assert rate is not None
    return rate, burst


def probe_bracket(first: Phase, last: Phase, rate: float) -> tuple[float, float]:
    """Where to probe again after a last phase whose refusal was the server's own but
    too soon to say its rate closely (`estimate_bucket` gave None): (a rate under the
    server's to start from, the most the phase allows). `rate`: what that phase was
    sent at, at most.

    The least rate that explains the phase is under the server's, but can be far under
    it (or nothing) when the phase refilled the bucket by a token or two; a probe's ramp
    from there wastes its time, so it starts no lower than half the most the phase
    allows (if the server's rate is lower still, the next refusal comes as soon, and
    says so again)."""
    bounds = rate_bounds(last, solve_burst(first, rate))
    low, high = bounds if bounds is not None else (0.0, rate)
    top = min(high, rate)
    return max(low, top / 2), top
