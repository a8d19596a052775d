"""The latency timeline: every request's E2E latency at the time it was sent, one colour
per lane, over the bands of the lanes' levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lib.charts.levels import add_level_bands
from lib.charts.style import (
    E2E_TITLE,
    MAX_POINTS,
    TIME_TITLE,
    base_figure,
    downsample,
    lane_color,
    no_data,
    shown_note,
)


def latency_timeline(
    requests: pd.DataFrame,
    colors: Mapping[str, str],
    spans: Sequence[Mapping[str, Any]] = (),
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """E2E latency of every request over the run, one colour per lane.

    x is when the request was sent, so requests sent together stand in a column: a short
    column means they were served together (batching), a tall one that they waited in
    turn (queueing). Failed requests are crosses at the time they took. Grey bands mark
    each lane's concurrency levels.
    """
    total = len(requests)
    shown = downsample(requests, max_points)
    subtitle = (
        "A dot per request, at the time it was sent. Tall columns = requests queued."
        + shown_note(len(shown), total)
    )
    fig = base_figure(
        "E2E latency of each request over time", TIME_TITLE, E2E_TITLE, subtitle, uirevision
    )
    add_level_bands(fig, spans, colors)
    _whole_run_axis(fig, spans, shown)
    if shown.empty:
        return no_data(fig) if not spans else fig
    for lane in colors:
        mine = shown[shown["lane"] == lane]
        if mine.empty:
            continue
        ok, bad = mine[~mine["failed"]], mine[mine["failed"]]
        fig.add_trace(
            go.Scatter(
                x=ok["t_rel_s"],
                y=ok["e2el_ms"],
                mode="markers",
                name=lane,
                legendgroup=lane,
                marker={
                    "color": lane_color(colors, lane),
                    "size": 8,
                    "opacity": 0.85,
                    "line": {"width": 0.5, "color": "white"},
                },
                customdata=ok[["concurrency", "ttft_ms", "idx"]].to_numpy(),
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>sent at %{x:.2f} s<br>E2E %{y:.0f} ms"
                    "<br>TTFT %{customdata[1]:.0f} ms<br>concurrency %{customdata[0]}"
                    "<br>request #%{customdata[2]}<extra></extra>"
                ),
            )
        )
        if not bad.empty:
            fig.add_trace(
                go.Scatter(
                    x=bad["t_rel_s"],
                    y=bad["elapsed_ms"],
                    mode="markers",
                    name=f"{lane}: failed",
                    legendgroup=lane,
                    marker={"color": lane_color(colors, lane), "size": 10, "symbol": "x"},
                    customdata=bad[["error"]].to_numpy(),
                    hovertemplate=(
                        "<b>%{fullData.name}</b><br>sent at %{x:.2f} s<br>took %{y:.0f} ms"
                        "<br>%{customdata[0]}<extra></extra>"
                    ),
                )
            )
    fig.update_xaxes(rangemode="tozero")
    _label_headroom(fig, shown)
    return fig


def _label_headroom(fig: go.Figure, shown: pd.DataFrame) -> None:
    """Room above the highest point for the rows of level labels (about 15 px each of a
    ~230 px plot), so a label never sits on a dot."""
    rows = {a.yshift for a in fig.layout.annotations if (a.text or "").startswith("c=")}
    if not rows or shown.empty:
        return
    top = pd.concat([shown["e2el_ms"], shown["elapsed_ms"]]).max()
    if pd.notna(top) and top > 0:
        fig.update_yaxes(range=[0, float(top) * (1.05 + 0.08 * len(rows))])


def _whole_run_axis(
    fig: go.Figure, spans: Sequence[Mapping[str, Any]], shown: pd.DataFrame
) -> None:
    """x from the run's start to its last level's end (or last request's), so lanes that
    ran in turn each keep their stretch of the axis and the running level shows whole."""
    if not spans:
        return
    ends = [float(s["end_s"]) for s in spans]
    if not shown.empty and shown["t_rel_s"].notna().any():
        done = shown["t_rel_s"] + shown["elapsed_ms"].fillna(0.0) / 1000.0
        ends.append(float(done.max()))
    lo = min(0.0, *(float(s["start_s"]) for s in spans))
    hi = max(ends)
    fig.update_xaxes(range=[lo, hi + max((hi - lo) * 0.02, 0.5)])
