"""Shared Streamlit widgets: the one lib module that imports streamlit.

Pages stay thin and call these. Rules kept here (DESIGN.md "Streamlit rules"):
SQLite connections are opened per call and closed at once; long-lived objects (a
run's request log) live in st.cache_resource; st.session_state holds only small ids
(the shown run, the lane ids of the form); the live view is a fragment that reruns
every second only while its run is active and reruns the page once when it ends.
Model output is untrusted: it is shown with st.code / st.text, never as HTML or
markdown; names that reach markdown (lane and endpoint names) are escaped first.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from lib import charts, endpoints, store
from lib.analysis import frames, results, telemetry_frames
from lib.app.lane_choices import (
    ENGINE_LABELS,
    LaneChoice,
    build_lanes,
    engine_label,
    model_caption,
    prompts_from_text,
)
from lib.charts import telemetry as charts_telemetry
from lib.core import outcome
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import jobs
from lib.load.runner import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[2]
LIVE_EVERY_S = 1.0  # header and lane tiles of an active run
# The charts of an active run: their own fragment, redrawn every CHARTS_EVERY_S from
# figures cached per data version; rebuilt only when the data changed, and on a timer's
# tick so that rebuilding takes at most CHART_BUDGET of a core (a rebuild that took
# 0.3 s waits 3 s), whatever the run's size.
CHARTS_EVERY_S = 2.0
CHART_BUDGET = 0.1
ENDPOINT_TTL_S = 10
CONCURRENCY_OPTIONS = (1, 2, 4, 5, 8, 16, 32, 64)
DEFAULT_CONCURRENCY = (1, 5)
STATUS_COLORS = {
    "pending": "orange",
    "warming up": "violet",
    "waiting": "gray",
    "running": "blue",
    "completed": "green",
    "completed with failures": "orange",
    "failed": "red",
    "cancelled": "gray",
}

# (file, title, icon, default): registered only when the file exists, so a page that
# another area has not delivered yet never breaks the app.
PAGES: tuple[tuple[str, str, str, bool], ...] = (
    ("app_pages/run.py", "Run", ":material/play_circle:", True),
    ("app_pages/results.py", "Results", ":material/monitoring:", False),
    ("app_pages/compare.py", "Compare", ":material/compare:", False),
    ("app_pages/history.py", "History", ":material/history:", False),
    ("app_pages/engines.py", "Engines", ":material/dns:", False),
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$=^])")


def esc_md(text: Any) -> str:
    """Text safe inside Streamlit markdown: every markdown character escaped, so a
    model or endpoint name cannot format, link or colour anything."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def fmt_num(value: Any, digits: int = 0, unit: str = "") -> str:
    """A number for a tile or caption ("–" when missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


# --- app frame ----------------------------------------------------------------------------


def registered_pages() -> list[Any]:
    """st.Page objects for the pages whose files exist, Run first and default."""
    out = []
    for path, title, icon, default in PAGES:
        if (ROOT / path).exists():
            out.append(st.Page(path, title=title, icon=icon, default=default))
    return out


@st.cache_data(ttl=ENDPOINT_TTL_S, show_spinner=False)
def endpoint_statuses(db_key: str) -> list[endpoints.EndpointStatus]:
    """Every configured endpoint, probed (cached ~10 s: the sidebar and Run page share it)."""
    eps = endpoints.configured_endpoints(db_key)
    return endpoints.probe_all(eps, timeout=2.0, secrets=_secrets())


def _secrets() -> Mapping[str, Any] | None:
    try:
        return st.secrets if len(st.secrets) else None
    except Exception:  # no secrets.toml: keys come from the environment only
        return None


def db_key() -> str:
    """The store in use, as a cache key (tests point SERVESCOPE_DB elsewhere)."""
    return str(store.db_path())


def sidebar() -> None:
    """Engine status (reachable, kind, version, models) and the sandbox's progress."""
    with st.sidebar:
        head, button = st.columns([3, 1], vertical_alignment="center")
        head.markdown("**Engines**")
        if button.button("", icon=":material/refresh:", key="sidebar-refresh", help="Probe again"):
            endpoint_statuses.clear()
        statuses = endpoint_statuses(db_key())
        if not statuses:
            st.caption("No endpoints configured. Add one on the Engines page.")
        for status in statuses:
            _endpoint_line(status)
        _sandbox_box()


