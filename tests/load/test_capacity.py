"""The capacity search's steps, the open-loop schedule and SLO judgements, as pure functions."""

from __future__ import annotations

import itertools
import statistics

import pytest

from lib.core.load_pattern import CapacitySearch, LoadPattern, level_label
from lib.core.slo import Slo, capacity_value, level_slo, request_meets
from lib.load.arrivals import arrival_offsets
from lib.load.capacity import next_load


def _search(spec: CapacitySearch, limit: float) -> list[float]:
    """Run next_load against a lane that passes every load up to `limit`."""
    trials: list[tuple[float, bool]] = []
    while (load := next_load(spec, trials)) is not None:
        trials.append((load, load <= limit))
    return [x for x, _ in trials]


def test_doubles_then_bisects_to_the_exact_number_of_users():
    spec = CapacitySearch(mode="concurrency", start=1, max=64)
    assert _search(spec, 5) == [1, 2, 4, 8, 6, 5]
    assert _search(spec, 12) == [1, 2, 4, 8, 16, 12, 14, 13]
    assert _search(spec, 1) == [1, 2]
    assert _search(spec, 0) == [1]  # even one user misses: nothing more to try
    for limit in range(1, 40):
        tried = _search(spec, limit)
        assert capacity_value((x, x <= limit) for x in tried).value == limit


def test_stops_at_the_ceiling():
    spec = CapacitySearch(mode="concurrency", start=1, max=6)
    assert _search(spec, 100) == [1, 2, 4, 6]
    found = capacity_value((x, True) for x in [1, 2, 4, 6])
    assert (found.value, found.reason) == (6, "ceiling")


def test_rates_bisect_to_a_tenth():
    spec = CapacitySearch(mode="rate", start=0.5, max=64)
    tried = _search(spec, 3.3)
    assert tried[:5] == [0.5, 1.0, 2.0, 4.0, 3.0]
    found = capacity_value((x, x <= 3.3) for x in tried).value
    assert found is not None and 3.0 <= found <= 3.3
    lo = max(x for x in tried if x <= 3.3)
    hi = min(x for x in tried if x > 3.3)
    assert hi - lo <= 0.1 * lo


def test_capacity_ignores_a_lucky_pass_above_a_miss():
    found = capacity_value([(1, True), (2, True), (4, False), (8, True), (None, False)])
    assert found.value == 2 and found.lowest_failed == 4
    assert found.notes == [
        "8 passed although 4 did not: the capacity is what held below the first miss"
    ]
    assert capacity_value([(1, False)]).value is None


def test_slo_judgement():
    slo = Slo(ttft_ms=500, tpot_ms=50, target=0.75)
    good = {"ttft_ms": 400, "tpot_ms": 40, "e2el_ms": 900}
    assert request_meets(good, slo)
    assert request_meets({"ttft_ms": 400, "tpot_ms": None}, slo)  # one token: no TPOT
    assert not request_meets({**good, "ttft_ms": 501}, slo)
    assert not request_meets({**good, "error": "timed out"}, slo)
    judged = level_slo([good, good, good, {**good, "tpot_ms": 60}], 2.0, slo)
    assert judged == {"good": 3, "total": 4, "attainment": 0.75, "goodput": 1.5, "passed": True}
    assert not level_slo([], None, slo)["passed"]
    assert slo.describe() == "TTFT ≤ 500 ms and ≥ 20 tok/s each (TPOT ≤ 50 ms), for 75% of requests"


def test_poisson_and_constant_schedules():
    poisson = LoadPattern(mode="rate").level_load(10.0)
    offsets = arrival_offsets(2001, poisson, seed=7, level_key=1)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert offsets[0] == 0.0
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.08)
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.stdev(gaps) == pytest.approx(0.1, rel=0.1)
    assert arrival_offsets(2001, poisson, seed=7, level_key=1) == offsets  # same seed, same
    assert arrival_offsets(2001, poisson, seed=8, level_key=1) != offsets
    even = {**poisson, "burstiness": 4.0}
    even_gaps = [b - a for a, b in itertools.pairwise(arrival_offsets(2001, even, 7, 1))]
    assert statistics.stdev(even_gaps) == pytest.approx(0.05, rel=0.12)  # CV = 1/sqrt(4)
    constant = {**poisson, "arrival": "constant"}
    assert arrival_offsets(4, constant, 7, 1) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert arrival_offsets(3, LoadPattern(mode="rate").level_load(None), 7, 1) == [0.0] * 3


def test_linear_ramp_speeds_up():
    ramp = {**LoadPattern(mode="rate", arrival="constant", ramp_from=1.0).level_load(9.0)}
    offsets = arrival_offsets(5, ramp, 7, 1)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert gaps == pytest.approx([1 / 3, 1 / 5, 1 / 7, 1 / 9])


def test_level_labels():
    assert level_label(None, 4) == "c=4"
    load = LoadPattern(mode="rate", max_concurrency=8).level_load(2.5)
    assert level_label(load, 1) == "2.5 req/s (≤8 in flight)"
    assert level_label(LoadPattern(mode="rate").level_load(None), 2) == "all at once"
