"""Text for widgets: markdown escaping, numbers, the dash for a missing cell, status colours.

Model and endpoint names are untrusted: whatever reaches markdown goes through esc_md.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

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
