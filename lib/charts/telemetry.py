"""Plotly figures for telemetry beside a run: GPU memory, vLLM KV cache and queue, Ollama.

Data in (frames from lib/telemetry_frames.py), go.Figure out; no Streamlit. Same style
as lib/charts.py: white, titled, units on the axes, legend under the plot, one colour
per lane from `lane_colors`, the run's time axis (seconds since the run started) with
each level as a band, and at most MAX_POINTS points a figure.

The memory figure tells the seed team's story on its own: the card's total as a dashed
line, vLLM's up-front budget (gpu_memory_utilization × total) as a dotted line in the
vLLM lane's colour, and the steps where an engine started, loaded its model and reserved
its KV cache, marked on its process's line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.analysis import telemetry_frames as tf
from lib.analysis.telemetry_frames import MAX_POINTS, GpuInfo, fmt_gib, thin
from lib.charts import (
    HEIGHT,
    PALETTE,
    TIME_TITLE,
    add_level_bands,
    append_layout,
    base_figure,
)

GIB_TITLE = "GPU memory (GiB)"
MEMORY_HEIGHT = 500  # px; the memory figure takes a full row
DEVICE_LINE = "#8C8C8C"
DEVICE_FILL = "rgba(140,140,140,0.16)"
OTHER = PALETTE[-2]  # processes no lane can claim: dark grey, as charts.py's fallback
OTHER_DASHES = ("dot", "dashdot", "longdash", "longdashdot")


def chart_text(text: Any) -> str:
    """Text Plotly draws with no markup: lane, model and process names are untrusted
    (Plotly reads <b>, <br>, <a href> in names and annotations)."""
    return str(text).replace("<", "‹").replace(">", "›")


def _color(colors: Mapping[str, str], lane: Any) -> str:
    return colors.get(lane, OTHER) if isinstance(lane, str) else OTHER


def add_run_marks(
    fig: go.Figure, end_s: float | None, xref: str = "x", yref: str = "paper"
) -> None:
    """Thin vertical lines where the run started and (once it has) ended, labelled at
    the bottom beside the line. `xref`/`yref` name a subplot's axes ("x2", "y2 domain");
    plain dicts added in one go (add_vline one by one took ~5 ms a line)."""
    marks = [(0.0, "run start", "left")]
    if end_s is not None:
        marks.append((end_s, "run end", "right"))
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for x, text, side in marks:
        shapes.append(
            {
                "type": "line",
                "xref": xref,
                "yref": yref,
                "x0": x,
                "x1": x,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#555555", "width": 1, "dash": "dot"},
            }
        )
        notes.append(
            {
                "text": text,
                "x": x,
                "xref": xref,
                "y": 0,
                "yref": yref,
                "xanchor": side,
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 11, "color": "#555555"},
            }
        )
    append_layout(fig, shapes, notes)


def _x_range(
    fig: go.Figure, t: pd.Series, end_s: float | None, spans: Sequence[Any]
) -> tuple[float, float]:
    """Fit x to the readings, the levels and the run's end; returns the range set."""
    lo = min(0.0, float(t.min())) if not t.empty else 0.0
    ends = [float(t.max())] if not t.empty else []
    ends += [s["end_s"] for s in spans] + ([end_s] if end_s is not None else [])
    hi = max(ends, default=1.0)
    pad = max((hi - lo) * 0.02, 0.5)
    fig.update_xaxes(range=[lo - pad, hi + pad])
    return lo - pad, hi + pad


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
                line={"color": _color(colors, lane), "width": 2.6, "shape": "hv", "dash": dash},
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
            line={"color": _color(colors, res.get("lane")), "width": 1.6, "dash": "dot"},
            annotation={
                "text": chart_text(res["text"]),
                "font": {"size": 12, "color": _color(colors, res.get("lane"))},
            },
            # Right: the phases it explains sit early in the run, at the left.
            annotation_position="top right",
        )
    fig.update_yaxes(range=[0, max(top, 1.0) * 1.12])
    _add_phases(fig, phases, colors, _x_range(fig, mine["t_s"], end_s, spans))
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
        color = _color(colors, phase.get("lane"))
        right = phase["t_s"] < lo + 0.65 * (hi - lo)
        fig.add_annotation(
            x=phase["t_s"],
            y=phase["gib"],
            text=f"{chart_text(phase['label'])}: {fmt_gib(phase['gib'])}",
            showarrow=True,
            arrowhead=2,
            arrowsize=1,
            arrowwidth=1.2,
            arrowcolor=color,
            ax=28 if right else -28,
            ay=-26 - 24 * (i % 3),
            xanchor="left" if right else "right",
            font={"size": 12, "color": color},
            bgcolor="rgba(255,255,255,0.9)",
            bordercolor=color,
            borderwidth=1,
            borderpad=3,
        )


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
        color = _color(colors, last["lane"])
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


