"""History: past runs; open, relabel or delete one; overlay two or more."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.analysis import history
from lib.app import formatting, session
from lib.app.formatting import esc_md
from lib.app.navigation import page_link
from lib.charts import history as charts_history

DB = session.db_key()
PICK = "history_pick"


@st.cache_data(max_entries=1000, show_spinner=False)
def levels(run_id: str, db: str, stamp: tuple) -> pd.DataFrame:
    """Per-level figures of a run; recomputed only when its stamp changes."""
    return history.run_levels_by_id(run_id, db)


st.title("History")
if flash := st.session_state.pop("history_flash", None):
    st.success(esc_md(flash))

runs = history.load_runs(DB)
if not runs:
    st.info(
        "No runs yet. Start one on the Run page, or from a terminal with "
        "`python -m lib.cli run ...`; it will be listed here."
    )
    page_link("app_pages/run.py", "Start a run")
    st.stop()

by_id = {run["run_id"]: run for run in runs}
figures = {run["run_id"]: levels(run["run_id"], DB, run["stamp"]) for run in runs}
table = history.history_frame(runs, figures)
status_of = dict(zip(table["run_id"], table["status"], strict=True))
st.dataframe(
    formatting.dashed(table).style.map(history.status_style, subset=["status"]),
    hide_index=True,
    column_order=history.SHOWN_COLUMNS,
    column_config={
        "run_id": st.column_config.TextColumn("Run", width="small"),
        "label": "Label",
        "created": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
        "status": "Status",
        "lanes": st.column_config.TextColumn("Lanes", width="medium"),
        "models": st.column_config.TextColumn("Models", width="medium"),
        "levels": st.column_config.TextColumn("Levels (c)", help="Concurrency levels"),
        "completed": st.column_config.NumberColumn("Done", help="Completed measured requests"),
        "failed": st.column_config.NumberColumn("Failed"),
        "best_out_tok_s": st.column_config.NumberColumn(
            "Best output tok/s", format="%.1f", help="Highest output throughput of any lane"
        ),
        "best_at": "Best at",
        "ttft_p50_low_ms": st.column_config.NumberColumn(
            "p50 TTFT (ms), lowest c", format="%.0f", help="Best lane at the lowest level"
        ),
        "ttft_low_at": "TTFT at",
    },
)

ids = list(table["run_id"])
# Ids deleted meanwhile would make the widget fail: keep only those still listed.
st.session_state[PICK] = [r for r in st.session_state.get(PICK, []) if r in by_id]
picked = st.multiselect(
    "Runs",
    ids,
    format_func=lambda r: f"{history.run_title(by_id[r])} · {status_of[r]} · {r}",
    key=PICK,
    placeholder="Pick one run to open, relabel or delete it; two or more to compare them",
)

if len(picked) == 1:
    run = by_id[picked[0]]
    title = esc_md(run["run_id"])
    page_link("app_pages/results.py", f"Open {title} on the Results page", run=run["run_id"])
    with st.form("history_relabel"):
        label = st.text_input("Label", value=run.get("label") or "", max_chars=200)
        if st.form_submit_button("Save label"):
            try:
                history.relabel_run(run["run_id"], label, DB)
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.session_state["history_flash"] = "Label saved."
                st.rerun()
    done = int(table.loc[table["run_id"] == run["run_id"], "completed"].iloc[0])
    sure = st.checkbox(
        f"Yes, delete run {run['run_id']} and its {done} measured requests",
        key="history_confirm_delete",
    )
    if st.button("Delete run", type="primary", disabled=not sure):
        try:
            history.delete_run(run["run_id"], DB)
        except ValueError as exc:
            st.error(str(exc))
        else:
            st.session_state.pop("history_confirm_delete", None)
            st.session_state["history_flash"] = f"Deleted run {run['run_id']}."
            st.rerun()

elif len(picked) >= 2:
    overlay = history.overlay_frame(runs, figures, picked)
    baseline = st.selectbox(
        "Compare against",
        picked,
        format_func=lambda r: f"{history.run_title(by_id[r])} ({r})",
        key="history_baseline",
    )
    diffs = history.headline_diffs(overlay, baseline)
    if diffs.empty:
        st.info("No lanes to compare: the runs share no finished concurrency level.")
    else:
        st.dataframe(
            diffs.assign(better=diffs["better"].map({True: "better", False: "worse"})),
            hide_index=True,
            column_order=["run", "lane", "text", "baseline", "value", "better"],
            column_config={
                "run": "Run",
                "lane": "Lane (baseline → this run)",
                "text": "Difference from the baseline",
                "baseline": st.column_config.NumberColumn("Baseline", format="%.1f"),
                "value": st.column_config.NumberColumn("This run", format="%.1f"),
                "better": "",
            },
        )
    metric = st.selectbox(
        "Latency chart",
        list(charts_history.LATENCY_METRICS),
        format_func=lambda m: charts_history.LATENCY_METRICS[m][1],
        key="history_latency_metric",
    )
    # theme=None: the figures' own white style, as on the Results page.
    left, right = st.columns(2)
    left.plotly_chart(
        charts_history.throughput_overlay(overlay), key="history_throughput", theme=None
    )
    right.plotly_chart(
        charts_history.latency_overlay(overlay, metric), key="history_latency", theme=None
    )
    for run_id in picked:
        title = esc_md(history.run_title(by_id[run_id]))
        page_link("app_pages/results.py", f"Open {title}", run=run_id)
