"""Plotly figure builders: data in, go.Figure out. No Streamlit here.

Every figure has a title, axis titles with units and a legend, reads on a white
background in a screenshot, and is sized for two per row on a 1600×900 screen. Each
lane has ONE colour, from `lane_colors`, in every chart (and in the pages' text
swatches through `lane_color_name`), so "the orange one" means the same lane
everywhere. Point counts are bounded (`MAX_POINTS`), so a long run stays responsive.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

# Okabe–Ito, the colour-blind-safe palette, in an order where neighbours differ in both
# hue and lightness; its yellow is left out (unreadable on white).
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#555555",  # dark grey
    "#000000",  # black
)
# The Streamlit colour name whose hex .streamlit/config.toml sets to the same palette
# entry, for coloured text swatches (":blue[■]"); None where Streamlit has no slot.
STREAMLIT_COLOR_NAMES: tuple[str | None, ...] = (
    "blue",
    "orange",
    "green",
    "red",
    "violet",
    None,
    "gray",
    None,
)

FONT = "Inter, 'Source Sans Pro', 'Segoe UI', Helvetica, Arial, sans-serif"
HEIGHT = 400  # px: two rows of charts fit a 900 px screen under the KPI tiles
MAX_POINTS = 5_000  # per figure; beyond this, points are thinned evenly
BOX_POINTS_ALL = 150  # per box: up to this many, every request is drawn beside its box

CONCURRENCY_TITLE = "Concurrency (requests in flight)"
E2E_TITLE = "E2E latency (ms)"
TTFT_TITLE = "TTFT (ms)"
TPOT_TITLE = "TPOT (ms per token)"
TOKS_TITLE = "Tokens/s per request (tok/s)"
THROUGHPUT_TITLE = "Output throughput (tok/s)"
TIME_TITLE = "Time since run start (s)"
# Level labels on a time axis: about how wide a figure's plot area is (two per row on a
# 1600 px screen) and a label's glyphs, to tell when two labels would overprint.
PLOT_WIDTH_PX = 560
LABEL_CHAR_PX = 7.0
LABEL_ROW_PX = 15  # one row of labels below the other, from the plot's top edge
LABEL_DEPTH = 3  # rows per lane at most: past that, labels may touch


def lane_colors(lane_names: Sequence[str]) -> dict[str, str]:
    """One colour per lane, by lane order: the same lane gets the same colour in every
    chart of a run. Past the palette's length colours repeat (a run rarely has 9 lanes).
    """
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(lane_names)}


def lane_color_name(lane_idx: int) -> str:
    """The Streamlit colour name matching lane `lane_idx`'s chart colour ("gray" if none)."""
    return STREAMLIT_COLOR_NAMES[lane_idx % len(PALETTE)] or "gray"


def _color(colors: Mapping[str, str], lane: str) -> str:
    return colors.get(lane, PALETTE[-2])


def downsample(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most `max_points` rows, taken evenly in order (deterministic, so a redraw
    does not make points jump); failed requests are always kept."""
    if len(frame) <= max_points:
        return frame
    failed = frame[frame["failed"]] if "failed" in frame else frame.iloc[0:0]
    rest = frame.drop(failed.index)
    room = max(max_points - len(failed), 1)
    step = -(-len(rest) // room)  # ceiling division
    kept = pd.concat([rest.iloc[::step], failed.iloc[:max_points]])
    return kept.sort_index()


def base_figure(
    title: str,
    x_title: str,
    y_title: str,
    subtitle: str | None = None,
    uirevision: str | None = None,
    height: int = HEIGHT,
) -> go.Figure:
    """An empty figure in the dashboard's style: white, titled, legend on top."""
    title_spec: dict[str, Any] = {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 17}}
    if subtitle:
        title_spec["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555555"}}
    # One layout dict, validated once: update_layout/update_xaxes call by call, with the
    # template looked up by name each time, took ~35 ms a figure (six a redraw).
    layout = {
        "template": copy.deepcopy(_white_template()),
        "title": title_spec,
        "height": height,
        "font": {"family": FONT, "size": 13, "color": "#222222"},
        # Legend under the x-axis title, pinned to the figure's bottom edge, so it never
        # collides with the title and subtitle however long the lane names are.
        "margin": {"l": 70, "r": 24, "t": 84 if subtitle else 60, "b": 112},
        "legend": {
            "orientation": "h",
            "x": 0.0,
            "xanchor": "left",
            "y": 0.0,
            "yref": "container",
            "yanchor": "bottom",
            "font": {"size": 12},
            "bgcolor": "rgba(255,255,255,0)",
        },
        "showlegend": True,
        "hoverlabel": {"font": {"family": FONT}},
        # Keeps zoom and legend toggles across the live view's redraws of one run.
        "uirevision": uirevision,
        "xaxis": {
            "title": {"text": x_title},
            "showline": True,
            "linecolor": "#888888",
            "zeroline": False,
        },
        "yaxis": {
            "title": {"text": y_title},
            "showline": True,
            "linecolor": "#888888",
            "rangemode": "tozero",
        },
    }
    return go.Figure(layout=layout)


