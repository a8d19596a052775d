"""Which page and which run: the registered pages, links between them, and the run a
page shows (?run= in the URL, the run picker).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from lib import store
from lib.app.formatting import esc_md
from lib.load import jobs

ROOT = Path(__file__).resolve().parents[2]


# (file, title, icon, default): registered only when the file exists, so a page that
# another area has not delivered yet never breaks the app.
PAGES: tuple[tuple[str, str, str, bool], ...] = (
    ("app_pages/run.py", "Run", ":material/play_circle:", True),
    ("app_pages/results.py", "Results", ":material/monitoring:", False),
    ("app_pages/compare.py", "Compare", ":material/compare:", False),
    ("app_pages/history.py", "History", ":material/history:", False),
    ("app_pages/engines.py", "Engines", ":material/dns:", False),
)


def registered_pages() -> list[Any]:
    """st.Page objects for the pages whose files exist, Run first and default."""
    out = []
    for path, title, icon, default in PAGES:
        if (ROOT / path).exists():
            out.append(st.Page(path, title=title, icon=icon, default=default))
    return out


def show_run(run_id: str | None, follow: bool = True) -> None:
    """Put the shown run in the URL (survives reloads); with `follow`, also remember it
    as the run this session's Run page follows (a small id in the session)."""
    if run_id:
        if follow:
            st.session_state["active_run"] = run_id
        if st.query_params.get("run") != run_id:
            st.query_params["run"] = run_id
    else:
        st.session_state.pop("active_run", None)
        if "run" in st.query_params:
            del st.query_params["run"]


def attached_run() -> str | None:
    """The run the Run page follows: ?run=, else this session's, else an active run
    (re-attaches after a reload or a dashboard restart): this host's newest first, else
    the newest of any host (a colleague's CLI run into the shared store)."""
    run_id = st.query_params.get("run") or st.session_state.get("active_run")
    if run_id:
        return str(run_id)
    active = jobs.active_runs()  # newest first
    local = [run for run in active if jobs.on_this_host(run)]
    chosen = (local or active)[:1]
    return chosen[0]["run_id"] if chosen else None


def run_picker() -> str | None:
    """Results page: ?run=, else a picker of recent runs (newest first)."""
    with store.opened() as conn:
        runs = store.list_runs(conn, limit=100)
    wanted = st.query_params.get("run") or st.session_state.get("active_run")
    ids = [r["run_id"] for r in runs]
    if wanted and wanted not in ids:
        st.error(f"No run {esc_md(wanted)} in the store.")
        wanted = None
    if not runs:
        st.info("No runs yet. Start one on the Run page.")
        return None
    labels = {r["run_id"]: _run_option(r) for r in runs}
    chosen = st.selectbox(
        "Run",
        ids,
        index=ids.index(wanted) if wanted else 0,
        format_func=lambda rid: labels[rid],
        key="results_run",
    )
    show_run(chosen, follow=False)  # browsing results must not move the Run page
    return chosen


def _run_option(run: Mapping[str, Any]) -> str:
    when = datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M")
    label = f"{run['label']} · " if run.get("label") else ""
    return f"{label}{run['run_id']} · {run['status']} · {when}"


def page_link(page: str, label: str, **query: str) -> None:
    """st.page_link to a registered page, or a plain hint when the page runs on its own
    (outside app.py's navigation, as in a single-page test)."""
    try:
        st.page_link(page, label=label, icon=":material/open_in_new:", query_params=query)
    except StreamlitPageNotFoundError:
        where = "&".join(f"{k}={v}" for k, v in query.items())
        st.caption(esc_md(f"{label}: open {page} with ?{where}"))
