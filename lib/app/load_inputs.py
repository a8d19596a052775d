"""The Run page's load section: closed-loop levels, open-loop request rates or a capacity
search, and the latency targets (SLO) that goodput and the capacity are judged by.

Returns RunConfig fields; the one-line checks are lib/load/config_check.py's, run when
the user presses Start.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from lib.core import load_pattern
from lib.core.load_pattern import ARRIVALS, CONCURRENCY, RATE, CapacitySearch, LoadPattern
from lib.core.slo import Slo

CONCURRENCY_OPTIONS = (1, 2, 4, 5, 8, 16, 32, 64)
DEFAULT_CONCURRENCY = (1, 5)
MODES = {
    "levels": "Concurrency levels",
    "rates": "Request rates",
    "capacity": "Capacity search",
}
MODE_HELP = (
    "Concurrency levels: N users, each sending again when answered (closed loop). "
    "Request rates: requests arrive on a schedule whatever the server does (open loop). "
    "Capacity search: servescope raises the load until the latency targets fail."
)


def parse_rates(text: str) -> tuple[list[float | None], str | None]:
    """ "1, 2.5, inf" -> ([1.0, 2.5, None], None), or ([], a one-line reason)."""
    try:
        return load_pattern.parse_rates(text), None
    except load_pattern.RateError as exc:
        if exc.reason == load_pattern.NOT_A_NUMBER:
            return [], f"{exc.part!r} is not a request rate: use numbers like 1, 2.5, 4 or inf."
        if exc.reason == load_pattern.NOT_ABOVE_ZERO:
            return [], f"Request rate {exc.part} must be above 0 req/s (or inf)."
        return [], "Give at least one request rate, e.g. 1, 2, 4."


def load_inputs() -> tuple[dict[str, Any], list[str]]:
    """The load section; returns (RunConfig fields, errors to show on Start)."""
    mode = st.radio(
        "Load",
        list(MODES),
        format_func=MODES.get,
        horizontal=True,
        key="run_load_mode",
        help=MODE_HELP,
    )
    errors: list[str] = []
    values: dict[str, Any] = {"concurrency": [1], "load": LoadPattern(), "capacity": None}
    if mode == "levels":
        levels = st.multiselect(
            "Concurrency levels (requests in flight)",
            CONCURRENCY_OPTIONS,
            default=list(DEFAULT_CONCURRENCY),
            key="run_concurrency",
        )
        values["concurrency"] = sorted(int(c) for c in levels)
        if not levels:
            errors.append("Pick at least one concurrency level.")
    elif mode == "rates":
        cols = st.columns([2, 1, 1, 1])
        text = cols[0].text_input(
            "Request rates (req/s; inf = all at once)", "1, 2, 4", key="run_rates"
        )
        rates, error = parse_rates(text)
        if error:
            errors.append(error)
        values["load"] = _arrivals(cols[1:], rates)
    else:
        values["capacity"], values["load"] = _capacity_inputs()
    slo = slo_inputs(required=mode == "capacity")
    values["slo"] = slo
    if mode == "capacity" and slo is None:
        errors.append("A capacity search needs a latency target: set TTFT, TPOT or E2E.")
    return values, errors


def _arrivals(cols: list[Any], rates: list[float | None]) -> LoadPattern:
    arrival = cols[0].selectbox(
        "Arrivals", ARRIVALS, key="run_arrival", help="poisson: random gaps; constant: even"
    )
    burstiness = cols[1].number_input(
        "Burstiness",
        0.1,
        100.0,
        1.0,
        step=0.1,
        key="run_burstiness",
        help="1 = Poisson; below 1 burstier, above 1 more even (vLLM's --burstiness)",
    )
    cap = cols[2].number_input("Max in flight (0 = no cap)", 0, 1024, 0, key="run_max_in_flight")
    return LoadPattern(
        mode=RATE,
        rates=rates,
        arrival=str(arrival),
        burstiness=float(burstiness),
        max_concurrency=int(cap) or None,
    )


def _capacity_inputs() -> tuple[CapacitySearch, LoadPattern]:
    cols = st.columns(3)
    by = cols[0].radio(
        "Search by",
        [CONCURRENCY, RATE],
        format_func={CONCURRENCY: "users at once", RATE: "request rate (req/s)"}.get,
        key="run_capacity_by",
        horizontal=True,
    )
    if by == CONCURRENCY:  # whole users; rates in their own inputs (a widget keeps its type)
        start = cols[1].number_input("Start at (users)", 1, 1024, 1, key="run_capacity_start")
        ceiling = cols[2].number_input("At most (users)", 1, 1024, 32, key="run_capacity_max")
    else:
        start = cols[1].number_input(
            "Start at (req/s)", 0.1, 10_000.0, 1.0, key="run_capacity_start_rate"
        )
        ceiling = cols[2].number_input(
            "At most (req/s)", 0.1, 10_000.0, 32.0, key="run_capacity_max_rate"
        )
    st.caption(
        "Doubles the load until a level misses the targets, then halves the gap to the exact "
        "number; every level tried is kept and charted."
    )
    search = CapacitySearch(mode=str(by), start=float(start), max=float(ceiling))
    return search, LoadPattern(mode=RATE) if by == RATE else LoadPattern()


def slo_inputs(required: bool) -> Slo | None:
    """Latency targets; 0 turns a target off. None when no target is set."""
    with st.expander("Latency targets (SLO)", expanded=required):
        cols = st.columns(4)
        ttft = cols[0].number_input(
            "TTFT ≤ (ms, 0 = off)",
            0.0,
            3_600_000.0,
            1000.0 if required else 0.0,
            step=100.0,
            format="%.0f",
            key="run_slo_ttft",
        )
        tpot = cols[1].number_input(
            "TPOT ≤ (ms, 0 = off)",
            0.0,
            60_000.0,
            0.0,
            step=10.0,
            format="%.0f",
            key="run_slo_tpot",
            help="50 ms per token = 20 tokens/s for each user",
        )
        e2el = cols[2].number_input(
            "E2E ≤ (ms, 0 = off)",
            0.0,
            3_600_000.0,
            0.0,
            step=500.0,
            format="%.0f",
            key="run_slo_e2el",
        )
        share = cols[3].slider(
            "Share of requests that must meet them (%)", 50, 100, 90, key="run_slo_target"
        )
    slo = Slo(ttft or None, tpot or None, e2el or None, share / 100.0)
    return None if slo.is_empty() else slo
