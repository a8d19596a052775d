"""The Results page's checks of a run's own numbers: the verdict line in green, amber or
red with one line per check that did not pass, and every check of every level in an
"All checks" expander (lib/analysis/validation.py makes them).

Lane names are user text and reach markdown (alerts and st.table cells both render it):
every text goes through esc_md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from lib.analysis import validation
from lib.app.formatting import esc_md
from lib.core.load_pattern import RATE

STATUS_TEXT = {
    validation.PASS: "✓ pass",
    validation.WARN: "⚠ warn",
    validation.FAIL: "✗ fail",
    validation.UNMEASURABLE: "– not measurable",
}
SHOWN_PROBLEMS = 8  # lines under the verdict; the expander lists every check


def checks_frame(doc: Mapping[str, Any]) -> pd.DataFrame:
    """One row per check of every level of every lane, status with its symbol.

    A run with rate levels names each level by its load in a "Load" column ("2 req/s",
    "c=4"): a rate level's key only numbers it. Closed-loop runs keep "Concurrency".
    """
    rated = any(level.get("load_mode") == RATE for lane in doc["lanes"] for level in lane["levels"])
    head = "Load" if rated else "Concurrency"
    rows = [
        {
            "Lane": lane["name"],
            head: level_name(level) if rated else level.get("concurrency"),
            "Check": item["check"],
            "Status": STATUS_TEXT.get(item["status"], item["status"]),
            "Detail": item["detail"],
        }
        for lane in doc["lanes"]
        for level in lane["levels"]
        for item in level.get("validation") or []
    ]
    return pd.DataFrame(rows, columns=["Lane", head, "Check", "Status", "Detail"])


def level_name(level: Mapping[str, Any]) -> str:
    return str(level.get("load_label") or f"c={level.get('concurrency')}")


def checks_section(doc: Mapping[str, Any]) -> None:
    """The verdict and its problem lines, then the table of all checks (collapsed)."""
    verdict = doc.get("validation") or {}
    if not verdict.get("checks"):
        return  # no level ran: the run's own status says why
    statuses = {p["status"] for p in verdict.get("problems") or []}
    lines = validation.problem_lines(verdict, doc["lanes"])
    shown = [esc_md(line) for line in lines[:SHOWN_PROBLEMS]]
    if len(lines) > SHOWN_PROBLEMS:
        shown.append(f"… {len(lines) - SHOWN_PROBLEMS} more under All checks")
    # Two trailing spaces: a markdown line break, one problem a line.
    body = "  \n".join([esc_md(validation.verdict_line(verdict)), *shown])
    if validation.FAIL in statuses:
        st.error(body, icon=":material/error:")
    elif statuses:
        st.warning(body, icon=":material/warning:")
    else:
        st.success(body, icon=":material/check_circle:")
    with st.expander("All checks"):
        frame = checks_frame(doc)
        for col in ("Lane", "Load", "Check", "Detail"):
            if col not in frame.columns:
                continue
            frame[col] = frame[col].map(esc_md)
        st.table(frame, hide_index=True)
        st.caption(
            "Each level checks its own stored numbers: whether answers streamed token by "
            "token, whether the client kept up, token counts against chunks, E2E against "
            "TTFT + ITL and the client's own count (and Ollama's eval_duration on Ollama lanes)."
        )
