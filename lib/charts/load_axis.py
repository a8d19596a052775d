"""The x axis of charts drawn against load: users at once (closed loop) or requested
req/s (open loop), with a rate level of "all at once" placed at the right end.

A rate run's level key (`concurrency` in the store) only numbers its levels, so charts
of such runs place levels by their `load` and name them by their `load_label`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import plotly.graph_objects as go

from lib.core.load_pattern import CONCURRENCY, RATE

ALL_AT_ONCE = "all at once"
LOAD_TITLES = {
    CONCURRENCY: "Users at once (concurrency)",
    RATE: "Request rate (req/s)",
}
LOAD_WORDS = {CONCURRENCY: "concurrency", RATE: "request rate"}


def load_title(mode: str) -> str:
    return LOAD_TITLES.get(mode, LOAD_TITLES[CONCURRENCY])


def load_order(load: float | None) -> float:
    """Sort key: "all at once" (None) after every rate."""
    return math.inf if load is None else float(load)


@dataclass
class LoadScale:
    """Where each load sits on the x axis, and the ticks that name them."""

    positions: dict[float | None, float]
    log: bool

    def x(self, load: float | None) -> float | None:
        return self.positions.get(None if load is None else float(load))


def load_scale(loads: Iterable[float | None]) -> LoadScale:
    """Positions for the loads: a log axis when they span 8× or more (1, 2, 4 … 64 spread
    evenly), and "all at once" one step past the highest rate (it has no number)."""
    given = list(loads)
    finite = sorted({float(v) for v in given if v is not None})
    has_all = any(v is None for v in given)
    log = len(finite) > 2 and finite[0] > 0 and finite[-1] / finite[0] >= 8
    positions: dict[float | None, float] = {v: v for v in finite}
    if has_all:
        if not finite:
            positions[None] = 1.0
        elif log:
            positions[None] = finite[-1] * 2
        else:
            gap = finite[-1] - finite[-2] if len(finite) > 1 else finite[-1]
            positions[None] = finite[-1] + max(gap, finite[-1] * 0.25)
    return LoadScale(positions, log)


def apply_load_axis(fig: go.Figure, scale: LoadScale, mode: str) -> None:
    """Tick the x axis at the loads measured, titled by what the load is."""
    ordered = sorted(scale.positions.items(), key=lambda kv: load_order(kv[0]))
    values = [x for _, x in ordered]
    texts = [ALL_AT_ONCE if load is None else f"{load:g}" for load, _ in ordered]
    fig.update_xaxes(
        title={"text": load_title(mode)},
        type="log" if scale.log else "linear",
        tickmode="array",
        tickvals=values,
        ticktext=texts,
        rangemode="normal",
    )
    if values and not scale.log:
        pad = max((values[-1] - values[0]) * 0.08, 0.5 if mode == CONCURRENCY else 0.1)
        fig.update_xaxes(range=[values[0] - pad, values[-1] + pad])
