"""The Results page's tables: per-level summary, server timings, lanes and settings, with
the captions that say where the token counts and memory figures came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from lib import charts, store
from lib.analysis import frames, results, telemetry_frames
from lib.app.answers import answers_section, quality_section
from lib.app.checks_section import checks_section
from lib.app.formatting import dashed, esc_md, fmt_num
from lib.app.session import db_key
from lib.app.telemetry_section import peak_memory_column
from lib.core.load_pattern import RATE
from lib.load import jobs


@st.cache_data(max_entries=8, show_spinner=False)
def _document(db: str, run_id: str, version: float | None) -> dict[str, Any]:
    # `version` (finished_at) makes a re-finished run read anew; finished runs never change.
    return results.run_document(db, run_id)


# In reading order: the headline figures first, so a narrow screen cuts off the least.
SUMMARY_COLUMNS = {
    "lane": st.column_config.TextColumn("Lane", width="medium", pinned=True),
    "concurrency": st.column_config.NumberColumn("Concurrency", format="%d"),
    "out_tok_per_s": st.column_config.NumberColumn("Output throughput (tok/s)", format="%.1f"),
    "req_per_s": st.column_config.NumberColumn("Request rate (req/s)", format="%.2f"),
    "ttft_p50_ms": st.column_config.NumberColumn("TTFT p50 (ms)", format="%.0f"),
    "ttft_p99_ms": st.column_config.NumberColumn("TTFT p99 (ms)", format="%.0f"),
    "e2el_p50_ms": st.column_config.NumberColumn("E2E p50 (ms)", format="%.0f"),
    "e2el_p99_ms": st.column_config.NumberColumn("E2E p99 (ms)", format="%.0f"),
    "tpot_p50_ms": st.column_config.NumberColumn("TPOT p50 (ms)", format="%.1f"),
    "tok_per_s_p50": st.column_config.NumberColumn("Tokens/s p50 (tok/s)", format="%.1f"),
    "completed": st.column_config.NumberColumn("Completed", format="%d"),
    "failed": st.column_config.NumberColumn("Failed", format="%d"),
    "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.1f"),
}


# Client TTFT beside the server's queue: the queue is where Ollama's TTFT goes.
SERVER_COLUMNS = {
    "lane": st.column_config.TextColumn("Lane", width="medium", pinned=True),
    "concurrency": st.column_config.NumberColumn("Concurrency", format="%d"),
    "client_ttft_p50_ms": st.column_config.NumberColumn("Client TTFT p50 (ms)", format="%.0f"),
    "server_queue_ms": st.column_config.NumberColumn("Server queue (ms)", format="%.0f"),
    "server_load_ms": st.column_config.NumberColumn("Server load (ms)", format="%.0f"),
    "server_prompt_eval_ms": st.column_config.NumberColumn(
        "Server prompt eval (ms)", format="%.0f"
    ),
    "client_e2el_p50_ms": st.column_config.NumberColumn("Client E2E p50 (ms)", format="%.0f"),
    "server_eval_ms": st.column_config.NumberColumn("Server eval (ms)", format="%.0f"),
    "client_tok_per_s_p50": st.column_config.NumberColumn(
        "Client tokens/s p50 (tok/s)", format="%.1f"
    ),
    "server_eval_tokens_per_s": st.column_config.NumberColumn(
        "Server eval rate (tok/s)", format="%.1f"
    ),
}


LANE_COLUMNS = {
    "lane": st.column_config.TextColumn("Lane", width="medium", pinned=True),
    "engine": st.column_config.TextColumn("Engine"),
    "version": st.column_config.TextColumn("Version"),
    "api": st.column_config.TextColumn("API"),
    "base_url": st.column_config.TextColumn("URL"),
    "model": st.column_config.TextColumn("Model"),
    "quantization": st.column_config.TextColumn("Quantization"),
    "parameter_size": st.column_config.TextColumn("Parameters"),
    # Text: a lane whose engine reported no context length shows "–", not "None".
    "context_length": st.column_config.TextColumn("Context length (tokens)", alignment="right"),
    "digest": st.column_config.TextColumn("Digest / root"),
}


SETTING_COLUMNS = {
    "setting": st.column_config.TextColumn("Setting", width="medium"),
    "value": st.column_config.TextColumn("Value", width="large"),
}


RATE_COLUMN = st.column_config.TextColumn("Requested rate", help="Open loop: arrivals per second")


def _level_labels(doc: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
    """Each row's level as its load label ("2 req/s"), by lane name and level key."""
    labels = {
        (lane["name"], lv["concurrency"]): lv.get("load_label")
        for lane in doc["lanes"]
        for lv in lane["levels"]
    }
    return [labels.get(k, "") for k in zip(frame["lane"], frame["concurrency"], strict=True)]


def finished_document(run_id: str) -> dict[str, Any] | None:
    """The run's document once it has ended (cached per run); None while it runs."""
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
    if run is None or run["status"] in jobs.ACTIVE:
        return None
    return _document(db_key(), run_id, run.get("finished_at"))


