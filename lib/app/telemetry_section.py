"""Telemetry beside the run: memory over time (vLLM's KV-cache reservation made visible),
KV-cache usage, Ollama's loaded models, and the hardware they ran on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from lib import charts, store
from lib.analysis import frames, telemetry_frames
from lib.app.chart_grid import plot_figure
from lib.app.formatting import esc_md
from lib.app.session import db_key
from lib.charts import telemetry as charts_telemetry


@st.cache_resource(max_entries=16, show_spinner=False)
def sample_log(db: str, run_id: str) -> telemetry_frames.SampleLog:
    # One per (store, run), like the request log: each redraw reads only new samples.
    return telemetry_frames.SampleLog(run_id)


def telemetry_section(
    run: Mapping[str, Any],
    lanes: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
    t0: float | None,
    where: str,
    active: bool,
) -> None:
    """GPU memory per GPU, vLLM's KV cache and queue, Ollama's loaded models, on the
    run's time axis; drawn inside the live fragment, so it updates while the run goes on.
    Where a source gave nothing (no NVIDIA GPU, an endpoint without /metrics) a caption
    says why instead of an empty chart."""
    if t0 is None:  # not started yet: nothing sampled
        return
    run_id = run["run_id"]
    log = sample_log(db_key(), run_id)
    with store.opened() as conn:
        log.refresh(conn)
    out = telemetry_figures(run, lanes, spans, t0, active, log)
    if out is not None:
        plot_telemetry(out.figures, out.captions, run_id, where)


def telemetry_figures(
    run: Mapping[str, Any],
    lanes: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
    t0: float | None,
    active: bool,
    log: telemetry_frames.SampleLog,
) -> charts_telemetry.TelemetryCharts | None:
    """telemetry_section's figures and captions (None before the run started)."""
    if t0 is None:
        return None
    names = frames.lane_names(run, lanes)
    finished = run.get("finished_at")
    return charts_telemetry.telemetry_charts(
        log.rows(),
        run.get("env") or {},
        telemetry_frames.lane_refs(lanes),
        spans,
        t0,
        charts.lane_colors(names),
        end_s=finished - t0 if finished and not active else None,
        active=active,
        uirevision=run["run_id"],
    )


def plot_telemetry(
    figures: Sequence[tuple[str, Any, bool]], captions: Sequence[str], run_id: str, where: str
) -> None:
    st.markdown("#### Memory and engine telemetry")
    for caption in captions:
        st.caption(esc_md(caption))
    half = [(key, fig) for key, fig, wide in figures if not wide]
    for key, fig, wide in figures:
        if wide:
            plot_figure(fig, f"{where}-telemetry-{key}-{run_id}")
    for start in range(0, len(half), 2):
        for col, (key, fig) in zip(st.columns(2), half[start : start + 2], strict=False):
            with col:
                plot_figure(fig, f"{where}-telemetry-{key}-{run_id}")


def peak_memory_column(doc: Mapping[str, Any]) -> Any:
    """The summary's peak-memory column, its help naming the sources and why one is '–'."""
    why = telemetry_frames.gpu_unavailable_reason(doc.get("environment") or {})
    missing = f" – : no GPU reading ({why})." if why else " – : no GPU reading for the lane."
    return st.column_config.TextColumn(
        "Peak GPU memory (GiB)",
        alignment="right",
        help=(
            "Most GPU memory the lane's engine held while the lane ran (the same on each of"
            " its levels): NVML memory of its engine's processes, else Ollama's size_vram,"
            " else the whole GPU." + missing
        ),
    )
