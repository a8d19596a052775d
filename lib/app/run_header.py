"""The run's header: its outcome badge, progress, cancel button, and the box of failures
(each failed level's reason and the failing sandbox engine's log tail).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from lib.analysis import history
from lib.app import access
from lib.app.formatting import STATUS_COLORS, esc_md
from lib.app.navigation import page_link, show_run
from lib.core import outcome
from lib.load import jobs


def run_header(
    run: Mapping[str, Any],
    active: bool,
    where: str,
    progress: pd.DataFrame | None = None,
    names: Sequence[str] = (),
) -> None:
    run_id = run["run_id"]
    head, action = st.columns([5, 1], vertical_alignment="center")
    title = run.get("label") or f"Run {run_id}"
    head.markdown(f"### {esc_md(title)}")
    started = run.get("started_at") or run["created_at"]
    end = run.get("finished_at") or (time.time() if active else started)
    mode = "lanes at the same time" if run["config"].get("lanes_parallel") else "lanes in turn"
    status = run["status"]
    levels = progress.to_dict("records") if progress is not None else []
    if status == outcome.COMPLETED:
        # Runs stored before outcomes were judged: say what their requests did.
        status = outcome.combined_status(lv["status"] for lv in levels if lv["status"] != "waiting")
    bits = [
        f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]",
        f"run {esc_md(run_id)}",
        datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
        # "by alice on gpu-box" beside the date: in a shared store, whose run this is.
        *([esc_md(whose)] if (whose := history.who_where(run)) else []),
        f"{max(end - started, 0):.0f} s",
        mode,
        # Only when the load was spread: one process is the default and goes unsaid.
        *([f"{workers} load processes"] if (workers := _workers(run)) > 1 else []),
    ]
    head.markdown(" · ".join(bits))
    if active and not jobs.on_this_host(run):
        # Its process is another machine's: this one can neither signal nor judge it.
        who = f", started by {run['started_by']}" if run.get("started_by") else ""
        action.caption(esc_md(f"Running on {run['host']}{who}: cancel it there"))
    elif active and access.can_write():  # a viewer changes nothing
        if action.button("Cancel run", icon=":material/stop:", key=f"{where}-cancel-{run_id}"):
            jobs.cancel(run_id)
            st.toast("Cancelling: requests in flight are recorded as cancelled.")
    elif where == "run":
        with action:
            page_link("app_pages/results.py", "Full results", run=run_id)
            if st.button("New run", icon=":material/add:", key=f"run-new-{run_id}"):
                show_run(None)  # back to an open form
                st.rerun()
    _failure_box(run, status, levels, names)


def _workers(run: Mapping[str, Any]) -> int:
    return int((run.get("env") or {}).get("load_workers") or 1)


def _failure_box(
    run: Mapping[str, Any], status: str, levels: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> None:
    """Why a run failed, level by level, and what a failing sandbox engine logged."""
    lines = _failure_lines(levels, names)
    if status not in outcome.TROUBLED and not lines:
        return
    if not lines and run.get("error"):
        lines = [run["error"]]
    head = "The run failed" if status == outcome.FAILED else "Some requests failed"
    body = "\n".join(f"- {esc_md(line)}" for line in lines)
    (st.error if status == outcome.FAILED else st.warning)(f"**{head}:**\n{body}")
    for key, report in (run.get("env") or {}).get("engine_logs", {}).items():
        li = int(key)
        lane = names[li] if 0 <= li < len(names) else f"lane {li}"
        alive = "still answers" if report.get("ready") else "no longer answers"
        with st.expander(f"{lane}: sandbox engine {report.get('name')} {alive} · its log"):
            st.caption(esc_md(f"last lines of {report.get('log')}"))
            st.code("\n".join(report.get("tail") or ["(empty)"]), language=None)


def _failure_lines(levels: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """outcome.failure_lines, with a level named by its load: a rate level's key only
    numbers it, so "vllm:m c=2 failed: …" reads "vllm:m 8 req/s failed: …"."""
    out = []
    for lv in levels:
        for line in outcome.failure_lines([lv], names):
            li, key, label = lv["lane_idx"], lv["concurrency"], lv.get("load_label")
            name = names[li] if 0 <= li < len(names) else f"lane {li}"
            prefix = f"{name} c={key} "
            if label and line.startswith(prefix):
                line = f"{name} {label} {line[len(prefix) :]}"
            out.append(line)
    return out
