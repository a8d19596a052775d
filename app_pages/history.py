"""History: past runs, filtered by who started them, engine, model and label; open,
relabel or delete one; overlay two or more."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.analysis import history
from lib.app import access, formatting, session
from lib.app.formatting import esc_md
from lib.app.navigation import page_link
from lib.charts import history as charts_history

DB = session.db_key()
PICK = "history_pick"
# The filters' widget keys (all start with history_filter_).
PEOPLE, ENGINES, MODELS = "history_filter_people", "history_filter_engines", "history_filter_models"
LABEL = "history_filter_label"


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
options = history.filter_options(runs)
# A chosen value whose runs were deleted meanwhile would make its widget fail.
for key, offered in (
    (PEOPLE, options.people),
    (ENGINES, options.engines),
    (MODELS, options.models),
):
    st.session_state[key] = [v for v in st.session_state.get(key, []) if v in offered]
person, engine, model, text = st.columns(4)
people = person.multiselect("Started by", options.people, key=PEOPLE, placeholder="Anyone")
engines = engine.multiselect("Engine", options.engines, key=ENGINES, placeholder="Any engine")
models = model.multiselect("Model", options.models, key=MODELS, placeholder="Any model")
label = text.text_input("Label contains", key=LABEL, max_chars=200, placeholder="Any label")
shown_runs = history.filter_runs(runs, people, engines, models, label)
shown = {run["run_id"] for run in shown_runs}

figures = {run["run_id"]: levels(run["run_id"], DB, run["stamp"]) for run in runs}
table = history.history_frame(runs, figures)
status_of = dict(zip(table["run_id"], table["status"], strict=True))
if history.is_filtered(people, engines, models, label):
    st.caption(f"{len(shown_runs)} of {len(runs)} runs")
if not shown_runs:
    st.info("No run matches these filters.")
else:
    st.dataframe(
        formatting.dashed(table[table["run_id"].isin(shown)]).style.map(
            history.status_style, subset=["status"]
        ),
        hide_index=True,
        column_order=history.SHOWN_COLUMNS,
        column_config={
            "run_id": st.column_config.TextColumn("Run", width="small"),
            "label": "Label",
            "created": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
            "status": "Status",
            "started_by": st.column_config.TextColumn("By", help="Who started the run"),
            "host": st.column_config.TextColumn("Host", help="The machine it ran from"),
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

# Ids deleted meanwhile would make the widget fail: keep only those still listed. A run
# picked before a filter hid it stays picked, so runs found under different filters
# (two people's runs, one engine against another) can be overlaid.
st.session_state[PICK] = [r for r in st.session_state.get(PICK, []) if r in by_id]
ids = [r for r in table["run_id"] if r in shown or r in st.session_state[PICK]]
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
    if access.can_write():  # a viewer reads only
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
            # No word for a change that rounds to 0% (better is None there), not "None".
            diffs.assign(better=diffs["better"].map({True: "better", False: "worse"}).fillna("")),
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
