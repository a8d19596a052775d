"""Per-level figures of a run: each per-request metric's distribution by lane and
concurrency (box plots), and output throughput against concurrency.

A rate run's frames (with `load_mode` "rate", lib/analysis/load_frames.py) are drawn by
rate instead: boxes per `load_label`, throughput against `load`, axes titled in req/s;
its levels' keys, which only number them, never show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from lib.charts.levels import concurrency_axis
from lib.charts.load_axis import apply_load_axis, load_order, load_scale, load_title
from lib.charts.style import (
    BOX_POINTS_ALL,
    CONCURRENCY_TITLE,
    E2E_TITLE,
    MAX_POINTS,
    THROUGHPUT_TITLE,
    TOKS_TITLE,
    TPOT_TITLE,
    TTFT_TITLE,
    base_figure,
    downsample,
    lane_color,
    no_data,
    shown_note,
)
from lib.core.load_pattern import RATE


def distribution_box(
    requests: pd.DataFrame,
    metric: str,
    colors: Mapping[str, str],
    title: str,
    y_title: str,
    subtitle: str | None = None,
    concurrency_order: Sequence[int] = (),
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """Distribution of one per-request metric per lane (colour) and concurrency (x)."""
    ok = requests[~requests["failed"]] if "failed" in requests else requests
    ok = ok[ok[metric].notna()]
    total = len(ok)
    shown = downsample(ok, max_points)
    note = shown_note(len(shown), total)
    rate = is_rate(requests)
    if rate:  # "… by concurrency" -> "… by request rate"
        title = title.replace("by concurrency", "by request rate")
        subtitle = subtitle and subtitle.replace("with concurrency", "with the rate")
    x_title = load_title(RATE) if rate else CONCURRENCY_TITLE
    fig = base_figure(title, x_title, y_title, ((subtitle or "") + note) or None, uirevision)
    if rate:
        x_col, categories = "load_label", _rate_categories(shown)
    else:
        levels = list(concurrency_order) or sorted(shown["concurrency"].unique().tolist())
        levels += sorted(set(shown["concurrency"].tolist()) - set(levels))
        x_col, categories = "concurrency", [str(c) for c in levels]
    fig.update_layout(boxmode="group", boxgap=0.25, boxgroupgap=0.15)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=categories)
    if shown.empty:
        return no_data(fig)
    for lane in colors:
        mine = shown[shown["lane"] == lane]
        if mine.empty:
            continue
        per_box = mine.groupby(x_col).size().max()
        fig.add_trace(
            go.Box(
                x=mine[x_col].astype(str),
                y=mine[metric],
                name=lane,
                legendgroup=lane,
                marker={"color": lane_color(colors, lane), "size": 5, "opacity": 0.7},
                line={"color": lane_color(colors, lane), "width": 1.6},
                fillcolor=_fill(lane_color(colors, lane)),
                boxpoints="all" if per_box <= BOX_POINTS_ALL else "outliers",
                jitter=0.35,
                pointpos=0,
                hovertemplate=(
                    f"<b>%{{fullData.name}}</b><br>{'' if rate else 'concurrency '}%{{x}}"
                    "<br>%{y:.1f}<extra></extra>"
                ),
            )
        )
    return fig


def is_rate(frame: pd.DataFrame) -> bool:
    """Whether the frame's levels ran open loop (drawn by rate, not by their keys)."""
    return "load_mode" in frame and bool((frame["load_mode"] == RATE).any())


def _rate_categories(frame: pd.DataFrame) -> list[str]:
    """The levels' labels by rate, "all at once" last."""
    pairs = frame[["load", "load_label"]].drop_duplicates("load_label")
    ordered = sorted(
        pairs.itertuples(index=False),
        key=lambda p: load_order(None if pd.isna(p.load) else p.load),
    )
    return [str(p.load_label) for p in ordered]


def _fill(hex_color: str, alpha: float = 0.18) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def ttft_box(
    requests: pd.DataFrame,
    colors: Mapping[str, str],
    concurrency_order: Sequence[int] = (),
    uirevision: str | None = None,
) -> go.Figure:
    """Time to first token per lane and concurrency."""
    return distribution_box(
        requests,
        "ttft_ms",
        colors,
        "Time to first token by concurrency",
        TTFT_TITLE,
        "Lower is better. Rising with concurrency = requests wait to start.",
        concurrency_order,
        uirevision,
    )


