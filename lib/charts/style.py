"""The charts' shared style: the lane palette, sizes, axis titles, the point limit, and
the empty figure every chart starts from.

Each lane has ONE colour, from `lane_colors`, in every chart (and in the pages' text
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


def lane_colors(lane_names: Sequence[str]) -> dict[str, str]:
    """One colour per lane, by lane order: the same lane gets the same colour in every
    chart of a run. Past the palette's length colours repeat (a run rarely has 9 lanes).
    """
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(lane_names)}


def lane_color_name(lane_idx: int) -> str:
    """The Streamlit colour name matching lane `lane_idx`'s chart colour ("gray" if none)."""
    return STREAMLIT_COLOR_NAMES[lane_idx % len(PALETTE)] or "gray"


def lane_color(colors: Mapping[str, str], lane: str) -> str:
    """The lane's colour in `colors`; dark grey for a lane it does not name."""
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


def no_data(fig: go.Figure, text: str = "No measured requests yet") -> go.Figure:
    """The figure with `text` in its middle and no tick labels: nothing to draw yet."""
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


def shown_note(shown: int, total: int) -> str:
    """ " Showing 5,000 of 12,000 requests." when points were thinned, else ""."""
    return f" Showing {shown:,} of {total:,} requests." if shown < total else ""
