"""How a level, a lane and a run ended, judged from their requests.

A run whose every request failed is not "completed": this module names the outcome
once (the runner stores it; the pages, report and card read it) so that a dead engine
never shows as a green badge anywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COMPLETED = "completed"
PARTIAL = "completed with failures"
FAILED = "failed"
CANCELLED = "cancelled"
RUNNING = "running"
WARMING_UP = "warming up"
WAITING = "waiting"

# The outcomes a finished level or run can have, best first.
FINISHED = (COMPLETED, PARTIAL, FAILED, CANCELLED)
# Outcomes a reader must notice: drawn in warning colours, listed with their reasons.
TROUBLED = (PARTIAL, FAILED)


def level_status(ok: int, failed: int, cancelled: bool = False) -> str:
    """A level's outcome from its measured requests."""
    if cancelled:
        return CANCELLED
    if failed and not ok:
        return FAILED
    if failed:
        return PARTIAL
    return COMPLETED


def combined_status(statuses: Iterable[str]) -> str:
    """A lane's or a run's outcome from its levels' (or lanes') outcomes.

    Failed only when every part failed; any failure elsewhere makes it "completed
    with failures"; a cancel wins over both (the user stopped it).
    """
    seen = [s for s in statuses if s]
    if not seen:
        return COMPLETED
    if CANCELLED in seen:
        return CANCELLED
    if all(s == FAILED for s in seen):
        return FAILED
    if any(s in TROUBLED for s in seen):
        return PARTIAL
    return COMPLETED


def error_reason(errors: Sequence[str], total: int) -> str | None:
    """One line on why requests failed: "4 of 4 failed: <most common error>"."""
    if not errors:
        return None
    counts = Counter(errors)
    top, n = counts.most_common(1)[0]
    others = len(counts) - 1
    more = f" (and {others} other error{'s' if others > 1 else ''})" if others else ""
    seen = f" ({n}×)" if 1 < n < len(errors) else ""
    return f"{len(errors)} of {total} failed: {top}{seen}{more}"


def failure_lines(
    levels: Iterable[Mapping[str, Any]], names: Sequence[str], include_partial: bool = True
) -> list[str]:
    """ "lane c=4 failed: 4 of 4 failed: timed out after 60 s" for each troubled level;
    a level that gives its `load_label` ("8 req/s") is named by it, as a rate level's
    key only numbers it. Levels without one (older callers) read as closed loop."""
    out = []
    for lv in levels:
        status = lv.get("status")
        if status == FAILED or (include_partial and status == PARTIAL):
            li = lv["lane_idx"]
            name = names[li] if 0 <= li < len(names) else f"lane {li}"
            why = f": {lv['error']}" if lv.get("error") else ""
            label = lv.get("load_label") or f"c={lv['concurrency']}"
            out.append(f"{name} {label} {status}{why}")
    return out


def run_error(levels: Iterable[Mapping[str, Any]], names: Sequence[str]) -> str | None:
    """The run's one-line error for History and the CLI: its first troubled level and
    how many more there are."""
    lines = failure_lines(levels, names)
    if not lines:
        return None
    more = (
        f" (+{len(lines) - 1} more level{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    )
    return f"{lines[0]}{more}"[:500]
