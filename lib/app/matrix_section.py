"""The Results page's "Variants side by side": for a matrix run (lanes whose engines
servescope started from recipes), one row per cell with the best of each column
highlighted, the capacity at the page's latency targets, the bar charts per metric,
start-up and peak memory, each engine's memory from its first second, the memory rows,
and for a cell that failed its reason and its log's last lines.

The figures come from lib/analysis/matrix_frames.py over the cached run document
(results_tables.finished_document); the targets are the ones the page's "Latency
targets and capacity" inputs hold (lib/app/slo_section.py), read from session state,
else the run's own. Cell names and log lines are untrusted: escaped for markdown, logs
shown with st.code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from lib import charts
from lib.analysis import matrix_frames as mf
from lib.analysis.load_levels import judge
from lib.app import slo_section
from lib.app.chart_grid import plot_figure, plot_grid
from lib.app.formatting import esc_md
from lib.app.results_tables import finished_document
from lib.charts import matrix as matrix_charts
from lib.core.slo import DEFAULT_TARGET, Slo

TITLE = "Variants side by side"
BEST_STYLE = "font-weight: 700; background-color: #e6f4ea; color: #0b5e28"
FAILED_STYLE = "color: #b3261e; font-weight: 600"
HIDDEN = ("lane_idx", "error", "capacity_reason")


def page_slo(document: Mapping[str, Any], run_id: str) -> Slo | None:
    """The targets the page judges the run by: the "Latency targets and capacity" inputs'
    values (their widget state, else what they saved, else their defaults), while the
    section is open; None when it is closed or every limit is off."""
    had_slo = bool((document.get("settings") or {}).get("slo"))
    state = st.session_state
    if not had_slo and not state.get(slo_section.key("open", run_id)):
        return None
    saved = state.get(slo_section.key("saved", run_id)) or {}
    start = slo_section.defaults(document)
    values: dict[str, float | None] = {}
    for metric, _, _ in slo_section.LIMITS:
        widget = slo_section.key(metric, run_id)
        value = state[widget] if widget in state else saved.get(metric, start[metric])
        values[metric] = float(value) if value else None
    widget = slo_section.key("target", run_id)
    if widget in state:
        share = float(state[widget]) / 100.0
    elif saved.get("target") is not None:
        share = float(saved["target"]) / 100.0
    else:
        share = float(start["target"] or DEFAULT_TARGET)
    slo = Slo(values["ttft_ms"], values["tpot_ms"], values["e2el_ms"], share)
    return None if slo.is_empty() else slo


def judged_document(document: Mapping[str, Any], slo: Slo | None) -> dict[str, Any]:
    """The document judged against `slo`; with none, without any verdict (the targets
    were turned off on the page, whatever the run had)."""
    search = ((document.get("settings") or {}).get("capacity") or {}).get("mode")
    return judge(document, slo, search)


def shown_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in HIDDEN]


def styled_table(frame: pd.DataFrame, colors: Mapping[str, str]) -> Any:
    """matrix_frame as the table shows it (matrix_frames.cell_texts): each cell's name in
    its lane's colour, a failed cell's state in red, the best of each column in bold on
    green (matrix_frames.winners)."""
    texts = mf.cell_texts(frame)[shown_columns(frame)]
    best = mf.winners(frame)

    def style(column: pd.Series) -> list[str]:
        name = str(column.name)
        out = []
        for i in column.index:
            cell = str(frame.loc[i, "cell"])
            if name == "cell":
                out.append(f"color: {colors.get(cell, '#222222')}; font-weight: 600")
            elif name == "state" and frame.loc[i, "state"] == mf.FAILED:
                out.append(FAILED_STYLE)
            elif best.get(name) == cell:
                out.append(BEST_STYLE)
            else:
                out.append("")
        return out

    return texts.style.apply(style, axis=0)


def column_config(frame: pd.DataFrame) -> dict[str, Any]:
    """Each shown column's header (matrix_frames.column_label), numbers aligned right."""
    out: dict[str, Any] = {}
    for column in shown_columns(frame):
        metric = mf.column_metric(column)
        label = mf.column_label(column)
        if column == "cell":
            out[column] = st.column_config.TextColumn(label, width="medium", pinned=True)
        elif metric is None:
            out[column] = st.column_config.TextColumn(label)
        else:
            better = "higher" if metric.better == mf.MAX else "lower"
            out[column] = st.column_config.TextColumn(
                label, alignment="right", help=f"{metric.title()}: {better} is better."
            )
    return out


def matrix_section(run_id: str) -> None:
    """The section for a finished matrix run (the live view draws it under the verdict
    once the run has ended; while it runs, the lane tiles show each engine's state);
    nothing for a run of plain endpoints."""
    document = finished_document(run_id)
    if document is None:
        return
    if not mf.is_matrix(document):
        return
    st.subheader(TITLE)
    slo = page_slo(document, run_id)
    doc = judged_document(document, slo)
    frame = mf.matrix_frame(doc)
    names = [str(lane["name"]) for lane in doc["lanes"]]
    colors = charts.lane_colors(names)
    if frame.empty:
        st.info("No cell in this run.")
        return
    st.dataframe(
        styled_table(frame, colors),
        column_config=column_config(frame),
        column_order=shown_columns(frame),
        hide_index=True,
        key=f"matrix-table-{run_id}",
    )
    st.caption(_table_caption(frame, slo))
    _failed_cells(doc)
    _memory_rows(doc)
    figures = matrix_charts.matrix_figures(frame, mf.memory_frame(doc), colors, run_id)
    for key, fig, wide in figures:
        if wide:
            plot_figure(fig, f"matrix-{key}-{run_id}")
    plot_grid([(key, fig) for key, fig, wide in figures if not wide], run_id, "matrix")


def _table_caption(frame: pd.DataFrame, slo: Slo | None) -> str:
    text = (
        "One row per cell: each engine variant was started, measured and stopped in turn."
        " Figures at each load are the level's medians (p50); output throughput is all"
        " users together. The best of each column is in bold on green; failed cells are"
        " left out of that."
    )
    if slo is not None:
        text += f" SLO columns and capacity judge every cell by {slo.describe()}."
    elif "capacity_reason" not in frame:
        text += " Open the latency targets below to see each cell's capacity at them."
    return esc_md(text)


def _failed_cells(doc: Mapping[str, Any]) -> None:
    for item in mf.failed_cells(doc):
        st.error(f"**{esc_md(item['cell'])}** failed: {esc_md(item['reason'])}")
        with st.expander(f"Last lines of {item['cell']}'s engine log"):
            st.code("\n".join(item["log_tail"]) or "(the log is empty)", language=None)
            if item["log"]:
                st.caption(f"The whole log: {esc_md(item['log'])}")


def _memory_rows(doc: Mapping[str, Any]) -> None:
    st.markdown("##### Memory from the engine's first second (MiB)")
    for item in mf.memory_rows(doc):
        swatch = f":{charts.lane_color_name(item['lane_idx'])}[■]"
        st.markdown(f"{swatch} **{esc_md(item['cell'])}**: {esc_md(item['row'])}")
        if item["gpu_row"]:
            st.caption(f"On the GPU: {esc_md(item['gpu_row'])}")
