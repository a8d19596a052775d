"""The sidebar: who is signed in, each endpoint's status line and, while it comes up, the
sandbox's progress."""

from __future__ import annotations

from typing import Any

import streamlit as st

from lib import endpoints, store
from lib.app import access
from lib.app.formatting import esc_md
from lib.app.lane_choices import (
    ENGINE_LABELS,
)
from lib.app.session import db_key, endpoint_statuses


def sidebar() -> None:
    """Who is signed in, engine status (reachable, kind, version, models) and the
    sandbox's progress."""
    with st.sidebar:
        _who()
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
        _store_line()


def _store_line() -> None:
    """Where the runs are kept, when it is a database the team shares: whoever looks at
    the dashboard knows whose history it is."""
    chosen = store.target()
    if chosen.dialect == "postgresql":
        st.caption(f":material/database: Runs in {esc_md(chosen.label)}")


def _who() -> None:
    """The signed-in user and their role, with a way out; nothing for local use (one
    operator, no sign-in), except a viewer-only process says so."""
    who = access.current()
    if who.mode == access.LOCAL and who.can_write:
        return
    role = "operator" if who.can_write else "viewer: reads only"
    if who.mode == access.LOCAL:
        st.caption(f":material/visibility: {role}")
        return
    line, out = st.columns([3, 1], vertical_alignment="center")
    line.caption(f":material/person: {esc_md(who.name)} · {role}")
    if out.button("", icon=":material/logout:", key="sidebar-sign-out", help="Sign out"):
        access.sign_out()


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
