"""The grid of run charts (latency, throughput, timeline) two per row, each drawn once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from lib import charts
from lib.analysis import frames


def plot_figure(fig: Any, key: str) -> None:
    # theme=None: our white template, exactly as exported; stable key per run and chart.
    st.plotly_chart(fig, key=key, theme=None, config={"displaylogo": False})


GRID_SIZE = 6


def chart_grid(
    requests: pd.DataFrame,
    levels: pd.DataFrame,
    spans: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    order: Sequence[int],
    run_id: str,
    where: str,
) -> None:
    """Six charts, two per row: the seed finding (timeline, E2E) first."""
    plot_grid(grid_figures(requests, levels, spans, colors, order, run_id), run_id, where)


def grid_figures(
    requests: pd.DataFrame,
    levels: pd.DataFrame,
    spans: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    order: Sequence[int],
    run_id: str,
) -> list[tuple[str, Any]]:
    """chart_grid's figures by key, in reading order (two per row)."""
    rev = run_id  # uirevision: zoom and legend state survive the live redraws
    # The spans name what each level's key stands for: a rate run's charts go by rate.
    loads = frames.level_loads(spans)
    requests, levels = frames.with_loads(requests, loads), frames.with_loads(levels, loads)
    return [
        ("timeline", charts.latency_timeline(requests, colors, spans, rev)),
        ("e2el", charts.e2el_box(requests, colors, order, rev)),
        ("tput", charts.throughput_vs_concurrency(levels, colors, rev)),
        ("ttft", charts.ttft_box(requests, colors, order, rev)),
        ("toks", charts.tokens_per_s_box(requests, colors, order, rev)),
        ("tpot", charts.tpot_box(requests, colors, order, rev)),
    ]


def plot_grid(figures: Sequence[tuple[str, Any]], run_id: str, where: str) -> None:
    for start in range(0, len(figures), 2):
        for col, (key, fig) in zip(st.columns(2), figures[start : start + 2], strict=False):
            with col:
                plot_figure(fig, f"{where}-{key}-{run_id}")
