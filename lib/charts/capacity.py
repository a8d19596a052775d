"""Figures of a run's load levels against its latency targets, from the run document
(lib.analysis.results.run_document, or load_levels.judge's copy with other targets):

- `pareto`: output throughput of all users against one user's speed, a point per load;
  up and right is better, and the curve shows what each extra user costs the others.
- `latency_vs_load`: a latency metric's p50 and p90 (or p99) per load, with the SLO
  limit as a dashed line.
- `goodput_vs_load`: requests per second within the SLO beside all requests per second,
  the attainment on hover, and each lane's capacity starred.

Levels are placed by their `load` (users at once, or requested req/s) and named by their
`load_label`; a rate level's key only numbers it and never shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lib.charts.load_axis import (
    LOAD_WORDS,
    LoadScale,
    apply_load_axis,
    load_order,
    load_scale,
    load_title,
)
from lib.charts.style import (
    E2E_TITLE,
    TPOT_TITLE,
    TTFT_TITLE,
    base_figure,
    lane_color,
    lane_colors,
    no_data,
)
from lib.core.load_pattern import CONCURRENCY, RATE
from lib.core.slo import Slo

METRICS: dict[str, tuple[str, str, str]] = {
    # metric -> (level field, short name, y-axis title)
    "ttft": ("ttft_ms", "TTFT", TTFT_TITLE),
    "tpot": ("tpot_ms", "TPOT", TPOT_TITLE),
    "e2el": ("e2el_ms", "E2E latency", E2E_TITLE),
}
SLO_LINE = "#333333"  # not a lane colour: the limit belongs to no lane
NO_LEVELS = "No measured level yet"


def _lanes(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(document.get("lanes") or [])


def _measured(lane: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The lane's levels that sent requests, in load order ("all at once" last)."""
    levels = [
        lv
        for lv in lane.get("levels") or []
        if (lv.get("completed") or 0) + (lv.get("failed") or 0) > 0
    ]
    return sorted(levels, key=lambda lv: load_order(lv.get("load")))


def _mode(document: Mapping[str, Any]) -> str:
    for lane in _lanes(document):
        for lv in lane.get("levels") or []:
            if lv.get("load_mode") == RATE:
                return RATE
    return CONCURRENCY


def _colors(document: Mapping[str, Any], colors: Mapping[str, str] | None) -> Mapping[str, str]:
    return colors or lane_colors([str(lane["name"]) for lane in _lanes(document)])


def _scale(document: Mapping[str, Any]) -> LoadScale:
    return load_scale([lv.get("load") for lane in _lanes(document) for lv in _measured(lane)])


def _p(level: Mapping[str, Any], field: str, pct: str) -> float | None:
    dist = level.get(field) or {}
    return dist.get(pct) if isinstance(dist, Mapping) else None


def _labels(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(lv.get("load_label") or "") for lv in levels]