def e2el_box(
    requests: pd.DataFrame,
    colors: Mapping[str, str],
    concurrency_order: Sequence[int] = (),
    uirevision: str | None = None,
) -> go.Figure:
    """End-to-end latency per lane and concurrency: flat = batching, rising = queueing."""
    return distribution_box(
        requests,
        "e2el_ms",
        colors,
        "E2E latency by concurrency",
        E2E_TITLE,
        "Flat = the engine batches requests; rising and spread = it queues them.",
        concurrency_order,
        uirevision,
    )


def tokens_per_s_box(
    requests: pd.DataFrame,
    colors: Mapping[str, str],
    concurrency_order: Sequence[int] = (),
    uirevision: str | None = None,
) -> go.Figure:
    """What one user sees: output tokens / E2E latency of each request."""
    return distribution_box(
        requests,
        "tokens_per_s",
        colors,
        "Tokens per second per request by concurrency",
        TOKS_TITLE,
        "One user's view: output tokens ÷ E2E latency. Higher is better.",
        concurrency_order,
        uirevision,
    )


def tpot_box(
    requests: pd.DataFrame,
    colors: Mapping[str, str],
    concurrency_order: Sequence[int] = (),
    uirevision: str | None = None,
) -> go.Figure:
    """Time per output token after the first, per lane and concurrency."""
    return distribution_box(
        requests,
        "tpot_ms",
        colors,
        "Time per output token by concurrency",
        TPOT_TITLE,
        "(E2E − TTFT) ÷ (output tokens − 1). Lower is better.",
        concurrency_order,
        uirevision,
    )


def throughput_vs_concurrency(
    levels: pd.DataFrame,
    colors: Mapping[str, str],
    uirevision: str | None = None,
) -> go.Figure:
    """Output throughput (all requests of a level together) per lane against concurrency."""
    rate = is_rate(levels)
    fig = base_figure(
        "Output throughput vs request rate" if rate else "Output throughput vs concurrency",
        load_title(RATE) if rate else CONCURRENCY_TITLE,
        THROUGHPUT_TITLE,
        "All output tokens of a level ÷ its duration. Higher is better.",
        uirevision,
    )
    data = levels[levels["out_tok_per_s"].notna()] if not levels.empty else levels
    if data.empty:
        return no_data(fig, "No finished level yet")
    if rate:
        loads = [None if pd.isna(v) else float(v) for v in data["load"]]
        scale = load_scale(loads)
        data = data.assign(x=[scale.x(v) for v in loads], order=[load_order(v) for v in loads])
        apply_load_axis(fig, scale, RATE)
    else:
        concurrency_axis(fig, sorted({int(c) for c in data["concurrency"]}))
        data = data.assign(x=data["concurrency"], order=data["concurrency"])
    for lane in colors:
        mine = data[data["lane"] == lane].sort_values("order")
        if mine.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=mine["x"],
                y=mine["out_tok_per_s"],
                mode="lines+markers",
                name=lane,
                legendgroup=lane,
                line={"color": lane_color(colors, lane), "width": 2.5},
                marker={"color": lane_color(colors, lane), "size": 9},
                text=mine["load_label"] if rate else None,
                customdata=mine[["req_per_s", "ttft_p50_ms", "e2el_p50_ms"]].to_numpy(),
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>"
                    + ("%{text}" if rate else "concurrency %{x}")
                    + "<br>%{y:.1f} tok/s"
                    "<br>%{customdata[0]:.2f} req/s<br>TTFT p50 %{customdata[1]:.0f} ms"
                    "<br>E2E p50 %{customdata[2]:.0f} ms<extra></extra>"
                ),
            )
        )
    return fig


def figure_colors(fig: go.Figure) -> dict[str, set[str]]:
    """Colours each legend group (lane) uses in a figure — for tests and checks."""
    out: dict[str, set[str]] = {}
    for trace in fig.data:
        group = trace.legendgroup or trace.name
        color = getattr(trace.marker, "color", None)
        if isinstance(color, str):
            out.setdefault(group, set()).add(color)
    return out
