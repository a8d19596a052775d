"""The capacity search's next step: which load to try after the ones tried so far.

Double from `start` until a level misses the SLO (or the ceiling `max` is reached),
then bisect between the highest load that passed and the lowest that failed until they
are `step` apart. Pure: the runner measures each load and feeds back whether it passed
(lib.core.slo judges a level); the pages compute the capacity from the same trials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lib.core.load_pattern import CONCURRENCY, CapacitySearch
from lib.core.metrics import level_summary
from lib.core.slo import Slo, level_slo


def next_load(spec: CapacitySearch, trials: list[tuple[float, bool]]) -> float | None:
    """The next load to measure, or None when the search is over."""
    if not trials:
        return _fit(spec, spec.start)
    tried = {x for x, _ in trials}
    failed = [x for x, ok in trials if not ok]
    passed = [x for x, ok in trials if ok]
    if not failed:
        highest = max(passed)
        if highest >= spec.max:
            return None  # the ceiling passed: the capacity is at least `max`
        return _fit(spec, min(highest * 2, spec.max))
    hi = min(failed)
    below = [x for x in passed if x < hi]
    if not below:
        return None  # even the first load missed the SLO
    lo = max(below)
    if spec.mode == CONCURRENCY:
        if hi - lo <= spec.step():
            return None
        mid = float((int(lo) + int(hi)) // 2)
    else:
        if hi - lo <= spec.step() * lo:
            return None
        mid = float(f"{(lo + hi) / 2:.3g}")
    return None if mid in tried or not lo < mid < hi else mid


def _fit(spec: CapacitySearch, load: float) -> float:
    return float(max(1, round(load))) if spec.mode == CONCURRENCY else load


async def search(
    spec: CapacitySearch,
    slo: Slo,
    measure: Callable[[float], Awaitable[list[dict[str, Any]]]],
    on_step: Callable[[float, dict[str, Any]], None],
    stopped: Callable[[], bool],
) -> list[tuple[float, bool]]:
    """Measure load after load (`measure` returns the level's request records) until
    next_load has nothing more to try; returns the trials in the order they ran."""
    trials: list[tuple[float, bool]] = []
    while not stopped():
        load = next_load(spec, trials)
        if load is None:
            break
        records = await measure(load)
        # The level's duration as every page and report measures it (first send to last end).
        judged = level_slo(records, level_summary(records)["duration_s"], slo)
        trials.append((load, judged["passed"]))
        on_step(load, judged)
    return trials