def _endpoint_line(status: endpoints.EndpointStatus) -> None:
    name = esc_md(status.endpoint.name)
    if status.reachable and status.models:
        dot = ":green[●]"
    elif status.reachable:
        dot = ":orange[●]"
    else:
        dot = ":red[●]"
    st.markdown(f"{dot} **{name}**")
    if status.reachable:
        kind = ENGINE_LABELS.get(status.engine or "", status.engine or "unknown engine")
        version = f" {status.version}" if status.version else ""
        n = len(status.models)
        st.caption(
            f"{esc_md(kind + version)} · {n} model{'s' if n != 1 else ''}"
            + (f" · {esc_md(status.error)}" if status.error else "")
        )
    else:
        st.caption(f"unreachable · {esc_md(status.endpoint.url)}")


def _sandbox_api() -> tuple[Any, Any] | None:
    import os

    if os.environ.get("SERVESCOPE_SANDBOX", "").lower() == "off":
        return None
    try:
        import sandbox

        status = getattr(sandbox, "status", None)
        progress = getattr(sandbox, "progress", None)
        if status is None or progress is None:  # older package layout
            from sandbox import lifecycle

            status, progress = lifecycle.status, lifecycle.progress
        return status, progress
    except Exception:
        return None


def _sandbox_box() -> None:
    api = _sandbox_api()
    if api is None:
        return
    status_fn, progress_fn = api
    try:
        record = progress_fn()
    except Exception:
        record = None
    starting = bool(record and record.get("active"))

    # Polls only while the sandbox comes up; otherwise drawn once per page run.
    @st.fragment(run_every=2.0 if starting else None)
    def box() -> None:
        try:
            rec = progress_fn()
            state = status_fn() or {}
            engines = state.get("engines", [])
            model = state.get("model") or {}
        except Exception as exc:
            st.caption(f"Sandbox: cannot read its state ({esc_md(type(exc).__name__)})")
            return
        if not rec and not engines:
            return
        st.markdown("**Sandbox**")
        if rec and rec.get("active"):
            phase = rec.get("phase", "")
            st.info(f"starting… {esc_md(phase)}: {esc_md(rec.get('message', ''))}")
        elif rec and rec.get("phase") == "failed":
            st.warning(f"failed: {esc_md(rec.get('message', ''))}")
        for eng in engines:
            dot = ":green[●]" if eng.get("ready") else ":orange[●]"
            st.caption(f"{dot} {esc_md(eng.get('name'))} · {esc_md(eng.get('base_url'))}")
        if engines and model:
            st.caption(f"model: {esc_md(model.get('title') or model.get('name') or '?')}")
            if model.get("fallback"):
                # The machine was too small for the real model: say so where it shows.
                st.warning(esc_md(model["fallback"]))
        if starting and rec and not rec.get("active"):
            st.rerun()  # came up: refresh the endpoint list everywhere once

    box()


# --- the run form -------------------------------------------------------------------------


def _lane_ids() -> list[int]:
    if "lane_ids" not in st.session_state:
        st.session_state["lane_ids"] = [0, 1]  # two lanes: the point is to compare
    return st.session_state["lane_ids"]


def _default_endpoint(pos: int, statuses: Sequence[endpoints.EndpointStatus]) -> int | None:
    """Lane `pos` starts on the pos-th endpoint that answers with models (wrapping), so
    a fresh page compares what can run rather than an unreachable default."""
    usable = [i for i, s in enumerate(statuses) if s.reachable and s.models]
    pool = usable or list(range(len(statuses)))
    return pool[pos % len(pool)] if pool else None


