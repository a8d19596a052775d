"""Plotly figure builders: data in, go.Figure out. No Streamlit here.

Every figure has a title, axis titles with units and a legend, reads on a white
background in a screenshot, and is sized for two per row on a 1600×900 screen. Each
lane has ONE colour, from `lane_colors`, in every chart (and in the pages' text
swatches through `lane_color_name`), so "the orange one" means the same lane
everywhere. Point counts are bounded (`MAX_POINTS`), so a long run stays responsive.

The run charts callers use as `charts.<name>`; the code lives in submodules: style
(palette, sizes, titles, the base figure), levels (level bands, the concurrency axis),
timeline (the latency timeline), distributions (box plots, throughput vs
concurrency), capacity (the Pareto view, latency and goodput against load, over the
load axis of load_axis). telemetry and history hold the telemetry and History page
figures. matrix: a matrix run's cells side by side (bars per metric, start-up and peak
memory, each engine's memory from its first second).
"""

from __future__ import annotations

from lib.charts.capacity import goodput_vs_load, latency_vs_load, pareto
from lib.charts.distributions import (
    distribution_box,
    e2el_box,
    figure_colors,
    throughput_vs_concurrency,
    tokens_per_s_box,
    tpot_box,
    ttft_box,
)
from lib.charts.levels import (
    LABEL_CHAR_PX,
    LABEL_DEPTH,
    LABEL_ROW_PX,
    PLOT_WIDTH_PX,
    add_level_bands,
    append_layout,
    concurrency_axis,
)
from lib.charts.matrix import matrix_figures, memory_phases, metric_bars, startup_memory
from lib.charts.style import (
    BOX_POINTS_ALL,
    CONCURRENCY_TITLE,
    E2E_TITLE,
    FONT,
    HEIGHT,
    MAX_POINTS,
    PALETTE,
    STREAMLIT_COLOR_NAMES,
    THROUGHPUT_TITLE,
    TIME_TITLE,
    TOKS_TITLE,
    TPOT_TITLE,
    TTFT_TITLE,
    base_figure,
    downsample,
    lane_color,
    lane_color_name,
    lane_colors,
    no_data,
)
from lib.charts.timeline import latency_timeline

__all__ = [
    "BOX_POINTS_ALL",
    "CONCURRENCY_TITLE",
    "E2E_TITLE",
    "FONT",
    "HEIGHT",
    "LABEL_CHAR_PX",
    "LABEL_DEPTH",
    "LABEL_ROW_PX",
    "MAX_POINTS",
    "PALETTE",
    "PLOT_WIDTH_PX",
    "STREAMLIT_COLOR_NAMES",
    "THROUGHPUT_TITLE",
    "TIME_TITLE",
    "TOKS_TITLE",
    "TPOT_TITLE",
    "TTFT_TITLE",
    "add_level_bands",
    "append_layout",
    "base_figure",
    "concurrency_axis",
    "distribution_box",
    "downsample",
    "e2el_box",
    "figure_colors",
    "goodput_vs_load",
    "lane_color",
    "lane_color_name",
    "lane_colors",
    "latency_timeline",
    "latency_vs_load",
    "matrix_figures",
    "memory_phases",
    "metric_bars",
    "no_data",
    "pareto",
    "startup_memory",
    "throughput_vs_concurrency",
    "tokens_per_s_box",
    "tpot_box",
    "ttft_box",
]
