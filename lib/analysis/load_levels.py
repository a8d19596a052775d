"""What load each level put on its lane, and how each level and lane fare against an SLO.

`load_fields` describes a level's load from its store row and its requests: the mode
(closed-loop concurrency or open-loop rate), the number the charts put on their x axis
(`load`: users at once, or requested req/s), the rate actually achieved, the most
requests seen in flight, and for open-loop levels how late requests went out against
their schedule. `judge` adds to a run document each level's SLO verdict (attainment,
goodput) and each lane's capacity; the Results page calls it again with the SLO from
its sliders, so changing a target recomputes from the stored requests without a run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from lib.core.load_pattern import CONCURRENCY, RATE, level_label
from lib.core.metrics import distribution
from lib.core.slo import Slo, capacity_value, level_slo


def load_fields(
    key: int, load: Mapping[str, Any] | None, recs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The level's load, as the run document gives it beside its figures."""
    sends = sorted(r["t_send"] for r in recs if r.get("t_send") is not None)
    achieved = (
        (len(sends) - 1) / (sends[-1] - sends[0])
        if len(sends) > 1 and sends[-1] > sends[0]
        else None
    )
    out: dict[str, Any] = {
        "load_mode": RATE if load and load.get("mode") == RATE else CONCURRENCY,
        "load_label": level_label(dict(load) if load else None, key),
        "achieved_rate": achieved,
        "peak_concurrency": _peak_in_flight(recs),
    }
    if out["load_mode"] == RATE:
        assert load is not None
        out["load"] = load.get("rate")
        out["rate"] = load.get("rate")
        out["arrival"] = load.get("arrival")
        out["burstiness"] = load.get("burstiness")
        out["max_concurrency"] = load.get("max_concurrency")
        out["schedule_lag_ms"] = distribution(
            (r["t_send"] - r["t_scheduled"]) * 1000.0
            for r in recs
            if r.get("t_scheduled") is not None and r.get("t_send") is not None
        )
    else:
        out["load"] = key
    return out


def _peak_in_flight(recs: Sequence[Mapping[str, Any]]) -> int | None:
    events = []
    for r in recs:
        if r.get("t_send") is not None and r.get("t_done") is not None:
            events += [(r["t_send"], 1), (r["t_done"], -1)]
    if not events:
        return None
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def judge(
    document: Mapping[str, Any], slo: Slo | None, search_mode: str | None = None
) -> dict[str, Any]:
    """A copy of the run document with `slo` on each level and `capacity` on each lane.

    With no SLO (or one with no target) the levels and lanes carry none.
    """
    doc = copy.copy(dict(document))
    doc["lanes"] = []
    doc["slo"] = None if slo is None or slo.is_empty() else {**slo.limits(), "target": slo.target}
    for lane in document.get("lanes", []):
        lane = dict(lane)
        levels = [dict(lv) for lv in lane.get("levels", [])]
        if doc["slo"] is None:
            for lv in levels:
                lv.pop("slo", None)
            lane.pop("capacity", None)
        else:
            assert slo is not None
            for lv in levels:
                lv["slo"] = level_slo(lv.get("requests") or [], lv.get("duration_s"), slo)
            lane["capacity"] = lane_capacity(levels, slo, search_mode)
        lane["levels"] = levels
        doc["lanes"].append(lane)
    return doc


def lane_capacity(
    levels: Sequence[Mapping[str, Any]], slo: Slo, search_mode: str | None
) -> dict[str, Any]:
    """The highest load that met the SLO below the lowest that did not (lib.core.slo)."""
    measured = [lv for lv in levels if lv.get("slo") and lv["slo"]["total"]]
    mode = search_mode or (measured[0]["load_mode"] if measured else CONCURRENCY)
    found = capacity_value((lv.get("load"), lv["slo"]["passed"]) for lv in measured)
    notes = list(found.notes)
    if found.reason == "ceiling" and measured:
        top = max((lv.get("load") for lv in measured if lv.get("load") is not None), default=None)
        if top is not None:
            if search_mode:
                hint = f"the search stopped at its ceiling of {top:g}: raise --max (At most)"
            else:
                hint = f"every level up to {top:g} met the targets: measure higher loads"
            notes.append(hint + " to find the limit")
    elif found.reason == "none" and measured:
        notes.append("even the lowest load missed the targets: relax them, or look at the engine")
    return {
        "value": found.value,
        "mode": mode,
        "reason": found.reason,
        "slo": slo.limits(),
        "target": slo.target,
        "notes": notes,
        "summary": capacity_sentence(found.value, found.reason, mode, slo),
        "levels": [
            {
                "load": lv.get("load"),
                "load_label": lv.get("load_label"),
                "attainment": lv["slo"]["attainment"],
                "goodput": lv["slo"]["goodput"],
                "passed": lv["slo"]["passed"],
            }
            for lv in sorted(measured, key=_load_order)
        ],
    }


def _load_order(level: Mapping[str, Any]) -> float:
    load = level.get("load")
    return float("inf") if load is None else float(load)


def capacity_amount(value: float, reason: str, mode: str) -> str:
    """ "4 users at once", "1 user at a time", "at least 8 req/s" (the search's ceiling)."""
    amount = f"{value:g} users at once" if mode == CONCURRENCY else f"{value:g} req/s"
    if value == 1 and mode == CONCURRENCY:
        amount = "1 user at a time"
    return ("at least " if reason == "ceiling" else "") + amount


def capacity_sentence(value: float | None, reason: str, mode: str, slo: Slo) -> str:
    """ "4 users at once within TTFT ≤ 500 ms and ≥ 20 tok/s each, for 90% of requests"."""
    within = slo.describe()
    if value is None:
        return f"no load measured met {within}"
    return f"{capacity_amount(value, reason, mode)} within {within}"