def pareto(
    document: Mapping[str, Any],
    colors: Mapping[str, str] | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """Output throughput of all users (y) against the median user's speed (x), one line
    per lane through its loads in order, each point named by its load."""
    colors = _colors(document, colors)
    fig = base_figure(
        "Throughput vs per-user speed",
        "Speed of each user, median (tok/s)",
        "Output, all (tok/s)",
        "Each point a load level. Up and right is better: more tokens in all, each user faster.",
        uirevision,
    )
    fig.update_xaxes(rangemode="tozero")
    drawn = False
    # Lanes' labels on alternate sides of their points: lanes often share a point's
    # neighbourhood at low load, where labels above both would print over each other.
    sides = ("top center", "bottom center")
    for idx, lane in enumerate(_lanes(document)):
        name = str(lane["name"])
        levels = [
            lv
            for lv in _measured(lane)
            if lv.get("output_throughput") is not None and _p(lv, "tokens_per_s", "p50")
        ]
        if not levels:
            continue
        drawn = True
        color = lane_color(colors, name)
        fig.add_trace(
            go.Scatter(
                x=[_p(lv, "tokens_per_s", "p50") for lv in levels],
                y=[lv["output_throughput"] for lv in levels],
                mode="lines+markers+text",
                name=name,
                legendgroup=name,
                text=_labels(levels),
                textposition=sides[idx % 2],
                textfont={"color": color, "size": 11},
                line={"color": color, "width": 2.5},
                marker={"color": color, "size": 9},
                cliponaxis=False,
                hovertemplate=(
                    "<b>%{fullData.name}</b> at %{text}<br>%{y:.1f} tok/s in all"
                    "<br>%{x:.1f} tok/s per user (median)<extra></extra>"
                ),
            )
        )
    return fig if drawn else no_data(fig, NO_LEVELS)


def _slo_limits(document: Mapping[str, Any], slo: Slo | Mapping[str, Any] | None) -> dict:
    """The limits to draw: the SLO given, else the document's (judged, else configured)."""
    if isinstance(slo, Slo):
        return slo.limits()
    found = Slo.from_dict(slo or document.get("slo") or (document.get("settings") or {}).get("slo"))
    return found.limits() if found else {}


def latency_vs_load(
    document: Mapping[str, Any],
    metric: str = "ttft",
    slo: Slo | Mapping[str, Any] | None = None,
    colors: Mapping[str, str] | None = None,
    upper: str = "p90",
    uirevision: str | None = None,
) -> go.Figure:
    """A latency metric's p50 (solid) and `upper` percentile (dashed) per lane against
    load, with the SLO limit as a dashed grey line ("SLO 500 ms").

    `slo` None draws the document's own targets; pass Slo() to draw none."""
    field, short, y_title = METRICS[metric]
    colors = _colors(document, colors)
    mode = _mode(document)
    fig = base_figure(
        f"{short} vs {LOAD_WORDS[mode]}",
        load_title(mode),
        y_title,
        f"Solid: median (p50); dashed: {upper}. Lower is better.",
        uirevision,
    )
    scale = _scale(document)
    drawn = False
    for lane in _lanes(document):
        name = str(lane["name"])
        levels = [lv for lv in _measured(lane) if _p(lv, field, "p50") is not None]
        if not levels:
            continue
        drawn = True
        color = lane_color(colors, name)
        for pct, dash, shown in (("p50", "solid", name), (upper, "dash", f"{name} {upper}")):
            fig.add_trace(
                go.Scatter(
                    x=[scale.x(lv.get("load")) for lv in levels],
                    y=[_p(lv, field, pct) for lv in levels],
                    mode="lines+markers",
                    name=shown,
                    legendgroup=name,
                    text=_labels(levels),
                    line={"color": color, "width": 2.5 if pct == "p50" else 1.8, "dash": dash},
                    marker={"color": color, "size": 8 if pct == "p50" else 6},
                    hovertemplate=(
                        f"<b>{_hover_name(name)}</b> at %{{text}}<br>{short} {pct} "
                        "%{y:.1f} ms<extra></extra>"
                    ),
                )
            )
    if not drawn:
        return no_data(fig, NO_LEVELS)
    apply_load_axis(fig, scale, mode)
    limit = _slo_limits(document, slo).get(field)
    if limit is not None:
        fig.add_hline(
            y=limit,
            line={"color": SLO_LINE, "dash": "dash", "width": 1.5},
            annotation={"text": f"SLO {limit:g} ms", "font": {"color": SLO_LINE, "size": 12}},
            annotation_position="top left",
        )
        # Keep the limit in view when every level is far below it.
        highest = max((y for t in fig.data for y in t.y if y is not None), default=0.0)
        fig.update_yaxes(range=[0, max(highest, limit) * 1.12])
    return fig


def _hover_name(name: str) -> str:
    # Lane names go into a hover template: braces and percent signs would be read as one.
    return name.replace("%", "%%").replace("{", "(").replace("}", ")")


def goodput_vs_load(
    document: Mapping[str, Any],
    colors: Mapping[str, str] | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """Goodput (req/s within the SLO, solid) and all completed req/s (dotted) per lane
    against load; the attainment on hover; a star at each lane's capacity."""
    colors = _colors(document, colors)
    mode = _mode(document)
    fig = base_figure(
        f"Goodput vs {LOAD_WORDS[mode]}",
        load_title(mode),
        "Requests (req/s)",
        "Solid: requests within the SLO (goodput); dotted: all completed. ★ = capacity.",
        uirevision,
    )
    scale = _scale(document)
    drawn = False
    for lane in _lanes(document):
        name = str(lane["name"])
        levels = _measured(lane)
        if not levels:
            continue
        drawn = True
        color = lane_color(colors, name)
        xs = [scale.x(lv.get("load")) for lv in levels]
        judged = [lv for lv in levels if lv.get("slo")]
        if judged:
            fig.add_trace(_goodput_trace(name, color, judged, scale))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[lv.get("request_throughput") for lv in levels],
                mode="lines+markers",
                name=f"{name} all requests" if judged else name,
                legendgroup=name,
                text=_labels(levels),
                line={"color": color, "width": 1.6, "dash": "dot"},
                marker={"color": color, "size": 6, "symbol": "circle-open"},
                hovertemplate=(
                    f"<b>{_hover_name(name)}</b> at %{{text}}<br>%{{y:.2f}} req/s completed"
                    "<extra></extra>"
                ),
            )
        )
        _mark_capacity(fig, name, color, lane.get("capacity"), judged, scale)
    if not drawn:
        return no_data(fig, NO_LEVELS)
    apply_load_axis(fig, scale, mode)
    return fig