def lane_editor(statuses: Sequence[endpoints.EndpointStatus]) -> list[LaneChoice]:
    """Rows of endpoint + model pickers, with add/remove; returns the choices."""
    ids = _lane_ids()
    names = [s.endpoint.name for s in statuses]
    by_name = {s.endpoint.name: s for s in statuses}
    choices: list[LaneChoice] = []
    if not names:
        st.warning("No engine endpoints are configured. Add one on the Engines page.")
    for pos, lane_id in enumerate(list(ids)):
        swatch = f":{charts.lane_color_name(pos)}[■]"
        with st.container(border=True):
            cols = st.columns([3, 4, 4, 1.3], vertical_alignment="bottom")
            endpoint = cols[0].selectbox(
                f"{swatch} Lane {pos + 1}: endpoint",
                names,
                index=_default_endpoint(pos, statuses),
                key=f"lane_ep_{lane_id}",
                format_func=lambda n: _endpoint_option(by_name.get(n)),
            )
            status = by_name.get(endpoint or "")
            models = [m.name for m in status.models] if status else []
            labels = {m.name: endpoints.model_option(m) for m in status.models} if status else {}
            # A second lane on the same endpoint starts on its next model (another
            # quantization variant, say) rather than a duplicate of the first lane.
            earlier = sum(1 for c in choices if c.endpoint == endpoint)
            model = cols[1].selectbox(
                "Model",
                models,
                index=earlier % len(models) if models else None,
                key=f"lane_model_{lane_id}",
                placeholder="no models" if status else "pick an endpoint",
                # Variants differ only in quantization and size: the label shows them, the
                # value stays the plain name. `.get(n, n)`: AppTest re-applies format_func
                # to an already formatted option; the default binds this lane's labels.
                format_func=lambda n, labels=labels: labels.get(n, n),
            )
            info = next((m for m in status.models if m.name == model), None) if status else None
            if info is not None:
                cols[2].caption(esc_md(model_caption(info)))
            if cols[3].button("Remove", key=f"lane_rm_{lane_id}", icon=":material/close:"):
                ids.remove(lane_id)
                st.rerun()
            if status is not None and not status.reachable:
                st.error(f"{esc_md(status.endpoint.name)} is unreachable: {esc_md(status.error)}")
            elif status is not None and not status.models:
                st.warning(f"{esc_md(status.endpoint.name)} answers but serves no models.")
        choices.append(LaneChoice(endpoint, model))
    if st.button("Add lane", icon=":material/add:", key="lane_add"):
        ids.append(max(ids, default=-1) + 1)
        st.rerun()
    return choices


def _endpoint_option(status: endpoints.EndpointStatus | None) -> str:
    if status is None:
        return "?"
    if not status.reachable:
        return f"{status.endpoint.name} (unreachable)"
    return f"{status.endpoint.name} ({engine_label(status.engine)})"


def prompt_picker() -> tuple[list[Prompt], str | None]:
    """Preset, typed prompts or an uploaded file; returns (prompts, error)."""
    try:
        from lib.load import workloads
    except ImportError:
        workloads = None  # type: ignore[assignment]
    presets = dict(getattr(workloads, "PRESETS", {}) or {}) if workloads else {}
    sources = (["Preset"] if presets else []) + ["Write prompts", "Upload a file"]
    source = st.radio("Prompts", sources, horizontal=True, key="prompt_source")
    if source == "Preset":
        name = st.selectbox(
            "Prompt preset",
            list(presets),  # the registry's order: the team's own prompt first
            key="prompt_preset",
            format_func=lambda k: getattr(presets[k], "title", k),
        )
        preset = presets[name]
        about = getattr(preset, "description", "") or ""
        prompts = list(getattr(preset, "prompts", []) or [])
        count = f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}"
        st.caption(esc_md(f"{count}. {about}"))
        return prompts, None if prompts else "This preset has no prompts."
    if source == "Write prompts":
        text = st.text_area(
            "Prompts (separate several with a line of ---)",
            key="prompt_text",
            height=120,
            placeholder="다음 뉴스 기사를 JSON(title, content)으로 요약해 주세요: …",
        )
        prompts = prompts_from_text(text)
        return prompts, None if prompts else "Write at least one prompt."
    upload = st.file_uploader(
        "Prompt file (.txt: one per line, .jsonl or .csv)",
        type=["txt", "jsonl", "csv"],
        key="prompt_file",
    )
    if upload is None:
        return [], "Upload a prompt file."
    try:
        data = upload.getvalue()
        prompts = list(workloads.load_prompts_from_bytes(upload.name, data))  # type: ignore[union-attr]
    except Exception as exc:  # not text, bad JSON, empty: a message, never a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [], f"Cannot read {upload.name}: {reason}"
    st.caption(f"{len(prompts)} prompts from {esc_md(upload.name)}")
    return prompts, None if prompts else f"{upload.name} holds no prompts."


