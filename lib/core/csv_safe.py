"""One guard for every CSV servescope writes: a text cell that a spreadsheet would
evaluate as a formula gets a leading apostrophe (OWASP "CSV injection").

Answers, prompts, errors, lane labels, model and voter names are untrusted text; a cell
starting with `=`, `+`, `-`, `@`, a tab or a carriage return opens as a formula in Excel,
LibreOffice and Google Sheets. The apostrophe makes it text there and stays readable (and
removable) for a person. Only strings are guarded: numbers, negative ones included, are
written as numbers.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def guard(value: Any) -> Any:
    """`value` with a leading `'` if it is a string a spreadsheet would evaluate; any
    other value (numbers, None) unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
