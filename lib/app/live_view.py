"""The run panel: a run followed live while it is active, then its final state.

Two fragments while the run is active: the header and lane tiles every LIVE_EVERY_S, the
charts every CHARTS_EVERY_S from figures cached per data version (rebuilt only when the
data changed and within CHART_BUDGET of a core). The page reruns once when the run ends.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from lib import charts, store
from lib.analysis import frames
from lib.app import access, matrix_section, verdict_section
from lib.app.chart_grid import GRID_SIZE, grid_figures, plot_grid
from lib.app.formatting import esc_md
from lib.app.lane_tiles import lane_tiles, level_pick
from lib.app.results_tables import finished_document
from lib.app.run_header import run_header
from lib.app.session import db_key
from lib.app.telemetry_section import plot_telemetry, sample_log, telemetry_figures
from lib.load import jobs

LIVE_EVERY_S = 1.0  # header and lane tiles of an active run


# The charts of an active run: their own fragment, redrawn every CHARTS_EVERY_S from
# figures cached per data version; rebuilt only when the data changed, and on a timer's
# tick so that rebuilding takes at most CHART_BUDGET of a core (a rebuild that took
# 0.3 s waits 3 s), whatever the run's size.
CHARTS_EVERY_S = 2.0


CHART_BUDGET = 0.1


@st.cache_resource(max_entries=16, show_spinner=False)
def _request_log(db: str, run_id: str) -> frames.RequestLog:
    # One per (store, run), shared by every session that follows the run.
    return frames.RequestLog(run_id)


class _RunView:
    """What the live view derives from one run's rows, kept per data version.

    One per (store, run) in st.cache_resource, shared by every session that follows the
    run: the level figures and drift lines per request count (the status part reads them
    every second), the figures per data version (request count, level statuses, sample
    count, run status), so a redraw whose data did not change builds nothing.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()  # _draw_charts holds it around _run_data
        self.data_key: Any = None
        self.data: dict[str, Any] = {}
        self.charts_key: Any = None
        self.figures: list[tuple[str, Any, bool]] = []
        self.captions: list[str] = []
        self.built_at = 0.0  # time.monotonic() of the last build
        self.build_s = 0.0  # how long it took
        self.builds = 0  # how many builds (tests count them)


@st.cache_resource(max_entries=16, show_spinner=False)
def _run_view(db: str, run_id: str) -> _RunView:
    return _RunView()


def _run_data(
    run_id: str,
    run: Mapping[str, Any],
    log: frames.RequestLog,
    names: Sequence[str],
    order: Sequence[int],
) -> dict[str, Any]:
    """t0, the per-level frame and the drift lines, rebuilt only when requests arrived."""
    view = _run_view(db_key(), run_id)
    key = (len(log), tuple(names), tuple(order), run.get("started_at"))
    with view.lock:
        if view.data_key != key:
            rows = log.rows()
            view.data = {
                "t0": frames.run_start(run, rows),
                "levels": frames.level_frame(rows, names, order),
                "drift": frames.drift_lines(rows, names),
            }
            view.data_key = key
        return view.data


def run_panel(run_id: str, where: str) -> bool:
    """Header, per-lane tiles and charts of a run; live (1 s) while it is active.

    `where` ("run" or "results") keeps element keys unique per page. Returns False
    when the store has no such run.
    """
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
    if run is None:
        st.error(f"No run {esc_md(run_id)} in the store.")
        return False
    was_active = run["status"] in jobs.ACTIVE
    # The scroll script takes a slot that every run of the page emits, filled or empty:
    # were it there only in the run after "Start run", the page's rerun at the run's end
    # would put the header and charts one place up, and the browser would show the old
    # and the new view together until that rerun finished.
    with st.empty():
        if st.session_state.pop("scroll_top", False):
            _scroll_to_top()

    # Two fragments: the status (header, tiles) every second, the charts more slowly
    # and from cached figures; each re-emits all of its elements on every rerun
    # (Streamlit removes a fragment's elements that a rerun does not emit again).
    @st.fragment(run_every=LIVE_EVERY_S if was_active else None)
    def live() -> None:
        # A fragment's tick does not run app.py: a viewer's connections are read-only
        # here too (the reconcile a tick may do writes).
        with access.store_scope():
            now_active = _draw_run(run_id, where)
        if was_active and not now_active:
            st.rerun()  # once: the page redraws without the timers and with the results

    page_run = [True]  # this call is the page's run; later calls are the timer's ticks

    @st.fragment(run_every=CHARTS_EVERY_S if was_active else None)
    def live_charts() -> None:
        with access.store_scope():
            _draw_charts(run_id, where, tick=not page_run[0])
        page_run[0] = False

    live()
    if not was_active:
        # Once the run has ended: what it found, in words, right under the tiles.
        document = finished_document(run_id)
        if document is not None:
            verdict_section.draw(document)
            # A matrix's answer comes next: the cells side by side, before the charts.
            matrix_section.matrix_section(run_id)
    live_charts()
    _settle_heap()
    return True


_heap = {"settled": False}


def _settle_heap() -> None:
    """Once per process, after the first run drawn: put what is alive by then (Streamlit,
    Plotly, pandas, their module-level tables) out of the garbage collector's sight.

    Streamlit runs a full collection after every script run, each fragment tick included
    (runner.postScriptGC): over the ~150,000 objects of this app's heap that took 30-100
    ms a tick, more than drawing the live view itself. Frozen objects are still freed
    by reference counting; collected garbage is cleared first, so none is kept."""
    if _heap["settled"]:
        return
    _heap["settled"] = True
    gc.collect()
    gc.freeze()


