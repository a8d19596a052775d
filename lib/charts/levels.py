"""What run and telemetry charts share about levels: each lane's levels as labelled
bands on a time axis, and an x axis ticked at the run's concurrency levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lib.charts.style import lane_color

# Level labels on a time axis: about how wide a figure's plot area is (two per row on a
# 1600 px screen) and a label's glyphs, to tell when two labels would overprint.
PLOT_WIDTH_PX = 560
LABEL_CHAR_PX = 7.0
LABEL_ROW_PX = 15  # one row of labels below the other, from the plot's top edge
LABEL_DEPTH = 3  # rows per lane at most: past that, labels may touch


def concurrency_axis(fig: go.Figure, values: list[int]) -> None:
    """An x axis ticked at the run's concurrency levels.

    A log axis spreads 1, 2, 4 … 64 evenly; for a few close levels linear reads better.
    """
    log = len(values) > 2 and values[-1] / values[0] >= 8
    fig.update_xaxes(
        type="log" if log else "linear",
        tickmode="array",
        tickvals=values,
        ticktext=[str(v) for v in values],
        rangemode="normal",
    )
    if not log:
        pad = max((values[-1] - values[0]) * 0.08, 0.5)
        fig.update_xaxes(range=[values[0] - pad, values[-1] + pad])


def add_level_bands(
    fig: go.Figure,
    spans: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    labels: bool = True,
    xref: str = "x",
    yref: str = "paper",
    **where: Any,
) -> None:
    """Each lane's levels as bands in its colour, labelled by their load: "c=5", or a rate
    run's "2 req/s" (the latency timeline and the telemetry charts share them, so a level
    reads the same everywhere).

    Labels are in the lane's colour, at the top of the plot, each lane on a row of its
    own (lanes at the same time do not print over each other); a label that would touch
    the one before it on its row (short levels of lanes in turn) goes a row lower.
    `xref`/`yref` name a subplot's axes ("x2", "y2 domain"). Shapes and labels are added
    as plain dicts in one go: add_vrect one by one took ~5 ms a band.
    """
    if where:  # a subplot (Ollama's figure): Plotly places bands and labels per row
        _level_bands_subplot(fig, spans, colors, labels, **where)
        return
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    lanes = list(dict.fromkeys(s["lane"] for s in spans))
    lo = min((float(s["start_s"]) for s in spans), default=0.0)
    hi = max((float(s["end_s"]) for s in spans), default=1.0)
    sec_per_px = max(hi - min(lo, 0.0), 1e-9) / PLOT_WIDTH_PX
    row_end: dict[int, float] = {}  # row -> where its last label ends (seconds)
    for i, span in enumerate(spans):
        color = lane_color(colors, span["lane"])
        shapes.append(
            {
                "type": "rect",
                "xref": xref,
                "yref": yref,
                "x0": span["start_s"],
                "x1": span["end_s"],
                "y0": 0,
                "y1": 1,
                "fillcolor": color,
                "opacity": 0.06 if i % 2 == 0 else 0.11,
                "line": {"width": 0},
                "layer": "below",
            }
        )
        if not labels:
            continue
        text = band_label(span)
        x = float(span["start_s"])
        width = (len(text) * LABEL_CHAR_PX + 8) * sec_per_px
        # The lane's first row that is free here (rows of a lane are len(lanes) apart,
        # clear of the other lanes'); at most LABEL_DEPTH deep, then the least crowded.
        mine = [lanes.index(span["lane"]) + k * len(lanes) for k in range(LABEL_DEPTH)]
        free = [r for r in mine if row_end.get(r, float("-inf")) <= x]
        row = free[0] if free else min(mine, key=lambda r: row_end[r])
        row_end[row] = x + width
        notes.append(
            {
                "text": text,
                "x": x,
                "xref": xref,
                "y": 1,
                "yref": yref,
                "xanchor": "left",
                "yanchor": "top",
                "yshift": -2 - LABEL_ROW_PX * row,
                "showarrow": False,
                "font": {"size": 11, "color": color},
            }
        )
    append_layout(fig, shapes, notes)


def band_label(span: Mapping[str, Any]) -> str:
    """A band's label: the span's load (frames.level_spans), else its key as concurrency;
    a rate level's key only numbers it."""
    return str(span.get("load_label") or f"c={span['concurrency']}")


def append_layout(fig: go.Figure, shapes: Sequence[Any], notes: Sequence[Any]) -> None:
    """Add shapes and annotations by setting the tuples: update_layout with the existing
    ones in its lists re-checked them all (~45 ms for a dozen)."""
    if shapes:
        fig.layout.shapes = (*fig.layout.shapes, *shapes)
    if notes:
        fig.layout.annotations = (*fig.layout.annotations, *notes)


def _level_bands_subplot(
    fig: go.Figure,
    spans: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    labels: bool,
    **where: Any,
) -> None:
    for i, span in enumerate(spans):
        label: dict[str, Any] = {}
        if labels:
            label["annotation"] = {
                "text": band_label(span),
                "font": {"size": 11, "color": "#555555"},
            }
            label["annotation_position"] = "top left"
        fig.add_vrect(
            x0=span["start_s"],
            x1=span["end_s"],
            fillcolor=lane_color(colors, span["lane"]),
            opacity=0.06 if i % 2 == 0 else 0.11,
            line_width=0,
            layer="below",
            **label,
            **where,
        )