def settings_inputs() -> dict[str, Any]:
    """Sampling, load and run options; returns the values by RunConfig field."""
    cols = st.columns(4)
    concurrency = cols[0].multiselect(
        "Concurrency levels (requests in flight)",
        CONCURRENCY_OPTIONS,
        default=list(DEFAULT_CONCURRENCY),
        key="run_concurrency",
    )
    requests = cols[1].number_input(
        "Requests per level", 1, 100_000, 10, step=1, key="run_requests"
    )
    max_tokens = cols[2].number_input("Max tokens", 1, 131_072, 128, step=16, key="run_max_tokens")
    temperature = cols[3].number_input(
        "Temperature", 0.0, 2.0, 0.0, step=0.1, format="%.2f", key="run_temperature"
    )
    cols = st.columns(4)
    seed = cols[0].number_input("Seed", 0, 2**31 - 1, 0, step=1, key="run_seed")
    parallel = cols[1].radio(
        "Lanes",
        ["One after another", "At the same time"],
        key="run_parallel",
        help="One after another is fair when lanes share a GPU.",
    )
    label = cols[2].text_input("Label", key="run_label", placeholder="e.g. sprint 5: Q4 vs AWQ")
    with cols[3].expander("More settings"):
        top_p = st.number_input("Top-p", 0.01, 1.0, 1.0, step=0.05, key="run_top_p")
        ignore_eos = st.checkbox(
            "Ignore EOS (always max tokens)", key="run_ignore_eos", help="vLLM extension"
        )
        timeout = st.number_input("Timeout per request (s)", 1.0, 3600.0, 120.0, key="run_timeout")
        warmup = st.number_input("Warm-up requests per lane", 0, 1000, 1, key="run_warmup")
    return {
        "concurrency": sorted(int(c) for c in concurrency),
        "requests": int(requests),
        "warmup": int(warmup),
        "sampling": Sampling(
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            seed=int(seed),
            ignore_eos=bool(ignore_eos),
        ),
        "timeout_s": float(timeout),
        "label": label.strip(),
        "lanes_parallel": parallel == "At the same time",
    }


