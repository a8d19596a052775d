"""The Results page's verdict: each lane's scaling in one sentence beside its colour
swatch, the setting that would change it when it queues, then the lanes compared
(lib/analysis/verdict.py computes them from the run document).

Lane names are user text and reach markdown: every text goes through esc_md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from lib import charts
from lib.analysis.verdict import lane_verdicts, run_verdict_lines
from lib.app.formatting import esc_md


def draw(document: Mapping[str, Any]) -> None:
    """ "What the numbers say": a line per lane, then the comparison; nothing with no lane."""
    verdicts = lane_verdicts(document)
    if not verdicts:
        return
    st.subheader("What the numbers say")
    for idx, item in enumerate(verdicts):
        swatch = f":{charts.lane_color_name(idx)}[■]"
        st.markdown(f"{swatch} **{esc_md(item['lane'])}**: {esc_md(item['sentence'])}")
        if item["setting"]:
            st.caption(f"To change it: {esc_md(item['setting'])}")
    for line in run_verdict_lines(document):
        st.markdown(esc_md(line))
