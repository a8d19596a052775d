"""What the telemetry figures share: untrusted text made inert, lane colours with a grey
fallback, the run's start and end marks, the x range, and a stepped line per lane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lib.charts.levels import append_layout
from lib.charts.style import PALETTE

OTHER = PALETTE[-2]  # processes no lane can claim: dark grey, as the run charts' fallback


def chart_text(text: Any) -> str:
    """Text Plotly draws with no markup: lane, model and process names are untrusted
    (Plotly reads <b>, <br>, <a href> in names and annotations)."""
    return str(text).replace("<", "‹").replace(">", "›")


def lane_color(colors: Mapping[str, str], lane: Any) -> str:
    """The lane's colour; dark grey (OTHER) for a process no lane can claim."""
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


def fit_x_range(
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


def lane_lines(
    fig: go.Figure,
    frame: pd.DataFrame,
    column: str,
    colors: Mapping[str, str],
    suffix: str = "",
    dash: str = "solid",
    unit: str = "",
    **where: Any,
) -> None:
    """A stepped line per lane of `column` over the run (`where` picks a subplot)."""
    for lane, points in frame.groupby("lane", sort=False):
        points = points[points[column].notna()]
        if points.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=points["t_s"],
                y=points[column],
                mode="lines",
                line={"color": lane_color(colors, lane), "width": 2.4, "dash": dash, "shape": "hv"},
                name=chart_text(f"{lane}{suffix}"),
                legendgroup=chart_text(lane),
                hovertemplate=(
                    f"<b>%{{fullData.name}}</b><br>%{{x:.1f}} s<br>%{{y:.1f}}{unit}<extra></extra>"
                ),
            ),
            **where,
        )


def phase_arrow(
    fig: go.Figure,
    x: float,
    y: float,
    text: str,
    color: str,
    right: bool,
    step: int,
    *,
    size: int = 12,
    rise: tuple[int, int] = (26, 24),
    boxed: bool = True,
) -> None:
    """A memory phase's label on an arrow in its lane's colour, leaning right (or left
    near the plot's right edge) and ``step`` steps higher than the first, so labels of
    phases that bunch up stack instead of overprinting each other. ``boxed``: an opaque
    framed box; else a see-through one, so the lines under the label stay in sight."""
    base, climb = rise
    fig.add_annotation(
        x=x,
        y=y,
        text=text,
        showarrow=True,
        arrowhead=2,
        arrowsize=1,
        arrowwidth=1.2,
        arrowcolor=color,
        ax=(base + 2) if right else -(base + 2),
        ay=-base - climb * step,
        xanchor="left" if right else "right",
        font={"size": size, "color": color},
        bgcolor="rgba(255,255,255,0.9)" if boxed else "rgba(255,255,255,0.5)",
        **({"bordercolor": color, "borderwidth": 1, "borderpad": 3} if boxed else {"borderpad": 2}),
    )