def styled_lanes(frame: pd.DataFrame, colors: Mapping[str, str]) -> Any:
    """The lane column in its lane's colour, so tables read like the charts; text
    columns with "–" where a value is missing (see dashed)."""
    frame = dashed(frame)
    if frame.empty or "lane" not in frame:
        return frame
    # The Styler's cell texts too (a number column's NaN would read "nan" there).
    return frame.style.format(na_rep="–").map(
        lambda v: f"color: {colors.get(v, '#222222')}; font-weight: 600", subset=["lane"]
    )


def _token_source_caption(doc: Mapping[str, Any]) -> None:
    """Say which lanes' token counts are not the server's own count of what it generated."""
    notes = {"server-tokenizer": [], "none": []}
    for lane in doc["lanes"]:
        # Answered requests only: a timed-out request has no count from any server.
        sources = {
            r.get("token_source")
            for lv in lane["levels"]
            for r in lv["requests"]
            if not r.get("error")
        }
        for source, names in notes.items():
            if source in sources:
                names.append(esc_md(lane["name"]))
    if notes["server-tokenizer"]:
        st.caption(
            "Token counts of "
            + ", ".join(notes["server-tokenizer"])
            + " are the server's tokenizer run over the answer text (its stream reports no"
            " usage): close to, not exactly, the tokens it generated."
        )
    if notes["none"]:
        st.caption("No token counts from " + ", ".join(notes["none"]) + ": its rates are left out.")


def results_details(run_id: str) -> None:
    """Checks of the run's numbers, summary table, quality, server timings, settings and
    answers of a finished run."""
    doc = finished_document(run_id)
    if doc is None:
        st.caption("The summary table and the answers appear here when the run ends.")
        return
    names = [lane["name"] for lane in doc["lanes"]]
    colors = charts.lane_colors(names)
    # Before the figures: whether they can be read as what their names say.
    checks_section(doc)
    summary = frames.with_peak_memory(frames.summary_frame(doc), doc).drop(columns=["lane_idx"])
    columns = dict(SUMMARY_COLUMNS)
    order = list(columns)
    rate = bool((summary["load_mode"] == RATE).any())
    # A rate run's levels by their requested rate: their keys only number them.
    st.markdown(f"#### Summary per lane and {'request rate' if rate else 'concurrency'}")
    if rate:
        order[order.index("concurrency")] = "load_label"
        columns["load_label"] = RATE_COLUMN
    # Shown as text: a number column draws a missing value as "None", and "–" with the
    # column's help saying why is what the rest of the page uses.
    summary["peak_gpu_mem"] = [fmt_num(v, 1) for v in summary["peak_gpu_mem_gib"]]
    order.insert(order.index("out_tok_per_s") + 1, "peak_gpu_mem")
    columns["peak_gpu_mem"] = peak_memory_column(doc)
    st.dataframe(
        styled_lanes(summary, colors),
        column_config=columns,
        column_order=order,
        hide_index=True,
        key=f"summary-{run_id}",
    )
    _peak_memory_caption(summary, doc)
    _token_source_caption(doc)
    quality_section(doc, colors)
    server = frames.server_timings_frame(doc)
    if rate and not server.empty:
        server["concurrency"] = _level_labels(doc, server)
    if not server.empty:
        st.markdown("#### Engine-side timings (Ollama) beside the client's view")
        st.caption("Medians per level. Queue ≈ total − load − prompt eval − eval.")
        st.dataframe(
            styled_lanes(server, colors),
            column_config=SERVER_COLUMNS | ({"concurrency": RATE_COLUMN} if rate else {}),
            column_order=list(SERVER_COLUMNS),
            hide_index=True,
        )
    st.markdown("#### Lanes: engine and model")
    lane_info = frames.lane_info_frame(doc)
    lane_info["context_length"] = [fmt_num(v) for v in lane_info["context_length"]]
    st.dataframe(styled_lanes(lane_info, colors), hide_index=True, column_config=LANE_COLUMNS)
    st.markdown("#### Run settings, hardware and version")
    settings = frames.settings_frame(doc)
    half = (len(settings) + 1) // 2
    left, right = st.columns(2)
    for col, part in ((left, settings.iloc[:half]), (right, settings.iloc[half:])):
        col.dataframe(part, hide_index=True, height="content", column_config=SETTING_COLUMNS)
    answers_section(doc, run_id)


def _peak_memory_caption(summary: pd.DataFrame, doc: Mapping[str, Any]) -> None:
    """Under the summary: what the peak-memory column measured per lane, or why not."""
    if summary.empty:
        return
    per_lane = summary.drop_duplicates("lane")[["lane", "peak_gpu_mem_source"]]
    sources = {s for s in per_lane["peak_gpu_mem_source"] if s}
    why = telemetry_frames.gpu_caption(doc.get("environment") or {}) or ""
    why = why.removeprefix("GPU memory: ") or "no GPU reading"
    if not sources:
        text = f"Peak GPU memory: – for every lane; {why}."
    elif len(sources) == 1 and per_lane["peak_gpu_mem_source"].all():
        text = f"Peak GPU memory per lane, from {sources.pop()}."
    else:
        parts = [f"{r.lane}: {r.peak_gpu_mem_source or f'–, {why}'}" for r in per_lane.itertuples()]
        text = "Peak GPU memory per lane, from " + "; ".join(parts) + "."
    st.caption(esc_md(text))
