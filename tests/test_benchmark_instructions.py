"""`python -m benchmarks.instructions` compares a client with raw aiohttp in one regime of
the garbage collector, not across two."""

from __future__ import annotations

import pytest

from benchmarks.instructions import Round, same_regime_ratio


def test_each_round_is_set_against_the_raw_round_in_its_regime() -> None:
    # uvloop's two regimes: few young collections, or about three times as many, each
    # costing raw aiohttp and aiodots alike 35k instructions more per request.
    raws = [Round(430_000, 4.0), Round(465_000, 14.5), Round(462_000, 14.0)]
    mine = [Round(506_000, 15.0), Round(464_000, 5.0), Round(502_000, 14.5)]
    # Against the raw median (462k) the middle round alone reads 1.00x and the median
    # 1.09x; by regime every round reads about 1.08x.
    assert same_regime_ratio(mine, raws) == pytest.approx(502_000 / 465_000)
    assert same_regime_ratio([Round(464_000, 5.0)], raws) == pytest.approx(464_000 / 430_000)


def test_one_regime_gives_the_plain_ratio() -> None:
    raws = [Round(514_000, 14.5)]
    assert same_regime_ratio([Round(529_000, 14.5), Round(530_000, 14.5)], raws) == (
        pytest.approx(529_500 / 514_000)
    )