# A constant script, no data in it: after "Start run" (clicked at the foot of the form)
# the browser would keep its scroll offset and show the middle of the live view.
_SCROLL_TOP_JS = """<script>
for (const el of window.parent.document.querySelectorAll(
  '[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')) {
  el.scrollTo({top: 0});
}
window.scrollTo({top: 0});
</script>"""


def _scroll_to_top() -> None:
    st.html(_SCROLL_TOP_JS, unsafe_allow_javascript=True, width="content")


def _reconcile_if_dead(run_id: str) -> None:
    """Mark the run failed when its process is gone (jobs.reconcile, only when needed:
    it reads every run of the store). Another host's run is followed, never judged: its
    pid means nothing here, and jobs.reconcile would pass it over anyway (this check
    spares reading every run each second while a colleague's run is followed)."""
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
    if not run or run["status"] not in jobs.ACTIVE or not jobs.on_this_host(run):
        return
    if not jobs.process_alive(run["pid"], run_id):
        jobs.reconcile()


def _charts_due(view: _RunView, version: Any, active: bool, tick: bool, now: float) -> bool:
    """Whether the charts must be built anew: never built, or the data changed and this is
    not a timer's tick of an active run that comes sooner than CHART_BUDGET allows."""
    if view.charts_key is None:
        return True
    if view.charts_key == version:
        return False
    return not (tick and active) or now - view.built_at >= view.build_s / CHART_BUDGET


def _draw_charts(run_id: str, where: str, tick: bool = False) -> None:
    """The charts part: the six run charts and the telemetry, from figures cached per
    data version (see _charts_due for when they are built anew)."""
    _reconcile_if_dead(run_id)
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            return
        lanes = store.get_lanes(conn, run_id)
        levels = store.get_levels(conn, run_id)
        log = _request_log(db_key(), run_id)
        log.refresh(conn)
        samples = sample_log(db_key(), run_id)
        samples.refresh(conn)
    active = run["status"] in jobs.ACTIVE
    names = frames.lane_names(run, lanes)
    order = _chart_order(run["config"], frames.level_plan(run["config"], levels, len(names)))
    version = (
        len(log),
        len(samples),
        run["status"],
        tuple(names),
        tuple((lv["lane_idx"], lv["concurrency"], lv["status"]) for lv in levels),
    )
    view = _run_view(db_key(), run_id)
    with view.lock:
        if _charts_due(view, version, active, tick, time.monotonic()):
            started = time.monotonic()
            data = _run_data(run_id, run, log, names, order)
            t0 = data["t0"]
            requests = frames.request_frame(log.rows(), names, t0)
            spans = frames.level_spans(levels, names, t0)
            colors = charts.lane_colors(names)
            grid = grid_figures(requests, data["levels"], spans, colors, order, run_id)
            tele = telemetry_figures(run, lanes, spans, t0, active, samples)
            view.figures = [(key, fig, False) for key, fig in grid]
            view.figures += tele.figures if tele else []
            view.captions = tele.captions if tele else []
            view.charts_key = version
            view.built_at = time.monotonic()
            view.build_s = view.built_at - started
            view.builds += 1
        figures, captions = list(view.figures), list(view.captions)
    plot_grid([(key, fig) for key, fig, _ in figures[:GRID_SIZE]], run_id, where)
    if len(figures) > GRID_SIZE or captions:
        plot_telemetry(figures[GRID_SIZE:], captions, run_id, where)


def _draw_run(run_id: str, where: str) -> bool:
    """The status part: header and lane tiles; returns whether the run is active."""
    _reconcile_if_dead(run_id)
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
        lanes = store.get_lanes(conn, run_id)
        levels = store.get_levels(conn, run_id)
        warmups = store.get_levels(conn, run_id, warmup=True)
        counts = store.count_requests(conn, run_id)
        log = _request_log(db_key(), run_id)
        log.refresh(conn)
    if run is None:
        st.error(f"Run {esc_md(run_id)} was deleted.")
        return False
    active = run["status"] in jobs.ACTIVE
    config = run["config"]
    names = frames.lane_names(run, lanes)
    # Which levels each lane runs: a rate run's keys 1..N only number its rates, and a
    # capacity search's levels are known as they start (level_plan).
    plan = frames.level_plan(config, levels, len(names))
    order = _chart_order(config, plan)
    data = _run_data(run_id, run, log, names, order)  # cached per request count
    level_df = data["levels"]
    total = int(config.get("requests") or 0)
    progress = frames.progress_frame(names, order, total, counts, levels, log.rows, plan)
    run_header(run, active, where, progress, names)
    drift = data["drift"]
    pick = level_pick(order, where, run_id, frames.pick_labels(plan))
    kpis = frames.kpis(level_df, names, pick, frames.level_loads(levels))
    # A matrix's lanes: each started engine's state (starting, ready, failed, stopped).
    processes = {lane["lane_idx"]: lane.get("engine_process") for lane in lanes}
    lane_tiles(names, kpis, progress, active, drift, warmups, processes=processes)
    return active


def _chart_order(config: dict[str, Any], plan: Any) -> list[int]:
    """Level keys in the order the charts and picker show them: as configured, except a
    capacity search by users, which tries 1, 2, 4, 8, 6, 5 but reads best as 1…8."""
    order = frames.plan_order(plan)
    if (config.get("capacity") or {}).get("mode") == "concurrency":
        return sorted(order)
    return order
