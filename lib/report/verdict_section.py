"""The verdict in the report and on the card: "What the numbers say", each lane's scaling
in one sentence (lib/analysis/verdict.py) beside its colour, the setting that would change
it when it queues, and the lanes compared.

Sentences quote lane names (user text): everything goes through `esc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lib.analysis.load_levels import capacity_amount
from lib.analysis.verdict import lane_verdicts, run_verdict_lines
from lib.core import outcome
from lib.report.facts import RunView
from lib.report.html_parts import esc, swatch

CSS = """
ul.verdict { list-style: none; padding-left: 0; margin: 6px 0 10px; }
ul.verdict li { margin: 4px 0; }
ul.verdict .setting { color: var(--muted); font-size: 13px; margin-left: 17px; }
p.verdict { margin: 4px 0; font-weight: 600; }
"""


def verdict_section(view: RunView) -> str:
    """The section's HTML; empty for a run with no lane."""
    verdicts = lane_verdicts(view.doc)
    if not verdicts:
        return ""
    items = []
    for item in verdicts:
        color = view.colors.get(item["lane"], "#555555")
        setting = (
            f"<div class='setting'>To change it: {esc(item['setting'])}</div>"
            if item["setting"]
            else ""
        )
        items.append(
            f"<li>{swatch(color)}<b>{esc(item['lane'])}</b>: {esc(item['sentence'])}{setting}</li>"
        )
    lines = "".join(f"<p class='verdict'>{esc(line)}</p>" for line in run_verdict_lines(view.doc))
    return f"<h2>What the numbers say</h2><ul class='verdict'>{''.join(items)}</ul>{lines}"


def card_verdicts(doc: Mapping[str, Any]) -> list[str | None]:
    """Each lane's sentence for the card, in the document's lane order; None for a lane
    that failed everywhere (its red rows already say so, in the room the line would take)."""
    return [
        None if lane.get("status") == outcome.FAILED else _with_capacity(lane, item["sentence"])
        for lane, item in zip(doc.get("lanes", []), lane_verdicts(doc), strict=True)
    ]


def _with_capacity(lane: Mapping[str, Any], sentence: str) -> str:
    """The lane's capacity first (the question the card answers), then how it scales."""
    capacity = lane.get("capacity")
    if not capacity:
        return sentence
    value = capacity.get("value")
    if value is None:
        head = "Capacity: none within the targets"
    else:
        head = "Capacity: " + capacity_amount(value, capacity["reason"], capacity["mode"])
    return f"{head}. {sentence[:1].upper()}{sentence[1:]}"


def card_line(sentence: str | None) -> str:
    """A lane's verdict inside its card box (two lines at most; the report has it whole)."""
    if not sentence:
        return ""
    return f'<div class="vd">{esc(sentence)}</div>'
