"""Figures of the matrix: engine variants ("cells") side by side, from the frames of
lib/analysis/matrix_frames.py.

- `metric_bars`: one metric at each load, a bar per cell ("Output throughput by cell
  (tok/s)"), each bar's value written on it and the best cell of each load starred.
- `startup_memory`: how long each cell took to be ready, beside its peak memory (and
  its peak GPU memory where it had one).
- `memory_phases`: each cell's memory from its engine's first second, on one axis of
  seconds since that engine started, with its phases marked (weights loaded, KV cache
  reserved, ready, ...).

Each cell keeps its lane's colour (`lane_colors` over the run's lanes). Cell names are
user text: drawn through chart_text, never inside a hover template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from lib.analysis import matrix_frames as mf
from lib.analysis.telemetry_frames import thin
from lib.charts.load_axis import LOAD_TITLES
from lib.charts.style import MAX_POINTS, base_figure, lane_color, no_data
from lib.charts.telemetry_marks import chart_text, phase_arrow
from lib.core.load_pattern import CONCURRENCY, RATE
from lib.launch import phases

MEMORY_TITLE = "Engine memory from its first second (MiB)"
SINCE_START_TITLE = "Seconds since the engine's process started (s)"
RSS_TITLE = "Resident memory (MiB)"
MEMORY_HEIGHT = 480  # px; the memory story takes a full row and carries labels
NO_CELLS = "No cell measured anything"
# A phase's label on the chart: short, so the labels of a few cells fit side by side.
PHASE_LABELS = {
    phases.STARTED: "start",
    phases.WEIGHTS: "weights",
    phases.KV_CACHE: "KV cache",
    phases.READY: "ready",
    phases.FIRST_REQUEST: "1st request",
    phases.IDLE: "idle",
    phases.STOPPED: "stop",
}
PHASE_SYMBOLS = {
    phases.STARTED: "circle-open",
    phases.WEIGHTS: "square",
    phases.KV_CACHE: "diamond",
    phases.READY: "star",
    phases.FIRST_REQUEST: "triangle-up",
    phases.IDLE: "triangle-down",
    phases.STOPPED: "x",
}
# Labels written beside the line; the rest are markers with their hover.
LABELLED = (phases.WEIGHTS, phases.KV_CACHE, phases.READY, phases.FIRST_REQUEST)


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["state"] != mf.FAILED] if "state" in frame else frame


def _failed_note(frame: pd.DataFrame) -> str:
    if "state" not in frame:
        return ""
    failed = [chart_text(c) for c in frame.loc[frame["state"] == mf.FAILED, "cell"]]
    return f" Failed, not drawn: {', '.join(failed)}." if failed else ""


def _load_title(labels: Sequence[str]) -> str:
    closed = all(label.startswith("c=") for label in labels)
    return LOAD_TITLES[CONCURRENCY if closed else RATE]


def metric_bars(
    frame: pd.DataFrame,
    metric: str,
    colors: Mapping[str, str],
    uirevision: str | None = None,
) -> go.Figure:
    """One level metric of matrix_frame (e.g. "out_tok_per_s") at each load: x the load,
    a bar per cell in its lane's colour, the value on each bar, ★ on the best of a load."""
    spec = mf.METRICS[metric]
    better = "Higher" if spec.better == mf.MAX else "Lower"
    columns = mf.level_columns(frame, metric) if not frame.empty else []
    labels = [str(mf.split_column(c)[1]) for c in columns]
    fig = base_figure(
        f"{spec.label} by cell ({spec.unit})",
        _load_title(labels),
        spec.title(),
        f"{better} is better. ★ best cell at that load." + _failed_note(frame),
        uirevision,
    )
    ok = _ok(frame) if not frame.empty else frame
    best = mf.winners(frame) if not frame.empty else {}
    drawn = False
    for _, row in ok.iterrows():
        values = [row[c] for c in columns]
        if all(pd.isna(v) for v in values):
            continue
        drawn = True
        name = str(row["cell"])
        stars = ["★ " if best.get(c) == name else "" for c in columns]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[None if pd.isna(v) else float(v) for v in values],
                name=chart_text(name),
                marker={"color": lane_color(colors, name)},
                text=[
                    "" if pd.isna(v) else f"{s}{v:,.{spec.digits}f}"
                    for s, v in zip(stars, values, strict=True)
                ],
                textposition="outside",
                cliponaxis=False,
                customdata=[[chart_text(name)]] * len(labels),
                hovertemplate=(
                    "<b>%{customdata[0]}</b> at %{x}<br>"
                    f"{spec.label} %{{y:,.{spec.digits}f}} {spec.unit}<extra></extra>"
                ),
            )
        )
    if not drawn:
        return no_data(fig, NO_CELLS)
    top = max((y for t in fig.data for y in t.y if y is not None), default=0.0)
    fig.update_layout(barmode="group", bargap=0.25, bargroupgap=0.05)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    fig.update_yaxes(range=[0, max(top, 1e-9) * 1.18])  # room for the values on top
    return fig


