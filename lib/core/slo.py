"""Latency targets (SLOs), whether requests meet them, and what that makes of a level.

A request is *good* when it completed and meets every target given: TTFT, TPOT and E2E
latency at or under the limit. As in vLLM's goodput, a request with no TPOT (a single
output token) meets a TPOT target trivially. A level *passes* when the share of its
measured requests that are good (its attainment; failed requests count as misses)
reaches the target share, 90% by default.

Shared by the runner's capacity search (lib/load) and the pages (lib/analysis), so the
search and the page that shows it judge a level by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SLO_METRICS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "e2el_ms")
DEFAULT_TARGET = 0.9


@dataclass
class Slo:
    """Per-request latency targets (ms; None = no target) and the share that must meet them."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None
    target: float = DEFAULT_TARGET

    def limits(self) -> dict[str, float]:
        return {m: getattr(self, m) for m in SLO_METRICS if getattr(self, m) is not None}

    def is_empty(self) -> bool:
        return not self.limits()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Slo | None:
        if not data:
            return None
        return cls(**{k: data.get(k) for k in (*SLO_METRICS, "target") if data.get(k) is not None})

    def describe(self) -> str:
        """The targets in words: "TTFT ≤ 500 ms and ≥ 20 tok/s each, for 90% of requests"."""
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT ≤ {self.ttft_ms:g} ms")
        if self.tpot_ms is not None:
            parts.append(f"≥ {1000.0 / self.tpot_ms:.3g} tok/s each (TPOT ≤ {self.tpot_ms:g} ms)")
        if self.e2el_ms is not None:
            parts.append(f"E2E ≤ {self.e2el_ms:g} ms")
        targets = " and ".join(parts) or "no latency target"
        return f"{targets}, for {self.target:.0%} of requests"


def request_meets(rec: Mapping[str, Any], slo: Slo) -> bool:
    """Did this request complete within every target?"""
    if rec.get("error"):
        return False
    for metric, limit in slo.limits().items():
        value = rec.get(metric)
        if value is None:
            if metric == "tpot_ms" and rec.get("ttft_ms") is not None:
                continue  # one output token: no TPOT, as in vLLM
            return False
        if value > limit:
            return False
    return True


def level_slo(
    requests: Sequence[Mapping[str, Any]], duration_s: float | None, slo: Slo
) -> dict[str, Any]:
    """A level judged against the SLO: good requests, attainment, goodput and pass/fail.

    goodput is good requests per second of the level's duration (vLLM's definition).
    """
    total = len(requests)
    good = sum(1 for r in requests if request_meets(r, slo))
    attainment = good / total if total else None
    goodput = good / duration_s if duration_s and duration_s > 0 else None
    return {
        "good": good,
        "total": total,
        "attainment": attainment,
        "goodput": goodput,
        "passed": attainment is not None and attainment >= slo.target - 1e-12,
    }


@dataclass
class CapacityValue:
    """The highest load that met the SLO below the lowest that did not, and how sure."""

    value: float | None
    reason: str  # "found", "ceiling" (even the highest load passed), "none" (nothing passed)
    lowest_failed: float | None
    notes: list[str]


def capacity_value(trials: Iterable[tuple[float | None, bool]]) -> CapacityValue:
    """Capacity from the loads tried and whether each passed (any order).

    A load of None (rate "all at once") is left out: it has no place on the scale.
    A pass above the lowest failing load (noise, or an engine that warmed up) does not
    raise the capacity: the answer is what held below the first miss, and a note says so.
    """
    tried = [(float(x), ok) for x, ok in trials if x is not None]
    failed = [x for x, ok in tried if not ok]
    passed = [x for x, ok in tried if ok]
    lowest_failed = min(failed) if failed else None
    below = [x for x in passed if lowest_failed is None or x < lowest_failed]
    notes = []
    if lowest_failed is not None and any(x > lowest_failed for x in passed):
        above = sorted(x for x in passed if x > lowest_failed)
        notes.append(
            f"{_num(above[0])} passed although {_num(lowest_failed)} did not: "
            "the capacity is what held below the first miss"
        )
    if not below:
        return CapacityValue(None, "none", lowest_failed, notes)
    value = max(below)
    return CapacityValue(
        value, "found" if lowest_failed is not None else "ceiling", lowest_failed, notes
    )


def _num(x: float) -> str:
    return f"{x:g}"
