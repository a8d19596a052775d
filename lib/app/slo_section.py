"""The Results page's "Latency targets and capacity": TTFT, TPOT and E2E limits and the
share of requests that must meet them, each lane's capacity under them in a sentence,
attainment and goodput per level, and the Pareto, latency and goodput charts.

Changing a target recomputes from the run's stored requests (load_levels.judge over the
cached run document): no run, no store write. The inputs' values live in session state
under keys per run id, so each run keeps its own targets while the page is open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from lib import charts
from lib.analysis import load_frames
from lib.analysis.load_levels import judge
from lib.app.chart_grid import plot_grid
from lib.app.formatting import esc_md
from lib.app.results_tables import finished_document, styled_lanes
from lib.charts import capacity as capacity_charts
from lib.core.slo import DEFAULT_TARGET, Slo

TITLE = "Latency targets and capacity"
DEFAULT_TTFT_MS = 1000.0  # a chat user notices a wait of a second before the first word
# 0 is "off": an emptied number input would come back with its default in the browser
# (only a widget whose default is empty may be emptied), and one set beforehand through
# session state would be drawn empty.
LIMITS = (  # metric, label, help
    ("ttft_ms", "TTFT limit (ms)", "Time to first token. 0 = no TTFT target."),
    (
        "tpot_ms",
        "TPOT limit (ms per token)",
        "Time per output token after the first; 50 ms = 20 tok/s per user. 0 = none.",
    ),
    ("e2el_ms", "E2E limit (ms)", "Whole request, send to last token. 0 = no E2E target."),
)

SLO_COLUMNS = {
    "lane": st.column_config.TextColumn("Lane", width="large", pinned=True),
    "load_label": st.column_config.TextColumn("Load"),
    "attainment_pct": st.column_config.NumberColumn("Within targets (%)", format="%.0f%%"),
    "goodput_req_per_s": st.column_config.NumberColumn("Goodput (req/s)", format="%.2f"),
    "passed": st.column_config.TextColumn("Met"),
}


def key(name: str, run_id: str) -> str:
    """The session-state key of one input for one run."""
    return f"slo-{name}-{run_id}"


def defaults(document: Mapping[str, Any]) -> dict[str, float | None]:
    """The run's own SLO when it had one; else a TTFT limit of a second (twice the
    lowest load's median TTFT when even that is slower), no TPOT or E2E limit, 90%."""
    own = Slo.from_dict((document.get("settings") or {}).get("slo"))
    if own is not None and not own.is_empty():
        limits = {
            m: None if getattr(own, m) is None else float(getattr(own, m)) for m, _, _ in LIMITS
        }
        return {**limits, "target": own.target}
    medians = [
        (lv.get("ttft_ms") or {}).get("p50")
        for lane in document.get("lanes", [])
        for lv in lane.get("levels", [])[:1]
    ]
    slowest = max((m for m in medians if m is not None), default=0.0)
    ttft = DEFAULT_TTFT_MS if 2 * slowest <= DEFAULT_TTFT_MS else _round_up(2 * slowest)
    return {"ttft_ms": ttft, "tpot_ms": None, "e2el_ms": None, "target": DEFAULT_TARGET}


def _round_up(ms: float) -> float:
    """Up to a round limit: 1,200 -> 1,500; 3,100 -> 4,000."""
    step = 10 ** (len(str(int(ms))) - 1)
    for nice in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if ms <= nice * step:
            return float(nice * step)
    return float(ms)