def _lane_lines(
    fig: go.Figure,
    frame: pd.DataFrame,
    column: str,
    colors: Mapping[str, str],
    suffix: str = "",
    dash: str = "solid",
    unit: str = "",
    **where: Any,
) -> None:
    for lane, points in frame.groupby("lane", sort=False):
        points = points[points[column].notna()]
        if points.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=points["t_s"],
                y=points[column],
                mode="lines",
                line={"color": _color(colors, lane), "width": 2.4, "dash": dash, "shape": "hv"},
                name=chart_text(f"{lane}{suffix}"),
                legendgroup=chart_text(lane),
                hovertemplate=(
                    f"<b>%{{fullData.name}}</b><br>%{{x:.1f}} s<br>%{{y:.1f}}{unit}<extra></extra>"
                ),
            ),
            **where,
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
    _lane_lines(fig, shown, "kv_pct", colors, unit=" %")
    fig.update_yaxes(range=[0, 105], ticksuffix=" %")
    _x_range(fig, kv["t_s"], end_s, spans)
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
    _lane_lines(fig, shown, "running", colors, ": running")
    _lane_lines(fig, shown, "waiting", colors, ": waiting", dash="dash")
    top = float(kv[["running", "waiting"]].max().max()) if not kv.empty else 0.0
    fig.update_yaxes(range=[0, max(top, 1.0) * 1.15])
    _x_range(fig, kv["t_s"], end_s, spans)
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
        color = _color(colors, lane)
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
    _x_range(fig, oll["t_s"], end_s, spans)
    return fig


# --- the whole section, for the pages ------------------------------------------------------


