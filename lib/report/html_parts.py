"""HTML building blocks of the report's sections: escaping, cells, lane swatches, tables.

Every dynamic string that reaches the report goes through `esc` (html.escape, quotes
included) or `cell`; tables take cells that are already HTML, escaped by the caller.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def esc(value: Any) -> str:
    """Escaped text for HTML (quotes too: some of it lands in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def missing(value: Any) -> bool:
    """None, an empty string, or NaN (how pandas holds a missing value)."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


def cell(value: Any) -> str:
    """An escaped table cell; missing values read '–'."""
    return "–" if missing(value) else esc(value)


def json_for_script(text: str) -> str:
    # Inside <script> only "</script" and "<!--" matter; escaping every <, > and & keeps
    # the JSON valid and leaves no markup at all. U+2028/9 end lines in old JS parsers.
    for raw, safe in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, safe)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def swatch(color: str) -> str:
    return f'<span class="sw" style="background:{esc(color)}"></span>'


def lane_cell(name: str, colors: Mapping[str, str]) -> str:
    return f'<td class="lane">{swatch(colors.get(name, "#555555"))}{esc(name)}</td>'


def html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()
) -> str:
    """Rows of cells that are already HTML (escaped by the caller)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, item in enumerate(row):
            if item.startswith("<td"):
                cells.append(item)
            else:
                cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
                cells.append(f"<td{cls}>{item}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table><tr>{head}</tr>{"".join(body)}</table></div>'
