"""The report's "Variants side by side" for a matrix run (lanes whose engines servescope
started from recipes): the cells' table with the best of each column highlighted, the
memory rows, each failed cell's reason and log tail, and the matrix charts of
lib/charts/matrix.py.

The charts travel in the report's one packed data block after the run's own (and the
capacity section's): this section only places their cells, numbered from `first`.
Cell names, reasons and log lines are untrusted text: everything goes through `esc`.
A run of plain endpoints has no section and no extra charts.
"""

from __future__ import annotations

import plotly.graph_objects as go

from lib.analysis import matrix_frames as mf
from lib.charts import matrix as matrix_charts
from lib.core.slo import Slo
from lib.report.facts import RunView, scrub_urls
from lib.report.html_parts import esc, html_table, lane_cell, swatch

TITLE = "Variants side by side"
BEST_STYLE = "font-weight:700;background:#e6f4ea;color:#0b5e28"
HIDDEN = ("lane_idx", "error", "capacity_reason")


def matrix_figures(view: RunView) -> list[go.Figure]:
    """The matrix charts in the section's order; none for a run that is not a matrix."""
    if not mf.is_matrix(view.doc):
        return []
    frame, memory = mf.matrix_frame(view.doc), mf.memory_frame(view.doc)
    return [fig for _, fig, _ in matrix_charts.matrix_figures(frame, memory, view.colors)]


def _table(view: RunView) -> str:
    frame = mf.matrix_frame(view.doc)
    if frame.empty:
        return ""
    columns = [c for c in frame.columns if c not in HIDDEN]
    texts = mf.cell_texts(frame)
    best = mf.winners(frame)
    rows = []
    for i in frame.index:
        name = str(frame.loc[i, "cell"])
        cells = []
        for column in columns:
            text = esc(texts.loc[i, column])
            if column == "cell":
                cells.append(lane_cell(name, view.colors))
            elif column == "state" and frame.loc[i, "state"] == mf.FAILED:
                cells.append(f'<td class="error">{text}</td>')
            elif mf.column_metric(column) is None:
                cells.append(text)
            elif best.get(column) == name:
                cells.append(f'<td class="num" style="{BEST_STYLE}">{text}</td>')
            else:
                cells.append(f'<td class="num">{text}</td>')
        rows.append(cells)
    headers = [mf.column_label(c) for c in columns]
    return html_table(headers, rows)


def _memory_rows(view: RunView) -> str:
    items = []
    for item in mf.memory_rows(view.doc):
        color = view.colors.get(item["cell"], "#555555")
        gpu = f"<br><span class='note'>On the GPU: {esc(item['gpu_row'])}</span>"
        items.append(
            f"<li><span class='lane'>{swatch(color)}{esc(item['cell'])}</span>: "
            f"{esc(item['row'])}{gpu if item['gpu_row'] else ''}</li>"
        )
    return (
        "<h3>Memory from the engine's first second (MiB)</h3>"
        f"<ul class='memory-rows'>{''.join(items)}</ul>"
    )


def _failed(view: RunView) -> str:
    out = []
    for item in mf.failed_cells(view.doc):
        tail = "\n".join(item["log_tail"]) or "(the log is empty)"
        log = f" <code>{esc(item['log'])}</code>" if item["log"] else ""
        out.append(
            f"<p class='error'><b>{esc(item['cell'])}</b> failed: "
            f"{esc(scrub_urls(item['reason']))}</p>"
            f"<details><summary>Last lines of its engine log{log}</summary>"
            f"<pre class='text log'>{esc(tail)}</pre></details>"
        )
    return "".join(out)


def matrix_section(view: RunView, first: int, count: int) -> str:
    """The section's HTML, with `count` chart cells from fig<first> on for the figures of
    matrix_figures (the memory chart first, a full row); "" for a run that is not a matrix."""
    if not mf.is_matrix(view.doc):
        return ""
    slo = Slo.from_dict(view.doc.get("slo"))
    judged = (
        f" SLO columns and capacity judge every cell by the run's targets: {slo.describe()}."
        if slo and any(lane.get("capacity") for lane in view.doc["lanes"])
        else ""
    )
    note = (
        "<p class='note'>One row per cell: each engine variant was started, measured and "
        "stopped in turn. Figures at each load are the level's medians (p50); output "
        "throughput is all users together. The best of each column is in bold on green; "
        f"failed cells are left out of that.{esc(judged)}</p>"
    )
    cells = [f'<div class="chart" id="fig{first + i}"></div>' for i in range(count)]
    charts = ""
    if cells:
        charts = cells[0] + (f'<div class="charts">{"".join(cells[1:])}</div>' if count > 1 else "")
    return f"<h2>{TITLE}</h2>" + _table(view) + note + _failed(view) + _memory_rows(view) + charts
