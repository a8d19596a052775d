"""The report's "Latency targets and capacity": for a run judged against an SLO (its
own targets, lib/analysis/load_levels.judge), each lane's capacity in a sentence with
its notes, and the goodput, latency and Pareto charts of lib/charts/capacity.py.

The charts travel in the report's one packed data block after the run's own charts
(sections.charts_section's `also`): this section only places their cells, numbered on
from the run's charts. A run without targets has no section and no extra charts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from lib.charts import capacity as capacity_charts
from lib.report.facts import RunView
from lib.report.html_parts import esc, swatch

TITLE = "Latency targets and capacity"


def judged(view: RunView) -> bool:
    """Whether the run was judged against targets: the document has an SLO and capacities."""
    doc = view.doc
    return bool(doc.get("slo")) and any(lane.get("capacity") for lane in doc["lanes"])


def _chart_doc(view: RunView) -> dict[str, Any]:
    """The document with the lanes' chart-safe names (facts.chart_text), so a lane's name
    can put no markup in a chart and its colour is the report's charts' own."""
    lanes = [
        {**lane, "name": name}
        for lane, name in zip(view.doc["lanes"], view.chart_names, strict=True)
    ]
    return {**view.doc, "lanes": lanes}


def _latency_metric(slo: Mapping[str, Any]) -> str:
    """TTFT's chart, or the first latency with a limit when TTFT has none."""
    limited = [m for m, (field, _, _) in capacity_charts.METRICS.items() if slo.get(field)]
    return "ttft" if not limited or "ttft" in limited else limited[0]


def capacity_figures(view: RunView) -> list[go.Figure]:
    """Goodput vs load, latency vs load with the limit, and the Pareto view; none for a
    run without targets."""
    if not judged(view):
        return []
    doc, colors = _chart_doc(view), view.chart_colors
    metric = _latency_metric(view.doc["slo"])
    return [
        capacity_charts.goodput_vs_load(doc, colors),
        capacity_charts.latency_vs_load(doc, metric, colors=colors),
        capacity_charts.pareto(doc, colors),
    ]


def capacity_section(view: RunView, first: int, count: int) -> str:
    """Each lane's capacity and notes, and `count` cells from fig<first> on for the
    figures of capacity_figures."""
    if not judged(view):
        return ""
    items = []
    for lane in view.doc["lanes"]:
        found = lane.get("capacity") or {}
        color = view.colors.get(lane["name"], "#555555")
        summary = found.get("summary") or "no level measured"
        notes = "".join(f"<li class='note'>{esc(n)}</li>" for n in found.get("notes") or [])
        items.append(
            f"<li><span class='lane'>{swatch(color)}{esc(lane['name'])}</span>: {esc(summary)}"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</li>"
        )
    cells = "".join(f'<div class="chart" id="fig{first + i}"></div>' for i in range(count))
    return (
        f"<h2>{TITLE}</h2><ul class='capacity'>{''.join(items)}</ul>"
        "<p class='note'>Capacity: the highest load whose requests met the targets, below "
        "the lowest that did not. Goodput: requests per second within them.</p>"
        f'<div class="charts">{cells}</div>'
    )
