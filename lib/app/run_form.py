"""The Run page's form: lanes, prompts, settings, and the start button.

Lanes come from endpoints that run already (endpoint + model pickers) or from the matrix
(lib/app/matrix_inputs.py: engine variants servescope starts, one cell at a time). The
choices become a RunConfig through lib/app/lane_choices.py (no Streamlit there) and
start as a background job (lib/load/jobs.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from lib import charts, endpoints
from lib.app import access, matrix_inputs
from lib.app.formatting import esc_md
from lib.app.lane_choices import (
    LaneChoice,
    build_lanes,
    engine_label,
    model_caption,
    prompts_from_text,
)
from lib.app.load_inputs import load_inputs
from lib.app.navigation import show_run
from lib.app.session import db_key, endpoint_statuses, streamlit_secrets
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import jobs, worker_count
from lib.load.runner import ConfigError, validate_config


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
    cols = st.columns(3)
    requests = cols[0].number_input(
        "Requests per level", 1, 100_000, 10, step=1, key="run_requests"
    )
    max_tokens = cols[1].number_input("Max tokens", 1, 131_072, 128, step=16, key="run_max_tokens")
    temperature = cols[2].number_input(
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
        workers = st.number_input(
            "Load processes (0 = automatic)",
            0,
            worker_count.cores(),
            0,
            key="run_workers",
            help="Processes sending the requests. Automatic: one per 64 streams "
            "in flight, at most the cores less one.",
        )
    return {
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
        "workers": int(workers) or None,
    }


def start_run(
    lanes: Sequence[LaneSpec], prompts: Sequence[Prompt], values: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Validate and start the run; returns (run_id, None) or (None, error message)."""
    config = RunConfig(lanes=list(lanes), prompts=list(prompts), **values)
    try:
        validate_config(config)
        # Recorded with the run: the signed-in user on a shared dashboard.
        return jobs.start(config, None, _lane_secrets(lanes), access.user_name()), None
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
        key = endpoints.resolve_api_key(ep, streamlit_secrets())
        if key:
            out[lane.api_key_env] = key
    return out


def run_form() -> None:
    """The whole set-up form; starting a run shows it live on this page."""
    st.markdown("##### Lanes")
    matrix = matrix_inputs.lane_source() == matrix_inputs.MATRIX
    if matrix:
        plan = matrix_inputs.matrix_inputs()
    else:
        statuses = endpoint_statuses(db_key())
        choices = lane_editor(statuses)
    st.markdown("##### Workload")
    prompts, prompt_error = prompt_picker()
    load, load_errors = load_inputs()
    values = {**settings_inputs(), **load}
    if matrix and not plan.may_start:
        return  # refused, or nothing to start: no start button (the reason is above)
    if st.button("Start run", type="primary", icon=":material/play_arrow:", key="run_start"):
        if matrix:
            lanes, errors = plan.lanes(), [*plan.errors, *matrix_inputs.start_errors(values)]
        else:
            lanes, errors = build_lanes(choices, statuses)
        if prompt_error:
            errors.append(prompt_error)
        errors += load_errors
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
