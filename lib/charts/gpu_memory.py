"""The GPU memory figure: one GPU's memory over the run, telling the seed team's story on
its own: the card's total as a dashed line, vLLM's up-front budget
(gpu_memory_utilization × total) as a dotted line in the vLLM lane's colour, and the
steps where an engine started, loaded its model and reserved its KV cache, marked on
its process's line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lib.analysis import telemetry_frames as tf
from lib.analysis.telemetry_frames import MAX_POINTS, GpuInfo, fmt_gib, thin
from lib.charts.levels import add_level_bands
from lib.charts.style import TIME_TITLE, base_figure
from lib.charts.telemetry_marks import (
    add_run_marks,
    chart_text,
    fit_x_range,
    lane_color,
    phase_arrow,
)

GIB_TITLE = "GPU memory (GiB)"
MEMORY_HEIGHT = 500  # px; the memory figure takes a full row
DEVICE_LINE = "#8C8C8C"
DEVICE_FILL = "rgba(140,140,140,0.16)"
OTHER_DASHES = ("dot", "dashdot", "longdash", "longdashdot")


def gpu_memory_figure(
    mem: pd.DataFrame,
    gpu: GpuInfo,
    colors: Mapping[str, str],
    spans: Sequence[Mapping[str, Any]] = (),
    phases: Sequence[Mapping[str, Any]] = (),
    reservations: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    end_s: float | None = None,
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """One GPU's memory over the run: the whole device (grey area), each engine process
    (a line in its lane's colour), the total (dashed), vLLM's budget (dotted), phases.

    `mem` is telemetry_frames.memory_frame for this GPU; `phases` engine_phases;
    `reservations` vllm_reservation dicts; `notes` lines of subtitle that say why.
    """
    mine = mem[mem["gpu"] == gpu.index] if not mem.empty else mem
    shown = thin(mine, "series", "gib", max_points)
    note = "" if len(shown) == len(mine) else f" Showing {len(shown):,} of {len(mine):,} readings."
    subtitle = "<br>".join(chart_text(n) for n in notes) + note
    fig = base_figure(
        f"GPU {gpu.index} memory over the run: {chart_text(gpu.name)}",
        TIME_TITLE,
        GIB_TITLE,
        subtitle or None,
        uirevision,
    )
    # Full width and taller than the others: the memory story carries labels.
    fig.update_layout(height=MEMORY_HEIGHT)
    if len(notes) > 1:  # room for the second subtitle line
        fig.update_layout(margin={"t": 84 + 17 * (len(notes) - 1)})
    add_level_bands(fig, spans, colors)
    add_run_marks(fig, end_s)
    device = shown[shown["kind"] == "device"]
    if not device.empty:
        fig.add_trace(
            go.Scatter(
                x=device["t_s"],
                y=device["gib"],
                mode="lines",
                line={"color": DEVICE_LINE, "width": 1.5, "shape": "hv"},
                fill="tozeroy",
                fillcolor=DEVICE_FILL,
                name=f"GPU {gpu.index} used (all processes)",
                hovertemplate="%{x:.1f} s<br>GPU used %{y:.2f} GiB<extra></extra>",
            )
        )
    others = 0
    for series, points in shown[shown["kind"] == "process"].groupby("series", sort=False):
        lane = points["lane"].iloc[0]
        attributed = isinstance(lane, str)
        dash = "solid" if attributed else OTHER_DASHES[others % len(OTHER_DASHES)]
        others += 0 if attributed else 1
        fig.add_trace(
            go.Scatter(
                x=points["t_s"],
                y=points["gib"],
                mode="lines",
                line={"color": lane_color(colors, lane), "width": 2.6, "shape": "hv", "dash": dash},
                name=chart_text(series),
                legendgroup=chart_text(lane) if attributed else None,
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>%{x:.1f} s<br>%{y:.2f} GiB<extra></extra>"
                ),
            )
        )
    top = float(mine["gib"].max()) if not mine.empty else 0.0
    if gpu.total_bytes:
        total = gpu.total_bytes / 2**30
        top = max(top, total)
        fig.add_hline(
            y=total,
            line={"color": "#333333", "width": 1.2, "dash": "dash"},
            annotation={
                "text": f"GPU total {total:.1f} GiB",
                "font": {"size": 11, "color": "#333333"},
            },
            annotation_position="bottom right",
        )
    for res in reservations:
        fig.add_hline(
            y=res["gib"],
            line={"color": lane_color(colors, res.get("lane")), "width": 1.6, "dash": "dot"},
            annotation={
                "text": chart_text(res["text"]),
                "font": {"size": 12, "color": lane_color(colors, res.get("lane"))},
            },
            # Right: the phases it explains sit early in the run, at the left.
            annotation_position="top right",
        )
    fig.update_yaxes(range=[0, max(top, 1.0) * 1.12])
    _add_phases(fig, phases, colors, fit_x_range(fig, mine["t_s"], end_s, spans))
    _add_held_labels(fig, shown, phases, colors, reservations)
    if mine.empty:
        fig.add_annotation(
            text="No GPU memory reading yet",
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
            font={"size": 14, "color": "#777777"},
        )
    return fig


def _add_phases(
    fig: go.Figure,
    phases: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    x_range: tuple[float, float],
) -> None:
    # Phases bunch up (vLLM starts, loads and reserves within seconds): each label leans
    # away from the nearer side of the plot and climbs one step higher than the last, so
    # neighbours stack instead of overprinting each other or the y-axis title.
    lo, hi = x_range
    for i, phase in enumerate(phases):
        color = lane_color(colors, phase.get("lane"))
        right = phase["t_s"] < lo + 0.65 * (hi - lo)
        text = f"{chart_text(phase['label'])}: {fmt_gib(phase['gib'])}"
        phase_arrow(fig, phase["t_s"], phase["gib"], text, color, right, i % 3)


def _add_held_labels(
    fig: go.Figure,
    shown: pd.DataFrame,
    phases: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    reservations: Sequence[Mapping[str, Any]],
) -> None:
    # An attributed process with no phase to mark (Ollama loaded before the run) still
    # gets its figure written at the end of its line: "Ollama: 5.3 GiB" is half the
    # story. Skipped where vLLM's budget label already sits at that height.
    marked = {p["series"] for p in phases}
    procs = shown[(shown["kind"] == "process") & shown["lane"].notna()]
    for series, points in procs.groupby("series", sort=False):
        if series in marked:
            continue
        last = points.sort_values("t_s").iloc[-1]
        if any(abs(r["gib"] - last["gib"]) < 1.0 for r in reservations):
            continue
        label = tf.ENGINE_LABELS.get(str(last["engine"]), "process")
        color = lane_color(colors, last["lane"])
        fig.add_annotation(
            x=last["t_s"],
            y=last["gib"],
            text=f"{label}: {fmt_gib(float(last['gib']))}",
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            yshift=3,
            font={"size": 12, "color": color},
            bgcolor="rgba(255,255,255,0.8)",
        )
