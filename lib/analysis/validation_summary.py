"""The run-wide summary of the levels' checks (lib/analysis/validation.py): how many were
made and passed, and one line per check that warned or failed, naming its lane and level
("⚠ vLLM c=5 streaming: …", "⚠ vLLM 8 req/s schedule: …")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PASS, WARN, FAIL, UNMEASURABLE = "pass", "warn", "fail", "unmeasurable"


def run_verdict(lanes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over every level of every lane: how many checks could be made, how many passed,
    and one line per check that did not pass ("vLLM c=5 streaming: …")."""
    made = passed = 0
    problems: list[dict[str, str]] = []
    for lane in lanes:
        for level in lane.get("levels") or []:
            for item in level.get("validation") or []:
                if item["status"] == UNMEASURABLE:
                    continue
                made += 1
                if item["status"] == PASS:
                    passed += 1
                    continue
                problems.append(
                    {
                        "lane": lane["name"],
                        "concurrency": level.get("concurrency"),
                        # A rate level's key only numbers it: its label says its load.
                        "load_label": level.get("load_label"),
                        **item,
                    }
                )
    total = sum(
        len(level.get("validation") or []) for lane in lanes for level in lane.get("levels") or []
    )
    return {"checks": total, "made": made, "passed": passed, "problems": problems}


def verdict_line(verdict: Mapping[str, Any]) -> str:
    """ "numbers checked: 10 of 12 passed (2 not measurable)" for a header or a table foot."""
    if not verdict.get("checks"):
        return "numbers checked: none (no level ran)"
    unmeasured = verdict["checks"] - verdict["made"]
    text = f"numbers checked: {verdict['passed']} of {verdict['made']} passed"
    return text + (f" ({unmeasured} not measurable)" if unmeasured else "")


def problem_lines(verdict: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """One line per check that warned or failed: "⚠ vLLM c=5 streaming: …", a rate
    level by its load ("⚠ vLLM 8 req/s schedule: …"): the problem's own load_label, else
    its level's in `lanes` (the document's), else its key as a concurrency."""
    mark = {WARN: "⚠", FAIL: "✗"}
    return [
        f"{mark.get(p['status'], '?')} {p['lane']} {problem_level(p, lanes)} "
        f"{p['check']}: {p['detail']}"
        for p in verdict.get("problems") or []
    ]


def problem_level(problem: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]] = ()) -> str:
    """How a problem names its level: "c=5", or a rate level's "8 req/s" (a rate run's
    level key only numbers its levels)."""
    if problem.get("load_label"):
        return str(problem["load_label"])
    for lane in lanes:
        if lane.get("name") != problem["lane"]:
            continue
        for level in lane.get("levels") or []:
            if level.get("concurrency") == problem["concurrency"] and level.get("load_label"):
                return str(level["load_label"])
    return f"c={problem['concurrency']}"