@dataclass
class TelemetryCharts:
    """What the telemetry section shows: figures by key (wide ones take a full row) and
    plain-text captions where a source gave nothing (to be escaped by the page)."""

    figures: list[tuple[str, go.Figure, bool]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def _status_line(env: Mapping[str, Any], key: str) -> str | None:
    status = (env.get("telemetry") or {}).get(key)
    return status if isinstance(status, str) and status != "ok" else None


def memory_notes(
    caches: Sequence[tf.VllmCache],
    engines: set[str],
    ollama: pd.DataFrame,
) -> list[str]:
    """Subtitle lines that say why the engines hold what they hold (reference §2.8, §5)."""
    notes = []
    if "vllm" in engines:
        for cache in caches[:1]:
            kv = f" ({cache.kv_tokens:,} tokens)" if cache.kv_tokens else ""
            if cache.kv_cache_memory_bytes is not None:
                size = cache.kv_cache_memory_bytes / tf.GIB
                notes.append(
                    f"vLLM's KV cache is fixed at {size:.1f} GiB{kv} by kv_cache_memory_bytes."
                )
            elif cache.gpu_memory_utilization is not None:
                util = cache.gpu_memory_utilization
                notes.append(
                    f"vLLM reserves gpu_memory_utilization ({util:g}) × the GPU up front: "
                    f"weights, then KV cache{kv} in all that is left."
                )
    if "ollama" in engines:
        contexts = (
            sorted({int(c) for c in ollama["context_length"].dropna()}) if len(ollama) else []
        )
        ctx = f" ({', '.join(f'{c:,}' for c in contexts)} here)" if contexts else ""
        notes.append(
            f"Ollama allocates weights + a KV cache for num_ctx × num_parallel tokens{ctx}."
        )
    return notes


def telemetry_charts(
    rows: Sequence[Mapping[str, Any]],
    env: Mapping[str, Any],
    lanes: Sequence[tf.LaneRef],
    spans: Sequence[Mapping[str, Any]],
    t0: float,
    colors: Mapping[str, str],
    end_s: float | None = None,
    active: bool = False,
    uirevision: str | None = None,
) -> TelemetryCharts:
    """Every telemetry figure a run's samples support, and captions for what is missing.

    GPU memory per GPU (or one caption saying why there is none: "GPU memory: no NVIDIA
    GPU on this machine (NVML library not found)"); vLLM KV cache and queue when a vLLM
    lane's /metrics answered; Ollama's models when /api/ps did.
    """
    out = TelemetryCharts()
    mem = tf.memory_frame(rows, t0, lanes)
    caches = tf.vllm_caches(rows)
    oll = tf.ollama_frame(rows, t0, lanes)
    kv = tf.kv_frame(rows, t0, lanes)
    devices = tf.gpus(rows)
    if not devices:
        caption = tf.gpu_caption(env)
        if caption is None:
            caption = "GPU memory: " + (
                "waiting for the first NVML reading" if active else "no readings were recorded"
            )
        out.captions.append(caption)
    for gpu in devices:
        procs = mem[(mem["gpu"] == gpu.index) & (mem["kind"] == "process")]
        engines = set(procs["engine"])
        reservations = []
        budget = None
        vllm_lane = tf.lane_for_engine("vllm", lanes)
        if "vllm" in engines:
            for cache in caches.values():
                res = tf.vllm_reservation(cache, gpu, tf.lane_by_idx(lanes, cache.lane_idx))
                if res is not None:
                    reservations.append(res)
                    budget = budget or res["gib"]
        total_gib = gpu.total_bytes / tf.GIB if gpu.total_bytes else None
        phases = tf.engine_phases(mem[mem["gpu"] == gpu.index], total_gib, budget)
        notes = memory_notes(
            [c for c in caches.values() if vllm_lane is None or c.lane_idx == vllm_lane.idx],
            engines,
            oll,
        )
        fig = gpu_memory_figure(
            mem, gpu, colors, spans, phases, reservations, notes, end_s, uirevision
        )
        out.figures.append((f"gpu{gpu.index}", fig, True))
    if not kv.empty:
        capacity = None
        tokens = [c.kv_tokens for c in caches.values() if c.kv_tokens]
        if len(tokens) == 1:
            capacity = f"{tokens[0]:,} tokens"
        out.figures.append(
            ("kv", kv_cache_figure(kv, colors, spans, end_s, capacity, uirevision), False)
        )
        out.figures.append(("queue", queue_figure(kv, colors, spans, end_s, uirevision), False))
    if not oll.empty:
        out.figures.append(("ollama", ollama_figure(oll, colors, spans, end_s, uirevision), False))
    seen = set(kv["lane_idx"]) | set(oll["lane_idx"].dropna().astype(int))
    for lane in lanes:
        if lane.kind not in ("vllm", "ollama") or lane.idx in seen:
            continue
        path = "/metrics" if lane.kind == "vllm" else "/api/ps"
        status = _status_line(env, f"{lane.idx}{path}")
        source = "vLLM /metrics" if lane.kind == "vllm" else "Ollama /api/ps"
        if status:
            out.captions.append(f"{source} of {lane.name}: {status}")
        elif not active:
            out.captions.append(f"{source} of {lane.name}: no readings were recorded")
    return out
