"""The live view's per-level progress and tile figures: which levels each lane runs (and
what each one's load reads as), its requests done of N, and each lane's headline figures
at one level.

A closed-loop run's levels are its configured concurrencies; a rate run's are keyed 1..N
in the order of its rates (the key only numbers them); a capacity search picks its loads
as it goes, so its levels are known only from the stored level rows, lane by lane.
`frames` re-exports these under their old names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from lib.analysis.load_frames import level_loads
from lib.core import outcome
from lib.core.load_pattern import RATE, level_label

PROGRESS_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "load_label",
    "status",
    "completed",
    "failed",
    "total",
    "fraction",
    "error",
)

# One level a lane runs: {"concurrency": key, "load_label": "2 req/s", "total": requests}.
Plan = Mapping[int, Sequence[Mapping[str, Any]]]


def level_plan(
    config: Mapping[str, Any], levels: Sequence[Mapping[str, Any]], lanes: int
) -> dict[int, list[dict[str, Any]]]:
    """Per lane index, the levels it runs in order, with their labels and request counts.

    `levels` are store.get_levels rows: a capacity search's only source (its levels
    appear as they start); for other runs they only refine a label.
    """
    requests = int(config.get("requests") or 0)
    stored = level_loads(levels)
    search = config.get("capacity")
    if search:
        out: dict[int, list[dict[str, Any]]] = {li: [] for li in range(lanes)}
        by_start = sorted(
            levels, key=lambda lv: (lv.get("started_at") or math.inf, lv["concurrency"])
        )
        for lv in by_start:
            key = lv["concurrency"]
            # lib/load/runner: a searched concurrency measures at least two requests a user.
            total = requests if search.get("mode") == RATE else max(requests, 2 * key)
            label = stored[(lv["lane_idx"], key)]["load_label"]
            row = {"concurrency": key, "load_label": label, "total": total}
            out.setdefault(lv["lane_idx"], []).append(row)
        return out
    load = config.get("load") or {}
    if load.get("mode") == RATE:
        cap = load.get("max_concurrency")
        keyed = [
            (key, level_label({"mode": RATE, "rate": rate, "max_concurrency": cap}, key))
            for key, rate in enumerate(load.get("rates") or [], start=1)
        ]
    else:
        keyed = [(c, level_label(None, c)) for c in config.get("concurrency") or []]
    return {
        li: [
            {
                "concurrency": key,
                "load_label": (stored.get((li, key)) or {}).get("load_label") or label,
                "total": requests,
            }
            for key, label in keyed
        ]
        for li in range(lanes)
    }


def plan_order(plan: Plan) -> list[int]:
    """Every level key of the plan once, lane by lane in their order (for the charts)."""
    return list(dict.fromkeys(row["concurrency"] for li in sorted(plan) for row in plan[li]))


def pick_labels(plan: Plan) -> dict[int, str] | None:
    """What each level key reads as, when it reads the same on every lane (a picker of
    levels can then offer it); None when a key stands for different loads on different
    lanes (a capacity search by rate)."""
    labels: dict[int, str] = {}
    for rows in plan.values():
        for row in rows:
            if labels.setdefault(row["concurrency"], row["load_label"]) != row["load_label"]:
                return None
    return labels


def progress_frame(
    names: Sequence[str],
    concurrency: Sequence[int],
    total: int,
    counts: Mapping[tuple[int, int], Mapping[str, int]],
    levels: Sequence[Mapping[str, Any]],
    rows: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
    plan: Plan | None = None,
) -> pd.DataFrame:
    """Requests done and failed of N per lane and level.

    The levels are `plan`'s (level_plan) where given, else the configured `concurrency`
    levels of `total` requests each. `counts` is store.count_requests; `levels`
    store.get_levels (its status and error say how it ended; a level with no row yet is
    waiting). `rows` gives the request rows, read only for a troubled level stored
    without a reason (older runs).
    """
    status = {(lv["lane_idx"], lv["concurrency"]): lv["status"] for lv in levels}
    errors = {(lv["lane_idx"], lv["concurrency"]): lv.get("error") for lv in levels}
    stored = level_loads(levels)
    out = []
    for li, name in enumerate(names):
        mine = (
            plan.get(li, [])
            if plan is not None
            else [{"concurrency": c, "total": total} for c in concurrency]
        )
        for level in mine:
            c, n = level["concurrency"], int(level["total"])
            label = level.get("load_label") or (stored.get((li, c)) or {}).get("load_label")
            got = counts.get((li, c), {})
            ok, bad = int(got.get("completed") or 0), int(got.get("failed") or 0)
            state = status.get((li, c), outcome.WAITING)
            reason = errors.get((li, c))
            if state == outcome.COMPLETED and bad:
                state = outcome.level_status(ok, bad)  # stored before outcomes were judged
            if state in outcome.TROUBLED and not reason and rows is not None:
                reason = _reason(rows(), li, c, ok + bad)  # read only when needed
            out.append(
                {
                    "lane": name,
                    "lane_idx": li,
                    "concurrency": c,
                    "load_label": label or level_label(None, c),
                    "status": state,
                    "completed": ok,
                    "failed": bad,
                    "total": n,
                    "fraction": min((ok + bad) / n, 1.0) if n else 0.0,
                    "error": reason,
                }
            )
    return pd.DataFrame.from_records(out, columns=list(PROGRESS_COLUMNS))


def _reason(rows: Sequence[Mapping[str, Any]], lane_idx: int, c: int, total: int) -> str | None:
    """Why a level's requests failed, from its rows (for levels stored without one)."""
    errors = [
        str(r["error"])
        for r in rows
        if r["lane_idx"] == lane_idx and r["concurrency"] == c and r.get("error")
    ]
    return outcome.error_reason(errors, total)


