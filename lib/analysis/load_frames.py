"""What load each level of a run put on its lane, as frame columns, and the SLO
section's per-level table.

A rate run's levels are keyed 1, 2, 3 in the store (their `concurrency`); their load
says the rate. The live view's request rows carry only the key, so its frames get
`load_mode`, `load` and `load_label` from the stored levels through `level_loads` and
`with_loads`, and its charts read a rate run by rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from lib.analysis import load_levels
from lib.core.load_pattern import CONCURRENCY, level_label


def load_cells(level: Mapping[str, Any]) -> dict[str, Any]:
    """A level's load columns; a level that names no load ran closed loop at its key."""
    key = level.get("concurrency")
    mode = level.get("load_mode") or CONCURRENCY
    load = level.get("load", key if mode == CONCURRENCY else None)
    label = level.get("load_label") or level_label(None, key)
    return {"load_mode": mode, "load": load, "load_label": label}


def level_loads(
    levels: Iterable[Mapping[str, Any]],
) -> dict[tuple[int, int], dict[str, Any]]:
    """The load columns of each stored level (store.get_levels rows, or level_spans),
    by (lane_idx, level key): what a rate level's key stands for."""
    out = {}
    for lv in levels:
        load = lv.get("load") if isinstance(lv.get("load"), Mapping) else None
        if load is None and "load_mode" in lv:  # a span: its columns are already made
            out[(lv["lane_idx"], lv["concurrency"])] = {
                k: lv[k] for k in ("load_mode", "load", "load_label")
            }
            continue
        fields = load_levels.load_fields(lv["concurrency"], load, [])
        out[(lv["lane_idx"], lv["concurrency"])] = load_cells(
            {"concurrency": lv["concurrency"], **fields}
        )
    return out


def with_loads(
    frame: pd.DataFrame, loads: Mapping[tuple[int, int], Mapping[str, Any]]
) -> pd.DataFrame:
    """The frame (requests or levels, with lane_idx and concurrency) with each row's load
    columns: a rate level's from `loads` (level_loads), others closed loop at their key.

    The live view's rows carry no load; this is how its charts read a rate run by rate.
    """
    out = frame.copy()
    keys = list(zip(out["lane_idx"], out["concurrency"], strict=True))
    cells = [loads.get(k) or load_cells({"concurrency": k[1]}) for k in keys]
    for col in ("load_mode", "load", "load_label"):
        out[col] = pd.Series([c[col] for c in cells], index=out.index, dtype=object)
    out["load"] = pd.to_numeric(out["load"], errors="coerce").astype("float64")
    return out


SLO_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "load_label",
    "attainment_pct",
    "goodput_req_per_s",
    "passed",
)


def slo_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Per lane and level of a judged document (load_levels.judge), in load order: the
    share of requests within the SLO (%), goodput (req/s) and whether the level passed."""
    out = []
    for lane_idx, lane in enumerate(document.get("lanes", [])):
        for lv in (lane.get("capacity") or {}).get("levels", []):
            share = lv.get("attainment")
            out.append(
                {
                    "lane": lane["name"],
                    "lane_idx": lane_idx,
                    "load_label": lv.get("load_label"),
                    "attainment_pct": None if share is None else 100.0 * share,
                    "goodput_req_per_s": lv.get("goodput"),
                    "passed": bool(lv.get("passed")),
                }
            )
    frame = pd.DataFrame.from_records(out, columns=list(SLO_COLUMNS))
    for col in ("attainment_pct", "goodput_req_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame
