"""Answers side by side and the quality checks (language drift, JSON validity); model
output shown as text, never rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from lib import charts
from lib.analysis import frames
from lib.app.formatting import esc_md, fmt_num


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
    # A rate level's key only numbers it: the picker names its load ("2 req/s").
    labels = {
        lv["concurrency"]: lv.get("load_label") or f"c={lv['concurrency']}"
        for lane in doc["lanes"]
        for lv in lane.get("levels") or []
    }
    level = st.selectbox(
        "Level",
        levels,
        key=f"answers-level-{run_id}",
        format_func=lambda c: labels.get(c, f"c={c}"),
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