def metric_figures(
    frame: pd.DataFrame, colors: Mapping[str, str], uirevision: str | None = None
) -> list[tuple[str, go.Figure]]:
    """A bar chart per level metric the frame holds, by metric key, in METRICS' order."""
    return [
        (m.key, metric_bars(frame, m.key, colors, uirevision))
        for m in mf.LEVEL_METRICS
        if not frame.empty and mf.level_columns(frame, m.key)
    ]


def startup_memory(
    frame: pd.DataFrame, colors: Mapping[str, str], uirevision: str | None = None
) -> go.Figure:
    """Two panels: each cell's start-up to ready (s) and its peak memory (MiB): resident
    memory solid, GPU memory hatched beside it where the cell had a GPU reading."""
    fig = base_figure(
        "Start-up time and peak memory by cell",
        "",
        "Start-up to ready (s)",
        "Lower is better: from the spawn until the engine served its model; the most "
        "memory its processes held." + _failed_note(frame),
        uirevision,
    )
    if frame.empty:
        return no_data(fig, NO_CELLS)
    gpu = "peak_gpu_memory_mib" in frame and frame["peak_gpu_memory_mib"].notna().any()
    fig.update_layout(
        xaxis={"domain": [0.0, 0.42], "type": "category"},
        xaxis2={
            "domain": [0.56, 1.0],
            "anchor": "y2",
            "type": "category",
            "showline": True,
            "linecolor": "#888888",
        },
        yaxis2={
            "anchor": "x2",
            "title": {"text": "Peak memory (MiB)"},
            "showline": True,
            "linecolor": "#888888",
            "rangemode": "tozero",
        },
        barmode="group",
    )
    names = [chart_text(c) for c in frame["cell"]]
    for (_, row), name in zip(frame.iterrows(), names, strict=True):
        cell, color = str(row["cell"]), lane_color(colors, str(row["cell"]))
        failed = row.get("state") == mf.FAILED
        ready = row.get("ready_s")
        fig.add_trace(
            go.Bar(
                x=[name],
                y=[None if pd.isna(ready) else float(ready)],
                name=name,
                legendgroup=cell,
                marker={"color": color},
                text=["failed" if failed else "" if pd.isna(ready) else f"{ready:.1f} s"],
                textposition="outside",
                cliponaxis=False,
                offsetgroup="ready",
                hovertemplate="<b>%{x}</b><br>ready after %{y:.2f} s<extra></extra>",
            )
        )
        peak = row.get("peak_memory_mib")
        fig.add_trace(
            go.Bar(
                x=[name],
                y=[None if pd.isna(peak) else float(peak)],
                name=f"{name} memory",
                legendgroup=cell,
                showlegend=False,
                xaxis="x2",
                yaxis="y2",
                marker={"color": color},
                text=["" if pd.isna(peak) else f"{peak:,.0f}"],
                textposition="outside",
                cliponaxis=False,
                offsetgroup="rss",
                hovertemplate="<b>%{x}</b><br>peak resident memory %{y:,.0f} MiB<extra></extra>",
            )
        )
        if gpu:
            on_gpu = row.get("peak_gpu_memory_mib")
            fig.add_trace(
                go.Bar(
                    x=[name],
                    y=[None if pd.isna(on_gpu) else float(on_gpu)],
                    name=f"{name} GPU memory",
                    legendgroup=cell,
                    showlegend=False,
                    xaxis="x2",
                    yaxis="y2",
                    marker={"color": color, "pattern": {"shape": "/", "fgcolor": "#ffffff"}},
                    text=["" if pd.isna(on_gpu) else f"GPU {on_gpu:,.0f}"],
                    textposition="outside",
                    cliponaxis=False,
                    offsetgroup="gpu",
                    hovertemplate="<b>%{x}</b><br>peak GPU memory %{y:,.0f} MiB<extra></extra>",
                )
            )
    for axis, column in (("yaxis", ["ready_s"]), ("yaxis2", ["peak_memory_mib"])):
        if axis == "yaxis2" and gpu:
            column = [*column, "peak_gpu_memory_mib"]
        top = pd.to_numeric(frame[column].stack(), errors="coerce").max()
        top = 1.0 if pd.isna(top) or top <= 0 else float(top)
        fig.update_layout({axis: {"range": [0, top * 1.18]}})
    if gpu:
        fig.update_layout(
            annotations=[
                *fig.layout.annotations,
                {
                    "text": "solid: resident memory · hatched: GPU memory",
                    "xref": "x2 domain",
                    "yref": "paper",
                    "x": 0.0,
                    "y": 1.02,
                    "showarrow": False,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "font": {"size": 11, "color": "#555555"},
                },
            ]
        )
    return fig