def kpis(
    levels: pd.DataFrame,
    names: Sequence[str],
    pick: int | None = None,
    loads: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Headline figures per lane at one level, with that level's done and failed counts.

    The level is `pick` where the lane has data for it; otherwise its latest level with
    answers: while a run goes on, the level being measured; for a finished run, the last
    (usually the highest) level that answered. `concurrency` says which (its key),
    `load_label` what its load reads as (from `loads`, level_loads of the stored levels:
    a rate run's "2 req/s"; "c=4" for a closed-loop level).
    """
    out = []
    for li, name in enumerate(names):
        mine = levels[levels["lane_idx"] == li]
        row: dict[str, Any] = {"lane": name, "lane_idx": li, "concurrency": None}
        row["load_label"] = None
        row |= dict.fromkeys(("ttft_p50_ms", "tok_per_s_p50", "out_tok_per_s"))
        row |= {"completed": int(mine["completed"].sum()), "failed": int(mine["failed"].sum())}
        picked = mine[mine["concurrency"] == pick] if pick is not None else mine.iloc[0:0]
        answered = mine[mine["completed"] > 0]
        # The picked level; else the latest that answered at all (a level that failed
        # outright has no figures to show: its failure is listed beside them).
        shown = picked if not picked.empty else answered if not answered.empty else mine
        if not shown.empty:
            last = shown.iloc[-1]
            row |= {"completed": int(last["completed"]), "failed": int(last["failed"])}
            key = int(last["concurrency"])
            row["concurrency"] = key
            load = (loads or {}).get((li, key)) or {}
            row["load_label"] = load.get("load_label") or _label_of(last, key)
            for k in ("ttft_p50_ms", "tok_per_s_p50", "out_tok_per_s"):
                value = last[k]
                row[k] = None if pd.isna(value) else float(value)
        out.append(row)
    return out


def _label_of(row: pd.Series, key: int) -> str:
    """The level frame's own label where it has one (level_frame given loads)."""
    label = row.get("load_label")
    return label if isinstance(label, str) and label else level_label(None, key)
