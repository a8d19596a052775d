"""One tile per lane: TTFT, tokens/s, output tok/s and failures of the picked level, the
warm-up line, and every level's outcome with its reason; for a lane whose engine
servescope starts (a matrix cell), the engine's state: starting, ready, failed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from lib import charts
from lib.app.formatting import STATUS_COLORS, esc_md, fmt_num
from lib.core import outcome


def level_pick(
    order: Sequence[int],
    where: str,
    run_id: str,
    labels: Mapping[int, str] | None = None,
) -> int | None:
    """Which level the lane tiles' figures show: each lane's latest that answered, or
    one the user picks (every level's outcome is listed in the tiles either way).

    `labels` name the level keys ("2 req/s"; "c=4" where not given). None offers no
    pick: a key that stands for different loads on different lanes (frames.pick_labels).
    """
    if len(order) < 2 or labels is None:
        return None
    options = ["latest", *order]
    chosen = st.segmented_control(
        "Figures of level",
        options,
        default="latest",
        format_func=lambda o: "latest" if o == "latest" else labels.get(o) or f"c={o}",
        key=f"{where}-pick-{run_id}",
        label_visibility="collapsed",
    )
    return None if chosen in (None, "latest") else int(chosen)


def lane_tiles(
    names: Sequence[str],
    kpis: Sequence[Mapping[str, Any]],
    progress: pd.DataFrame,
    active: bool,
    drift: Mapping[str, str] | None = None,
    warmups: Sequence[Mapping[str, Any]] = (),
    processes: Mapping[int, Mapping[str, Any] | None] | None = None,
) -> None:
    """One bordered box per lane: name in its colour and how the lane is doing, its
    engine's state when servescope starts it, four KPIs of one level (two by two: they
    fit three lanes side by side), the warm-up, every level's progress or outcome with
    its reason, and the language check.

    `processes` maps a lane's index to its `engine_process` record (store.get_lanes);
    plain endpoints have none."""
    per_row = min(max(len(names), 1), 3)
    warm = {w["lane_idx"]: w for w in warmups}
    processes = processes or {}
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row)
        for col, kpi in zip(cols, kpis[start : start + per_row], strict=False):
            li = kpi["lane_idx"]
            mine = progress[progress["lane_idx"] == li]
            with col.container(border=True):
                _tile_title(kpi, mine, warm.get(li), active)
                _engine_line(processes.get(li), active)
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
    label = kpi.get("load_label") or f"c={kpi['concurrency']}"  # a rate run's "2 req/s"
    level = f" · {label}" if kpi["concurrency"] else ""
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


def engine_state(
    record: Mapping[str, Any] | None, active: bool, now: float | None = None
) -> tuple[str, str] | None:
    """(state, words) of a started engine: "starting engine… 12 s", "engine ready in
    1.7 s · peak 699 MiB", "engine failed: <reason>"; None for a plain endpoint."""
    if not record or not record.get("state"):
        return None
    state = str(record["state"])
    if state == "failed":
        tail = [line for line in record.get("log_tail") or [] if str(line).strip()]
        reason = record.get("error") or record.get("exit_reason") or (tail[-1] if tail else "")
        return state, f"engine failed: {reason}" if reason else "engine failed"
    if state == "starting":
        started = record.get("started_at")
        if not active:
            return state, "engine was still starting when the run ended"
        took = f" {max(0.0, (now or time.time()) - started):.0f} s" if started else ""
        return state, f"starting engine…{took}"
    ready = record.get("ready_s")
    words = [f"engine ready in {ready:.1f} s" if ready is not None else f"engine {state}"]
    if record.get("peak_memory_mib") is not None:
        words.append(f"peak {record['peak_memory_mib']:,.0f} MiB")
    if record.get("peak_gpu_memory_mib"):
        words.append(f"GPU peak {record['peak_gpu_memory_mib']:,.0f} MiB")
    if state == "stopped":
        words.append("stopped")
    if record.get("leftover_pids"):
        words.append(f"left running: pids {', '.join(map(str, record['leftover_pids']))}")
    return state, " · ".join(words)


def _engine_line(record: Mapping[str, Any] | None, active: bool) -> None:
    """The lane's engine, when servescope starts it: its start-up clock, then how fast it
    got ready and its peak memory, or why it failed with the last lines of its log."""
    found = engine_state(record, active)
    if found is None or record is None:
        return
    state, words = found
    if state == "starting" and active:
        st.info(words, icon=":material/hourglass_top:")
    elif state == "failed":
        st.markdown(f":red[**{esc_md(words)}**]")
        tail = [str(line) for line in record.get("log_tail") or []]
        if tail:
            with st.expander("Engine log (last lines)"):
                st.code("\n".join(tail), language=None)  # engine output: never markdown
    elif record.get("leftover_pids"):
        st.markdown(f":orange[**{esc_md(words)}**]")
    else:
        st.caption(esc_md(words))


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
        label = getattr(row, "load_label", None) or f"c={row.concurrency}"
        counts = f"{label}: {row.completed + row.failed}/{row.total} requests{failed}"
        if active and row.status in ("waiting", outcome.RUNNING):
            st.progress(float(row.fraction), text=f"{counts} · {row.status}")
        elif row.status in outcome.TROUBLED:
            colour = "red" if row.status == outcome.FAILED else "orange"
            why = f": {row.error}" if row.error else ""
            st.markdown(f":{colour}[**{esc_md(counts)} · {esc_md(row.status)}**{esc_md(why)}]")
        else:
            st.caption(esc_md(f"{counts} · {row.status}"))