def memory_phases(
    memory: pd.DataFrame,
    colors: Mapping[str, str],
    uirevision: str | None = None,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """Each cell's resident memory (MiB) against seconds since its engine started (a line
    per cell; GPU memory dashed where the cell had some), its phases as markers with a
    short label; hover says the phase, the time and the memory then."""
    fig = base_figure(
        MEMORY_TITLE,
        SINCE_START_TITLE,
        RSS_TITLE,
        "Every cell from its own spawn (0 s): loading the weights, reserving the KV "
        "cache, serving. Dashed: memory on the GPU.",
        uirevision,
        height=MEMORY_HEIGHT,
    )
    if memory.empty:
        return no_data(fig, "No memory reading of any cell")
    # The line runs through the phases too (each holds the memory read when it was
    # noted), but for "stopped": noted once the processes are gone, it reads 0.
    readings = memory[memory["rss_mib"].notna() & (memory["phase"] != phases.STOPPED)]
    readings = readings.sort_values(["lane_idx", "t_s"], kind="stable")
    top = float(pd.concat([memory["rss_mib"], memory["gpu_mib"]]).max())
    top = top if pd.notna(top) and top > 0 else 1.0
    shown = thin(readings, "cell", "rss_mib", max_points)
    span = float(memory["t_s"].max()) if memory["t_s"].notna().any() else 1.0
    labels: list[tuple[float, float, str, str]] = []
    for cell, points in memory.groupby("cell", sort=False):
        cell = str(cell)
        name, color = chart_text(cell), lane_color(colors, cell)
        line = shown[shown["cell"] == cell]
        if not line.empty:
            fig.add_trace(
                go.Scatter(
                    x=line["t_s"],
                    y=line["rss_mib"],
                    mode="lines",
                    name=name,
                    legendgroup=cell,
                    line={"color": color, "width": 2.4, "shape": "hv"},
                    customdata=[[name]] * len(line),
                    hovertemplate=(
                        "<b>%{customdata[0]}</b><br>%{x:.1f} s after start<br>"
                        "%{y:,.0f} MiB resident<extra></extra>"
                    ),
                )
            )
        on_gpu = points[(points["kind"] == "sample") & points["gpu_mib"].notna()]
        if not on_gpu.empty:
            fig.add_trace(
                go.Scatter(
                    x=on_gpu["t_s"],
                    y=on_gpu["gpu_mib"],
                    mode="lines",
                    name=f"{name} GPU",
                    legendgroup=cell,
                    line={"color": color, "width": 2.0, "dash": "dash", "shape": "hv"},
                    customdata=[[name]] * len(on_gpu),
                    hovertemplate=(
                        "<b>%{customdata[0]}</b><br>%{x:.1f} s after start<br>"
                        "%{y:,.0f} MiB on the GPU<extra></extra>"
                    ),
                )
            )
        marks = points[(points["kind"] == "phase") & points["rss_mib"].notna()]
        if not marks.empty:
            marks = marks.sort_values("t_s", kind="stable")
            fig.add_trace(_phase_trace(marks, name, cell, color, line.empty))
            texts = phase_labels(
                [str(p) for p in marks["phase"]],
                marks["t_s"].tolist(),
                marks["rss_mib"].tolist(),
                span * 0.08,
                top * 0.03,
            )
            labels += [
                (float(t), float(y), text, color)
                for t, y, text in zip(marks["t_s"], marks["rss_mib"], texts, strict=True)
                if text
            ]
    if not fig.data:
        return no_data(fig, "No memory reading of any cell")
    # Room above the highest line for the labels that climb over it.
    fig.update_yaxes(range=[0, top * 1.3])
    fig.update_xaxes(rangemode="tozero")
    _add_phase_labels(fig, labels, span)
    return fig


def _add_phase_labels(
    fig: go.Figure, labels: Sequence[tuple[float, float, str, str]], span: float
) -> None:
    """The phase labels as arrows in their cell's colour. Cells start alike, so labels
    bunch: in time order each climbs one step higher than the last (four steps, then
    again), and leans away from the plot's right edge."""
    for i, (t, y, text, color) in enumerate(sorted(labels)):
        right = t < 0.7 * span
        phase_arrow(fig, t, y, text, color, right, i % 4, size=11, rise=(22, 20), boxed=False)


def phase_labels(
    phase_names: Sequence[str],
    times: Sequence[float],
    mibs: Sequence[float],
    gap_s: float,
    close_mib: float,
) -> list[str]:
    """The text beside each phase marker ("" for none): the labelled phases (LABELLED)
    that follow each other within `gap_s` holding about the same memory (within
    `close_mib`) share one label at the last of them, "weights + KV cache + ready: 600–621
    MiB", so a fast start does not print its labels over each other; a step in memory
    keeps its own label."""
    texts = [""] * len(phase_names)
    group: list[int] = []

    def close(members: list[int]) -> None:
        low, high = min(mibs[j] for j in members), max(mibs[j] for j in members)
        amount = f"{low:,.0f}" + (f"–{high:,.0f}" if round(high) != round(low) else "")
        names = " + ".join(PHASE_LABELS[phase_names[j]] for j in members)
        texts[members[-1]] = f"{names}: {amount} MiB"

    for i, phase in enumerate(phase_names):
        if phase not in LABELLED:
            continue
        if group and (
            times[i] - times[group[0]] > gap_s or abs(mibs[i] - mibs[group[0]]) > close_mib
        ):
            close(group)
            group = []
        group.append(i)
    if group:
        close(group)
    return texts


def _phase_trace(marks: pd.DataFrame, name: str, cell: str, color: str, show: bool) -> go.Scatter:
    """A cell's phases as markers (a symbol per phase) on its line; hover names each."""
    phase_names = [str(p) for p in marks["phase"]]
    return go.Scatter(
        x=marks["t_s"],
        y=marks["rss_mib"],
        mode="markers",
        name=f"{name} phases",
        legendgroup=cell,
        showlegend=show,  # with no line to carry the legend entry, the phases do
        marker={
            "color": color,
            "size": 10,
            "symbol": [PHASE_SYMBOLS.get(p, "circle") for p in phase_names],
            "line": {"color": "#ffffff", "width": 1},
        },
        customdata=[[name, chart_text(p)] for p in phase_names],
        hovertemplate=(
            "<b>%{customdata[0]}</b><br>%{customdata[1]}<br>%{x:.2f} s after start<br>"
            "%{y:,.0f} MiB resident<extra></extra>"
        ),
    )


def matrix_figures(
    frame: pd.DataFrame,
    memory: pd.DataFrame,
    colors: Mapping[str, str],
    uirevision: str | None = None,
) -> list[tuple[str, go.Figure, bool]]:
    """Every matrix figure by key, in reading order, with whether it takes a full row:
    the memory story first (wide), then start-up and memory, then a bar chart per metric."""
    out: list[tuple[str, go.Figure, bool]] = [
        ("memory", memory_phases(memory, colors, uirevision), True),
        ("startup", startup_memory(frame, colors, uirevision), False),
    ]
    out += [(key, fig, False) for key, fig in metric_figures(frame, colors, uirevision)]
    return out


__all__ = [
    "MEMORY_TITLE",
    "matrix_figures",
    "memory_phases",
    "metric_bars",
    "metric_figures",
    "startup_memory",
]
