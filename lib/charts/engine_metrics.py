"""Figures of what the engines report beside a run: vLLM's KV-cache usage and request
queue (from /metrics), and Ollama's loaded models (from /api/ps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.analysis.telemetry_frames import MAX_POINTS, thin
from lib.charts.levels import add_level_bands
from lib.charts.style import HEIGHT, TIME_TITLE, base_figure
from lib.charts.telemetry_marks import (
    add_run_marks,
    chart_text,
    fit_x_range,
    lane_color,
    lane_lines,
)


def kv_cache_figure(
    kv: pd.DataFrame,
    colors: Mapping[str, str],
    spans: Sequence[Mapping[str, Any]] = (),
    end_s: float | None = None,
    capacity: str | None = None,
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """vLLM's KV-cache usage per lane over the run, on a 0-100 % axis.

    The full axis is the point: vLLM reserved the whole cache up front, and this shows
    how much of it the benchmark's requests filled. `capacity` ("65,536 tokens") names
    the cache's size in the subtitle.
    """
    shown = thin(kv, "lane", "kv_pct", max_points)
    size = f" of {capacity}" if capacity else ""
    fig = base_figure(
        "vLLM KV cache usage over the run",
        TIME_TITLE,
        "KV cache in use (%)",
        f"Share of the KV cache{size} holding requests' tokens (vllm:kv_cache_usage_perc).",
        uirevision,
    )
    add_level_bands(fig, spans, colors)
    add_run_marks(fig, end_s)
    lane_lines(fig, shown, "kv_pct", colors, unit=" %")
    fig.update_yaxes(range=[0, 105], ticksuffix=" %")
    fit_x_range(fig, kv["t_s"], end_s, spans)
    return fig


def queue_figure(
    kv: pd.DataFrame,
    colors: Mapping[str, str],
    spans: Sequence[Mapping[str, Any]] = (),
    end_s: float | None = None,
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """vLLM's requests in the running batch (solid) and waiting (dashed) per lane."""
    shown = thin(kv, "lane", "running", max_points // 2)  # two lines per row
    fig = base_figure(
        "vLLM requests running and waiting",
        TIME_TITLE,
        "Requests in vLLM (count)",
        "Running = in the batch; waiting = queued in vLLM (vllm:num_requests_*).",
        uirevision,
    )
    add_level_bands(fig, spans, colors)
    add_run_marks(fig, end_s)
    lane_lines(fig, shown, "running", colors, ": running")
    lane_lines(fig, shown, "waiting", colors, ": waiting", dash="dash")
    top = float(kv[["running", "waiting"]].max().max()) if not kv.empty else 0.0
    fig.update_yaxes(range=[0, max(top, 1.0) * 1.15])
    fit_x_range(fig, kv["t_s"], end_s, spans)
    return fig


def ollama_figure(
    oll: pd.DataFrame,
    colors: Mapping[str, str],
    spans: Sequence[Mapping[str, Any]] = (),
    end_s: float | None = None,
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """Ollama's loaded models (/api/ps): size and the part in VRAM (GiB, top), the VRAM
    share (%, bottom; 100 % is what `ollama ps` calls "100% GPU")."""
    shown = thin(oll, "series", "size_gib", max_points // 3)  # three lines per row
    contexts = sorted({int(c) for c in oll["context_length"].dropna()})
    ctx = f" for {', '.join(f'{c:,}' for c in contexts)} tokens" if contexts else ""
    base = base_figure(
        "Ollama loaded models: size and share in VRAM",
        TIME_TITLE,
        "Model size (GiB)",
        f"Ollama holds weights + KV cache{ctx} (num_ctx × num_parallel). Dashed: in VRAM.",
        uirevision,
    )
    # Subplots laid into the styled figure (`figure=`): copying its layout over a new
    # subplot figure with update_layout took ~190 ms, most of a live redraw.
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], figure=base)
    fig.update_layout(height=HEIGHT + 60)
    for row in (1, 2):
        fig.update_xaxes(showline=True, linecolor="#888888", zeroline=False, row=row, col=1)
        fig.update_yaxes(showline=True, linecolor="#888888", row=row, col=1)
    fig.update_xaxes(title={"text": TIME_TITLE}, row=2, col=1)
    fig.update_xaxes(title={"text": None}, row=1, col=1)
    fig.update_yaxes(title={"text": "Size (GiB)"}, rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title={"text": "In VRAM (%)"}, range=[0, 105], ticksuffix=" %", row=2, col=1)
    # Rows 1 and 2 are axes x/y and x2/y2 (make_subplots' naming); labelled once, above.
    for row, axes in ((1, ("x", "y domain")), (2, ("x2", "y2 domain"))):
        add_level_bands(fig, spans, colors, labels=row == 1, xref=axes[0], yref=axes[1])
    add_run_marks(fig, end_s, xref="x2", yref="y2 domain")
    for series, points in shown.groupby("series", sort=False):
        lane = points["lane"].iloc[0]
        color = lane_color(colors, lane)
        group = chart_text(series)
        for column, suffix, dash, row in (
            ("size_gib", "size", "solid", 1),
            ("vram_gib", "in VRAM", "dash", 1),
            ("share_pct", "VRAM share", "dot", 2),
        ):
            part = points[points[column].notna()]
            if part.empty:
                continue
            unit = " %" if column == "share_pct" else " GiB"
            fig.add_trace(
                go.Scatter(
                    x=part["t_s"],
                    y=part[column],
                    mode="lines",
                    line={"color": color, "width": 2.4, "dash": dash, "shape": "hv"},
                    name=f"{group}: {suffix}",
                    legendgroup=group,
                    hovertemplate=(
                        "<b>%{fullData.name}</b><br>%{x:.1f} s<br>%{y:.2f}"
                        + unit
                        + "<extra></extra>"
                    ),
                ),
                row=row,
                col=1,
            )
    top = float(oll[["size_gib", "vram_gib"]].max().max()) if not oll.empty else 0.0
    fig.update_yaxes(range=[0, max(top, 0.1) * 1.15], row=1, col=1)
    fit_x_range(fig, oll["t_s"], end_s, spans)
    return fig
