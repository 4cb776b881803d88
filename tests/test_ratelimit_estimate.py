"""Replaying the server's token bucket from the client's own send log."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiodots.ratelimit_estimate import (
    Phase,
    bucket_level,
    burst_bounds,
    estimate_bucket,
    probe_bracket,
    rate_bounds,
    replay,
    solve_burst,
)


def token_bucket(rate: float, burst: float) -> Callable[[float], bool]:
    """The server: True when a request arriving at `t` is accepted."""
    state = {"t": 0.0, "level": burst}

    def take(t: float) -> bool:
        state["level"] = min(burst, state["level"] + (t - state["t"]) * rate)
        state["t"] = t
        if state["level"] >= 1:
            state["level"] -= 1
            return True
        return False

    return take


def cold_burst_then_slow_start(
    rate: float, burst: float, *, burst_size: int, burst_span: float, start_rate: float,
    pause: float = 1.0, doubling: float = 0.25,
) -> tuple[Phase, Phase]:
    """A job's first two phases: `burst_size` requests at once, a pause, then a rate that
    doubles every `doubling` seconds until the server refuses one."""
    server = token_bucket(rate, burst)
    sends: list[float] = []
    refused = None
    for i in range(burst_size):
        t = i * burst_span / burst_size
        if server(t):
            sends.append(t)
        elif refused is None:
            refused = t
    assert refused is not None
    first = Phase(0.0, refused, [t for t in sends if t < refused])
    start = refused + pause
    t, later = start, list[float]()
    while True:
        t += 1 / (start_rate * 2 ** ((t - start) / doubling))
        if not server(t):
            return first, Phase(start, t, later, rest=start - refused)
        later.append(t)


@pytest.mark.parametrize(
    ("rate", "burst", "burst_size", "start_rate"),
    [(200, 20, 100, 120), (100, 10, 32, 55), (200, 20, 100, 40), (50, 50, 200, 300),
     (1000, 5, 50, 200)],
)
def test_the_rate_is_found_where_counting_is_flattered(
    rate: float, burst: float, burst_size: int, start_rate: float
) -> None:
    first, second = cold_burst_then_slow_start(
        rate, burst, burst_size=burst_size, burst_span=0.01, start_rate=start_rate
    )
    solved = estimate_bucket(first, second)
    assert solved is not None
    found_rate, found_burst = solved
    assert found_rate == pytest.approx(rate, rel=0.03)
    assert found_burst == pytest.approx(burst, abs=1.5)
    # what a count of successes since the pause says instead
    naive = len(second.sends) / (second.refused_at - second.start)
    assert abs(naive - rate) > abs(found_rate - rate)


def test_the_level_at_a_refusal_is_below_one_token() -> None:
    _first, second = cold_burst_then_slow_start(
        100, 10, burst_size=32, burst_span=0.01, start_rate=55
    )
    assert 0 <= bucket_level(second, 100, 10) < 1
    assert bucket_level(second, 150, 10) > 1  # a faster server would not have refused


def test_a_refusal_the_burst_cannot_explain_gives_no_answer() -> None:
    # Refused after one accepted request in a whole second: no positive rate fits
    # a burst of 50.
    phase = Phase(0.0, 1.0, [0.5])
    assert solve_burst(phase, 10.0) >= 1
    assert estimate_bucket(Phase(0.0, 0.01, [0.0]), Phase(2.0, 2.0, [])) is None


@pytest.mark.parametrize(
    ("rate", "burst", "burst_size", "start_rate"),
    [(200, 20, 100, 120), (100, 10, 32, 55), (200, 20, 100, 40), (50, 50, 200, 300),
     (1000, 5, 50, 200)],
)
def test_the_bounds_hold_the_truth_and_the_solution_is_never_above_it(
    rate: float, burst: float, burst_size: int, start_rate: float
) -> None:
    first, second = cold_burst_then_slow_start(
        rate, burst, burst_size=burst_size, burst_span=0.01, start_rate=start_rate
    )
    low, high = burst_bounds(first, rate)
    assert low <= burst <= high
    bounds = rate_bounds(second, burst)
    assert bounds is not None
    assert bounds[0] <= rate <= bounds[1]
    solved = estimate_bucket(first, second)
    assert solved is not None
    assert solved[1] == pytest.approx(burst, abs=0.5)  # whole requests when they fit
    assert 0.97 * rate <= solved[0] <= rate  # below costs a little; above, a pause


def test_a_phase_that_starts_from_an_empty_bucket_allows_for_a_leftover_token() -> None:
    # Without a pause the next phase starts where a refusal found the bucket below one
    # token: 0.6 of one here, which the client cannot know. Then 110/s against 100/s.
    state = {"t": 0.0, "level": 0.6}

    def accepted(t: float) -> bool:
        state["level"] = min(10.0, state["level"] + (t - state["t"]) * 100)
        state["t"] = t
        if state["level"] >= 1:
            state["level"] -= 1
            return True
        return False

    sends = []
    t = 0.0
    while accepted(t := t + 1 / 110):
        sends.append(t)
    phase = Phase(0.0, t, sends, rest=0.0)
    # Counting from an empty bucket, the truth would not have let the first requests
    # through; with up to a token left over it does, and the bounds hold it.
    assert replay(phase, 100, 10.0)[0] < 1 <= replay(phase, 100, 10.0, 1.0)[0]
    bounds = rate_bounds(phase, 10.0)
    assert bounds is not None
    assert bounds[0] <= 100 <= bounds[1]


def test_a_probe_started_above_the_rate_says_where_to_start_again() -> None:
    # 20/s with a burst of 10, probed from 100/s: refused once the burst and a token of
    # refill are spent, a tenth of a second in. Nothing closer than a factor of two is
    # said of the rate, but what is said holds it, and so does where to start again.
    first, second = cold_burst_then_slow_start(
        20, 10, burst_size=32, burst_span=0.01, start_rate=100
    )
    assert estimate_bucket(first, second) is None
    begin, top = probe_bracket(first, second, 100.0)
    assert begin <= 20 <= top <= 100
    assert begin >= top / 2


def test_a_solution_looser_than_asked_for_is_none() -> None:
    # Probed from 50/s, a fifth of a second before the refusal: the rates that explain
    # it are 25% apart, and their lower end 16% under the truth.
    first, second = cold_burst_then_slow_start(
        20, 10, burst_size=32, burst_span=0.01, start_rate=50
    )
    solved = estimate_bucket(first, second)
    assert solved is not None
    assert solved[0] < 0.9 * 20
    assert estimate_bucket(first, second, within=1.1) is None
    begin, top = probe_bracket(first, second, 50.0)
    assert begin <= 20 <= top