def start_run(
    lanes: Sequence[LaneSpec], prompts: Sequence[Prompt], values: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Validate and start the run; returns (run_id, None) or (None, error message)."""
    config = RunConfig(lanes=list(lanes), prompts=list(prompts), **values)
    try:
        validate_config(config)
        return jobs.start(config, None, _lane_secrets(lanes)), None
    except jobs.EndpointBusy as exc:
        return None, f"Endpoint busy: {exc}"
    except ConfigError as exc:
        return None, f"Cannot start: {exc}"
    except OSError as exc:
        return None, f"Cannot start the run's process: {exc}"


def _lane_secrets(lanes: Sequence[LaneSpec]) -> dict[str, str]:
    """Keys from .streamlit/secrets.toml for the lanes' key variables (env wins)."""
    out: dict[str, str] = {}
    for lane in lanes:
        if not lane.api_key_env:
            continue
        ep = endpoints.Endpoint(name="", url=lane.base_url, api=None, api_key_env=lane.api_key_env)
        key = endpoints.resolve_api_key(ep, _secrets())
        if key:
            out[lane.api_key_env] = key
    return out


def run_form() -> None:
    """The whole set-up form; starting a run shows it live on this page."""
    statuses = endpoint_statuses(db_key())
    st.markdown("##### Lanes")
    choices = lane_editor(statuses)
    st.markdown("##### Workload")
    prompts, prompt_error = prompt_picker()
    values = settings_inputs()
    if st.button("Start run", type="primary", icon=":material/play_arrow:", key="run_start"):
        lanes, errors = build_lanes(choices, statuses)
        if prompt_error:
            errors.append(prompt_error)
        if not values["concurrency"]:
            errors.append("Pick at least one concurrency level.")
        if errors:
            for error in errors:
                st.error(esc_md(error))
            return
        run_id, error = start_run(lanes, prompts, values)
        if error:
            st.error(esc_md(error))
            return
        show_run(run_id)
        st.session_state["scroll_top"] = True  # the live view is at the top of the page
        st.rerun()


# --- which run a page shows -------------------------------------------------------------


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
    """The run the Run page follows: ?run=, else this session's, else any active run
    (re-attaches after a reload or a dashboard restart)."""
    run_id = st.query_params.get("run") or st.session_state.get("active_run")
    if run_id:
        return str(run_id)
    active = jobs.active_runs()
    return active[0]["run_id"] if active else None


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


# --- the run panel (live while active) ---------------------------------------------------


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
    if st.session_state.pop("scroll_top", False):
        _scroll_to_top()

    # Two fragments: the status (header, tiles) every second, the charts more slowly
    # and from cached figures; each re-emits all of its elements on every rerun
    # (Streamlit removes a fragment's elements that a rerun does not emit again).
    @st.fragment(run_every=LIVE_EVERY_S if was_active else None)
    def live() -> None:
        now_active = _draw_run(run_id, where)
        if was_active and not now_active:
            st.rerun()  # once: the page redraws without the timers and with the results

    page_run = [True]  # this call is the page's run; later calls are the timer's ticks

    @st.fragment(run_every=CHARTS_EVERY_S if was_active else None)
    def live_charts() -> None:
        _draw_charts(run_id, where, tick=not page_run[0])
        page_run[0] = False

    live()
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
    it reads every run of the store)."""
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
    if run and run["status"] in jobs.ACTIVE and not jobs.process_alive(run["pid"], run_id):
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
        samples = _sample_log(db_key(), run_id)
        samples.refresh(conn)
    active = run["status"] in jobs.ACTIVE
    names = frames.lane_names(run, lanes)
    order = list(run["config"].get("concurrency") or [])
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
            grid = _grid_figures(requests, data["levels"], spans, colors, order, run_id)
            tele = _telemetry_figures(run, lanes, spans, t0, active, samples)
            view.figures = [(key, fig, False) for key, fig in grid]
            view.figures += tele.figures if tele else []
            view.captions = tele.captions if tele else []
            view.charts_key = version
            view.built_at = time.monotonic()
            view.build_s = view.built_at - started
            view.builds += 1
        figures, captions = list(view.figures), list(view.captions)
    _plot_grid([(key, fig) for key, fig, _ in figures[:GRID_SIZE]], run_id, where)
    if len(figures) > GRID_SIZE or captions:
        _plot_telemetry(figures[GRID_SIZE:], captions, run_id, where)


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
    order = list(config.get("concurrency") or [])
    data = _run_data(run_id, run, log, names, order)  # cached per request count
    level_df = data["levels"]
    total = int(config.get("requests") or 0)
    progress = frames.progress_frame(names, order, total, counts, levels, log.rows)
    _run_header(run, active, where, progress, names)
    drift = data["drift"]
    pick = _level_pick(order, where, run_id)
    lane_tiles(names, frames.kpis(level_df, names, pick), progress, active, drift, warmups)
    return active


def _level_pick(order: Sequence[int], where: str, run_id: str) -> int | None:
    """Which level the lane tiles' figures show: each lane's latest that answered, or
    one the user picks (every level's outcome is listed in the tiles either way)."""
    if len(order) < 2:
        return None
    options = ["latest", *order]
    chosen = st.segmented_control(
        "Figures of level",
        options,
        default="latest",
        format_func=lambda o: "latest" if o == "latest" else f"c={o}",
        key=f"{where}-pick-{run_id}",
        label_visibility="collapsed",
    )
    return None if chosen in (None, "latest") else int(chosen)


def _run_header(
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
        f"{max(end - started, 0):.0f} s",
        mode,
    ]
    head.markdown(" · ".join(bits))
    if active:
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


def _failure_box(
    run: Mapping[str, Any], status: str, levels: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> None:
    """Why a run failed, level by level, and what a failing sandbox engine logged."""
    lines = outcome.failure_lines(levels, names)
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


def lane_tiles(
    names: Sequence[str],
    kpis: Sequence[Mapping[str, Any]],
    progress: pd.DataFrame,
    active: bool,
    drift: Mapping[str, str] | None = None,
    warmups: Sequence[Mapping[str, Any]] = (),
) -> None:
    """One bordered box per lane: name in its colour and how the lane is doing, four
    KPIs of one level (two by two: they fit three lanes side by side), the warm-up,
    every level's progress or outcome with its reason, and the language check."""
    per_row = min(max(len(names), 1), 3)
    warm = {w["lane_idx"]: w for w in warmups}
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row)
        for col, kpi in zip(cols, kpis[start : start + per_row], strict=False):
            li = kpi["lane_idx"]
            mine = progress[progress["lane_idx"] == li]
            with col.container(border=True):
                _tile_title(kpi, mine, warm.get(li), active)
                m = st.columns(2)
                m[0].metric("TTFT p50", fmt_num(kpi["ttft_p50_ms"], 0, "ms"))
                m[1].metric("Tokens/s p50", fmt_num(kpi["tok_per_s_p50"], 1, "tok/s"))
                m = st.columns(2)
                m[0].metric("Output tok/s", fmt_num(kpi["out_tok_per_s"], 0, "tok/s"))
                done = kpi["completed"] + kpi["failed"]
                m[1].metric("Failed", f"{kpi['failed']}/{done}" if done else "–")
                if drift and kpi["lane"] in drift:
                    line = esc_md(f"Answers: {drift[kpi['lane']]}")
                    st.markdown(f":material/translate: **{line}**")
                _warmup_line(warm.get(li), active)
                _level_lines(mine, active)


def _tile_title(
    kpi: Mapping[str, Any],
    mine: pd.DataFrame,
    warm: Mapping[str, Any] | None,
    active: bool,
) -> None:
    level = f" · c={kpi['concurrency']}" if kpi["concurrency"] else ""
    statuses = [str(s) for s in mine["status"]]
    if warm is not None and warm.get("status") == outcome.WARMING_UP:
        state = outcome.WARMING_UP
    elif active:
        state = next((s for s in statuses if s == outcome.RUNNING), None)
        state = state or ("waiting" if all(s == "waiting" for s in statuses) else None)
    else:
        state = outcome.combined_status(s for s in statuses if s != "waiting")
    badge = f" :{STATUS_COLORS.get(state, 'gray')}-badge[{state}]" if state else ""
    swatch = f":{charts.lane_color_name(kpi['lane_idx'])}[■]"
    st.markdown(f"{swatch} **{esc_md(kpi['lane'])}**{level}{badge}")


def _warmup_line(warm: Mapping[str, Any] | None, active: bool) -> None:
    """Warm-up is a state of its own, with its own clock: an engine loading its model
    takes tens of seconds before the first measured request (Ollama's cold load)."""
    if warm is None or not warm.get("started_at"):
        return
    end = warm.get("finished_at") or (time.time() if active else None)
    took = f" {end - warm['started_at']:.0f} s" if end else ""
    status = warm.get("status")
    if status == outcome.WARMING_UP:
        st.info(
            f"Warming up:{took} so far (the first requests load the model; not measured)",
            icon=":material/hourglass_top:",
        )
    elif status == outcome.FAILED:
        st.markdown(f":red[Warm-up failed after{took}: {esc_md(warm.get('error') or '')}]")
    else:
        st.caption(f"Warm-up took{took} (model load included; not measured)")


def _level_lines(mine: pd.DataFrame, active: bool) -> None:
    """Every level of the lane: progress while it runs, then its outcome and reason."""
    for row in mine.itertuples():
        failed = f", {row.failed} failed" if row.failed else ""
        counts = f"c={row.concurrency}: {row.completed + row.failed}/{row.total} requests{failed}"
        if active and row.status in ("waiting", outcome.RUNNING):
            st.progress(float(row.fraction), text=f"{counts} · {row.status}")
        elif row.status in outcome.TROUBLED:
            colour = "red" if row.status == outcome.FAILED else "orange"
            why = f": {row.error}" if row.error else ""
            st.markdown(f":{colour}[**{esc_md(counts)} · {esc_md(row.status)}**{esc_md(why)}]")
        else:
            st.caption(esc_md(f"{counts} · {row.status}"))


def page_link(page: str, label: str, **query: str) -> None:
    """st.page_link to a registered page, or a plain hint when the page runs on its own
    (outside app.py's navigation, as in a single-page test)."""
    try:
        st.page_link(page, label=label, icon=":material/open_in_new:", query_params=query)
    except StreamlitPageNotFoundError:
        where = "&".join(f"{k}={v}" for k, v in query.items())
        st.caption(esc_md(f"{label}: open {page} with ?{where}"))


def _plot(fig: Any, key: str) -> None:
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
    _plot_grid(_grid_figures(requests, levels, spans, colors, order, run_id), run_id, where)


def _grid_figures(
    requests: pd.DataFrame,
    levels: pd.DataFrame,
    spans: Sequence[Mapping[str, Any]],
    colors: Mapping[str, str],
    order: Sequence[int],
    run_id: str,
) -> list[tuple[str, Any]]:
    """chart_grid's figures by key, in reading order (two per row)."""
    rev = run_id  # uirevision: zoom and legend state survive the live redraws
    return [
        ("timeline", charts.latency_timeline(requests, colors, spans, rev)),
        ("e2el", charts.e2el_box(requests, colors, order, rev)),
        ("tput", charts.throughput_vs_concurrency(levels, colors, rev)),
        ("ttft", charts.ttft_box(requests, colors, order, rev)),
        ("toks", charts.tokens_per_s_box(requests, colors, order, rev)),
        ("tpot", charts.tpot_box(requests, colors, order, rev)),
    ]


def _plot_grid(figures: Sequence[tuple[str, Any]], run_id: str, where: str) -> None:
    for start in range(0, len(figures), 2):
        for col, (key, fig) in zip(st.columns(2), figures[start : start + 2], strict=False):
            with col:
                _plot(fig, f"{where}-{key}-{run_id}")


# --- telemetry beside the run ----------------------------------------------------------------


@st.cache_resource(max_entries=16, show_spinner=False)
def _sample_log(db: str, run_id: str) -> telemetry_frames.SampleLog:
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
    log = _sample_log(db_key(), run_id)
    with store.opened() as conn:
        log.refresh(conn)
    out = _telemetry_figures(run, lanes, spans, t0, active, log)
    if out is not None:
        _plot_telemetry(out.figures, out.captions, run_id, where)


def _telemetry_figures(
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


def _plot_telemetry(
    figures: Sequence[tuple[str, Any, bool]], captions: Sequence[str], run_id: str, where: str
) -> None:
    st.markdown("#### Memory and engine telemetry")
    for caption in captions:
        st.caption(esc_md(caption))
    half = [(key, fig) for key, fig, wide in figures if not wide]
    for key, fig, wide in figures:
        if wide:
            _plot(fig, f"{where}-telemetry-{key}-{run_id}")
    for start in range(0, len(half), 2):
        for col, (key, fig) in zip(st.columns(2), half[start : start + 2], strict=False):
            with col:
                _plot(fig, f"{where}-telemetry-{key}-{run_id}")


def _peak_memory_column(doc: Mapping[str, Any]) -> Any:
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


# --- results details ------------------------------------------------------------------------


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


def _lane_styled(frame: pd.DataFrame, colors: Mapping[str, str]) -> Any:
    """The lane column in its lane's colour, so tables read like the charts; text
    columns with "–" where a value is missing (see dashed)."""
    frame = dashed(frame)
    if frame.empty or "lane" not in frame:
        return frame
    # The Styler's cell texts too (a number column's NaN would read "nan" there).
    return frame.style.format(na_rep="–").map(
        lambda v: f"color: {colors.get(v, '#222222')}; font-weight: 600", subset=["lane"]
    )


def dashed(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with "–" for None and NaN in the text columns: the data grid
    draws a missing cell as a faded "None" (a Styler's na_rep does not reach it), which
    reads as a value; "–" is what the rest of the page shows for "not reported"."""
    out = frame.copy()
    for col in out.columns:
        values = out[col]
        if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            out[col] = values.astype(object).where(values.notna(), "–")
    return out


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
    """Summary table, quality, server timings, settings and answers of a finished run."""
    with store.opened() as conn:
        run = store.get_run(conn, run_id)
    if run is None or run["status"] in jobs.ACTIVE:
        st.caption("The summary table and the answers appear here when the run ends.")
        return
    doc = _document(db_key(), run_id, run.get("finished_at"))
    names = [lane["name"] for lane in doc["lanes"]]
    colors = charts.lane_colors(names)
    st.markdown("#### Summary per lane and concurrency")
    summary = frames.with_peak_memory(frames.summary_frame(doc), doc).drop(columns=["lane_idx"])
    columns = dict(SUMMARY_COLUMNS)
    order = list(columns)
    # Shown as text: a number column draws a missing value as "None", and "–" with the
    # column's help saying why is what the rest of the page uses.
    summary["peak_gpu_mem"] = [fmt_num(v, 1) for v in summary["peak_gpu_mem_gib"]]
    order.insert(order.index("out_tok_per_s") + 1, "peak_gpu_mem")
    columns["peak_gpu_mem"] = _peak_memory_column(doc)
    st.dataframe(
        _lane_styled(summary, colors),
        column_config=columns,
        column_order=order,
        hide_index=True,
        key=f"summary-{run_id}",
    )
    _peak_memory_caption(summary, doc)
    _token_source_caption(doc)
    quality_section(doc, colors)
    server = frames.server_timings_frame(doc)
    if not server.empty:
        st.markdown("#### Engine-side timings (Ollama) beside the client's view")
        st.caption("Medians per level. Queue ≈ total − load − prompt eval − eval.")
        st.dataframe(
            _lane_styled(server, colors),
            column_config=SERVER_COLUMNS,
            column_order=list(SERVER_COLUMNS),
            hide_index=True,
        )
    st.markdown("#### Lanes: engine and model")
    lane_info = frames.lane_info_frame(doc)
    lane_info["context_length"] = [fmt_num(v) for v in lane_info["context_length"]]
    st.dataframe(_lane_styled(lane_info, colors), hide_index=True, column_config=LANE_COLUMNS)
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


def quality_section(doc: Mapping[str, Any], colors: Mapping[str, str]) -> None:
    """Per-lane answer checks: language drift line and flag counts."""
    quality = frames.quality_frame(doc)
    if quality.empty:
        return
    st.markdown("#### Answer quality")
    cols = st.columns(min(len(quality), 4))
    names = list(colors)
    for col, row in zip(cols, quality.itertuples(), strict=False):
        li = names.index(row.lane) if row.lane in names else 0
        with col.container(border=True):
            st.markdown(f":{charts.lane_color_name(li)}[■] **{esc_md(row.lane)}**")
            st.markdown(f"**{esc_md(row.language)}**")
            flags = [
                f"{code.replace('_', ' ')}: {getattr(row, code)}"
                for code in quality.columns
                if code not in ("lane", "checked", "language", "lang_drift")
                and getattr(row, code, 0)
            ]
            st.caption(esc_md(" · ".join(flags) or "no other flags"))


def answers_section(doc: Mapping[str, Any], run_id: str) -> None:
    """The answers side by side per prompt, lanes as columns, shown as plain text."""
    levels = frames.levels_of(doc)
    if not levels:
        return
    st.markdown("#### Answers side by side")
    level = st.selectbox(
        "Concurrency level", levels, key=f"answers-level-{run_id}", format_func=lambda c: f"c={c}"
    )
    names = [lane["name"] for lane in doc["lanes"]]
    for n, item in enumerate(frames.answers_by_prompt(doc, level), start=1):
        with st.container(border=True):
            st.caption(f"Prompt {n}")
            st.text(item["prompt"][:2000])  # the user's text, shown as text
            cols = st.columns(len(names))
            for li, (col, name) in enumerate(zip(cols, names, strict=True)):
                with col:
                    st.markdown(f":{charts.lane_color_name(li)}[■] **{esc_md(name)}**")
                    answers = item["answers"].get(name, [])
                    if not answers:
                        st.caption("no answer at this level")
                        continue
                    _answer(answers[0], len(answers))


def _answer(req: Mapping[str, Any], count: int) -> None:
    if req.get("error"):
        st.error(f"failed: {esc_md(req['error'])}")
        return
    # Untrusted model output: a code block shows it verbatim, no markdown, no HTML.
    st.code(req.get("output_text") or "", language=None, wrap_lines=True)
    bits = [
        f"{fmt_num(req.get('e2el_ms'), 0, 'ms')} E2E",
        f"{req.get('output_tokens') or '?'} tokens",
        f"finish: {req.get('finish_reason') or '?'}",
    ]
    if count > 1:
        bits.append(f"first of {count} answers")
    st.caption(esc_md(" · ".join(bits)))
    flags = (req.get("quality") or {}).get("flags") or []
    if flags:
        # One box per answer; reasons quote the answer, so they are escaped like it.
        lines = [f"**{esc_md(f.get('code'))}**: {esc_md(f.get('reason'))}" for f in flags]
        st.warning("  \n".join(lines), icon=":material/flag:")