def slo_inputs(document: Mapping[str, Any], run_id: str) -> Slo:
    """The four inputs in a row; their values are the SLO to judge the run by."""
    # Streamlit drops a widget's state when the widget is not drawn (another page, the
    # toggle off); the values kept under "slo-saved-<run>" bring the inputs back as the
    # widgets' `value` (a keyed widget keeps its identity when its value changes).
    saved = st.session_state.get(key("saved", run_id))
    if saved is None:
        start = defaults(document)
        saved = {**start, "target": round(100 * (start["target"] or DEFAULT_TARGET))}
    cols = st.columns(4)
    values: dict[str, float | None] = {}
    for col, (metric, label, help_text) in zip(cols, LIMITS, strict=False):
        limit = col.number_input(
            label,
            min_value=0.0,
            max_value=600_000.0,
            step=50.0 if metric != "tpot_ms" else 5.0,
            value=float(saved[metric] or 0.0),
            format="%g",
            help=help_text,
            key=key(metric, run_id),
        )
        values[metric] = limit or None
        if not limit:
            col.caption("off")
        elif metric == "tpot_ms":
            col.caption(f"≥ {1000.0 / limit:.3g} tok/s per user")
    share = cols[3].slider(
        "Share of requests that must meet them",
        min_value=50,
        max_value=100,
        step=1,
        value=int(saved["target"]),
        format="%d%%",
        key=key("target", run_id),
    )
    st.session_state[key("saved", run_id)] = {**values, "target": share}
    return Slo(values["ttft_ms"], values["tpot_ms"], values["e2el_ms"], share / 100.0)


def slo_section(run_id: str) -> None:
    """The section for a finished run (nothing while it runs: its requests still come).

    A run without targets of its own shows a toggle first, so its page stays as short
    as before unless asked."""
    document = finished_document(run_id)
    if document is None:
        return
    st.markdown(f"#### {TITLE}")
    had_slo = bool((document.get("settings") or {}).get("slo"))
    if not had_slo and not st.toggle(
        "Judge this run against latency targets",
        key=key("open", run_id),
        help="Goodput, the share of requests within the targets, and each lane's capacity.",
    ):
        return
    slo = slo_inputs(document, run_id)
    if slo.is_empty():
        st.info("Set at least one latency limit to see goodput and capacity.")
        return
    search = ((document.get("settings") or {}).get("capacity") or {}).get("mode")
    judged = judge(document, slo, search)
    names = [str(lane["name"]) for lane in judged["lanes"]]
    colors = charts.lane_colors(names)
    _capacity_lines(judged)
    table = load_frames.slo_frame(judged)
    if not table.empty:
        # Symbols every font has: the data grid draws on a canvas, where an emoji
        # without an emoji font (a headless browser's) is an empty box.
        table["passed"] = table["passed"].map({True: "✓ met", False: "✗ missed"})
        st.dataframe(
            styled_lanes(table.drop(columns=["lane_idx"]), colors),
            column_config=SLO_COLUMNS,
            column_order=list(SLO_COLUMNS),
            hide_index=True,
            key=f"slo-table-{run_id}",
        )
    plot_grid(_figures(judged, slo, colors, run_id), run_id, "slo")


def _capacity_lines(judged: Mapping[str, Any]) -> None:
    """Per lane, in its colour: its capacity in a sentence, and the notes on it."""
    for idx, lane in enumerate(judged["lanes"]):
        found = lane.get("capacity") or {}
        swatch = f":{charts.lane_color_name(idx)}[■]"
        summary = found.get("summary") or "no level measured"
        st.markdown(f"{swatch} **{esc_md(lane['name'])}**: {esc_md(summary)}")
        for note in found.get("notes") or []:
            st.caption(esc_md(note))


def _figures(
    judged: Mapping[str, Any], slo: Slo, colors: Mapping[str, str], run_id: str
) -> list[tuple[str, Any]]:
    """Goodput and the Pareto view first, then latency for each metric with a limit."""
    out: list[tuple[str, Any]] = [
        ("goodput", capacity_charts.goodput_vs_load(judged, colors, run_id)),
        ("pareto", capacity_charts.pareto(judged, colors, run_id)),
    ]
    for metric in capacity_charts.METRICS:
        if getattr(slo, capacity_charts.METRICS[metric][0]) is not None:
            fig = capacity_charts.latency_vs_load(judged, metric, slo, colors, uirevision=run_id)
            out.append((metric, fig))
    return out
