"""The verdict below the CLI's tables (`run`, `capacity`, `show`): each lane's scaling in
plain words with the engine setting that would change it, then the lanes compared
(lib/analysis/verdict.py computes both from the run document).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lib.analysis.verdict import lane_verdicts, run_verdict_lines


def verdict_lines(document: Mapping[str, Any]) -> list[str]:
    """ "verdict: LANE: sentence" per lane (its setting indented below when it matters),
    then "verdict: " and each comparison of the lanes."""
    out = []
    for item in lane_verdicts(document):
        out.append(f"verdict: {item['lane']}: {item['sentence']}")
        if item["setting"]:
            out.append(f"  setting: {item['setting']}")
    out += [f"verdict: {line}" for line in run_verdict_lines(document)]
    return out


def print_verdict(document: Mapping[str, Any]) -> None:
    for line in verdict_lines(document):
        print(line)