def _goodput_trace(
    name: str, color: str, levels: Sequence[Mapping[str, Any]], scale: LoadScale
) -> go.Scatter:
    attain = [lv["slo"].get("attainment") for lv in levels]
    return go.Scatter(
        x=[scale.x(lv.get("load")) for lv in levels],
        y=[lv["slo"].get("goodput") for lv in levels],
        mode="lines+markers",
        name=name,
        legendgroup=name,
        text=_labels(levels),
        customdata=[
            [
                "–" if a is None else f"{a:.0%}",
                "✅ met" if lv["slo"].get("passed") else "❌ missed",
            ]
            for a, lv in zip(attain, levels, strict=True)
        ],
        line={"color": color, "width": 2.5},
        marker={"color": color, "size": 9},
        hovertemplate=(
            f"<b>{_hover_name(name)}</b> at %{{text}}<br>goodput %{{y:.2f}} req/s"
            "<br>within SLO: %{customdata[0]} of requests (%{customdata[1]})<extra></extra>"
        ),
    )


def _mark_capacity(
    fig: go.Figure,
    name: str,
    color: str,
    capacity: Mapping[str, Any] | None,
    levels: Sequence[Mapping[str, Any]],
    scale: LoadScale,
) -> None:
    """A star on the goodput line at the lane's capacity, and a dotted line down to it."""
    if not capacity or capacity.get("value") is None:
        return
    value = float(capacity["value"])
    x = scale.x(value)
    at = [lv for lv in levels if lv.get("load") is not None and float(lv["load"]) == value]
    if x is None or not at:
        return
    y = at[0]["slo"].get("goodput") or 0.0
    fig.add_vline(x=x, line={"color": color, "dash": "dot", "width": 1.5}, layer="below")
    fig.add_trace(
        go.Scatter(
            x=[x],
            y=[y],
            mode="markers",
            name=f"{name} capacity",
            legendgroup=name,
            showlegend=False,
            text=[str(capacity.get("summary") or "")],
            marker={
                "color": color,
                "size": 18,
                "symbol": "star",
                "line": {"color": "#ffffff", "width": 1},
            },
            hovertemplate=f"<b>{_hover_name(name)}</b> capacity<br>%{{text}}<extra></extra>",
        )
    )