@functools.cache
def _white_template() -> dict[str, Any]:
    """plotly_white's layout and its defaults for the trace types drawn here (Scatter,
    Box): the defaults for twenty other types cost 4 ms of validation and 4 KB a figure."""
    full = pio.templates["plotly_white"].to_plotly_json()
    kept = {k: v for k, v in full.get("data", {}).items() if k in ("scatter", "box")}
    return {"layout": full["layout"], "data": kept}


def _no_data(fig: go.Figure, text: str = "No measured requests yet") -> go.Figure:
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 14, "color": "#777777"},
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def _shown_note(shown: int, total: int) -> str:
    return f" Showing {shown:,} of {total:,} requests." if shown < total else ""


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
        + _shown_note(len(shown), total)
    )
    fig = base_figure(
        "E2E latency of each request over time", TIME_TITLE, E2E_TITLE, subtitle, uirevision
    )
    add_level_bands(fig, spans, colors)
    _whole_run_axis(fig, spans, shown)
    if shown.empty:
        return _no_data(fig) if not spans else fig
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
                    "color": _color(colors, lane),
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
                    marker={"color": _color(colors, lane), "size": 10, "symbol": "x"},
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
    note = _shown_note(len(shown), total)
    fig = base_figure(
        title, CONCURRENCY_TITLE, y_title, ((subtitle or "") + note) or None, uirevision
    )
    levels = list(concurrency_order) or sorted(shown["concurrency"].unique().tolist())
    levels += sorted(set(shown["concurrency"].tolist()) - set(levels))
    categories = [str(c) for c in levels]
    fig.update_layout(boxmode="group", boxgap=0.25, boxgroupgap=0.15)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=categories)
    if shown.empty:
        return _no_data(fig)
    for lane in colors:
        mine = shown[shown["lane"] == lane]
        if mine.empty:
            continue
        per_box = mine.groupby("concurrency").size().max()
        fig.add_trace(
            go.Box(
                x=mine["concurrency"].astype(str),
                y=mine[metric],
                name=lane,
                legendgroup=lane,
                marker={"color": _color(colors, lane), "size": 5, "opacity": 0.7},
                line={"color": _color(colors, lane), "width": 1.6},
                fillcolor=_fill(_color(colors, lane)),
                boxpoints="all" if per_box <= BOX_POINTS_ALL else "outliers",
                jitter=0.35,
                pointpos=0,
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>concurrency %{x}<br>%{y:.1f}<extra></extra>"
                ),
            )
        )
    return fig


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
    fig = base_figure(
        "Output throughput vs concurrency",
        CONCURRENCY_TITLE,
        THROUGHPUT_TITLE,
        "All output tokens of a level ÷ its duration. Higher is better.",
        uirevision,
    )
    data = levels[levels["out_tok_per_s"].notna()] if not levels.empty else levels
    if data.empty:
        return _no_data(fig, "No finished level yet")
    concurrency_axis(fig, sorted({int(c) for c in data["concurrency"]}))
    for lane in colors:
        mine = data[data["lane"] == lane].sort_values("concurrency")
        if mine.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=mine["concurrency"],
                y=mine["out_tok_per_s"],
                mode="lines+markers",
                name=lane,
                legendgroup=lane,
                line={"color": _color(colors, lane), "width": 2.5},
                marker={"color": _color(colors, lane), "size": 9},
                customdata=mine[["req_per_s", "ttft_p50_ms", "e2el_p50_ms"]].to_numpy(),
                hovertemplate=(
                    "<b>%{fullData.name}</b><br>concurrency %{x}<br>%{y:.1f} tok/s"
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
    """Each lane's levels as bands in its colour, labelled "c=5" (the latency timeline and
    the telemetry charts share them, so a level reads the same everywhere).

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
        color = _color(colors, span["lane"])
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
        text = f"c={span['concurrency']}"
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
                "text": f"c={span['concurrency']}",
                "font": {"size": 11, "color": "#555555"},
            }
            label["annotation_position"] = "top left"
        fig.add_vrect(
            x0=span["start_s"],
            x1=span["end_s"],
            fillcolor=_color(colors, span["lane"]),
            opacity=0.06 if i % 2 == 0 else 0.11,
            line_width=0,
            layer="below",
            **label,
            **where,
        )
