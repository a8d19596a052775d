"""Run-over-run overlay figures for the History page. No Streamlit here.

One trace per run × lane. A lane keeps one colour across runs (colour = what was
served, from lib.charts' palette) and each run has its own dash and marker, so
"vLLM before vs after" reads as one colour, solid against dashed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lib.charts.levels import concurrency_axis
from lib.charts.style import (
    CONCURRENCY_TITLE,
    PALETTE,
    THROUGHPUT_TITLE,
    base_figure,
    lane_colors,
)

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star")

LATENCY_METRICS: dict[str, tuple[str, str]] = {
    # column: (title, y-axis title with unit)
    "ttft_p50_ms": ("p50 time to first token vs concurrency", "TTFT p50 (ms)"),
    "ttft_p99_ms": ("p99 time to first token vs concurrency", "TTFT p99 (ms)"),
    "tpot_p50_ms": ("p50 time per output token vs concurrency", "TPOT p50 (ms)"),
    "e2el_p50_ms": ("p50 E2E latency vs concurrency", "E2E latency p50 (ms)"),
    "e2el_p99_ms": ("p99 E2E latency vs concurrency", "E2E latency p99 (ms)"),
}


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(
        text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
        font={"size": 14, "color": "#777777"},
    )  # fmt: skip
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def overlay_figure(
    overlay: pd.DataFrame,
    metric: str,
    title: str,
    y_title: str,
    subtitle: str | None = None,
) -> go.Figure:
    """`metric` against concurrency, one line per run × lane (see module docstring)."""
    fig = base_figure(title, CONCURRENCY_TITLE, y_title, subtitle, "history")
    data = overlay[overlay[metric].notna()] if not overlay.empty else overlay
    if data.empty:
        return _empty(fig, "No finished level in the chosen runs")
    concurrency_axis(fig, sorted({int(c) for c in data["concurrency"]}))
    colors = lane_colors(list(dict.fromkeys(overlay["lane"])))
    runs = list(dict.fromkeys(overlay["run"]))
    for (run, lane), part in data.groupby(["run", "lane"], sort=False):
        part = part.sort_values("concurrency")
        i = runs.index(run)
        color = colors.get(str(lane), PALETTE[-2])
        fig.add_trace(
            go.Scatter(
                x=part["concurrency"],
                y=part[metric],
                mode="lines+markers",
                name=f"{run} · {lane}",
                legendgroup=str(run),
                line={"color": color, "width": 2.5, "dash": DASHES[i % len(DASHES)]},
                marker={"color": color, "size": 9, "symbol": SYMBOLS[i % len(SYMBOLS)]},
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>concurrency %{x}<br>%{y:.1f}<extra></extra>"
                ),
            )
        )
    return fig


def throughput_overlay(overlay: pd.DataFrame) -> go.Figure:
    """Output throughput (tok/s) against concurrency for the chosen runs."""
    return overlay_figure(
        overlay,
        "out_tok_per_s",
        "Output throughput vs concurrency, run over run",
        THROUGHPUT_TITLE,
        "Colour = lane (engine and model), line style = run. Higher is better.",
    )


def latency_overlay(overlay: pd.DataFrame, metric: str = "ttft_p50_ms") -> go.Figure:
    """A latency percentile (ms) against concurrency for the chosen runs."""
    title, y_title = LATENCY_METRICS[metric]
    return overlay_figure(
        overlay,
        metric,
        title + ", run over run",
        y_title,
        "Colour = lane (engine and model), line style = run. Lower is better.",
    )


def trace_summary(fig: go.Figure) -> list[dict[str, Any]]:
    """Name, colour, dash and points of each trace — for tests and checks."""
    return [
        {
            "name": t.name,
            "color": t.line.color,
            "dash": t.line.dash,
            "x": list(t.x),
            "y": list(t.y),
        }
        for t in fig.data
    ]
