"""The History page's logic: the runs table and its filters (person, engine, model,
label), relabel and delete, and run-over-run overlays.

No Streamlit here. Per-level figures come from lib/core/metrics.py through
frames.level_frame (the same numbers the Results page and the CLI show); only the
numeric request columns are read, never answers, so a long history stays quick.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from lib import store
from lib.analysis import frames
from lib.analysis.lane_memory import engine_kind
from lib.core import outcome
from lib.core.identity import who_where as who_where
from lib.load.jobs import ACTIVE, process_alive

MAX_LABEL_LEN = 200

# Numeric request columns the figures need (the live view's slim set).
HISTORY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "label",
    "created",
    "status",
    "started_by",
    "host",
    "lanes",
    "models",
    "levels",
    "completed",
    "failed",
    "best_out_tok_s",
    "best_at",
    "ttft_p50_low_ms",
    "ttft_low_at",
    "error",
)

# The order the page shows them in: headline figures before the long lane and model
# names, so they are visible without scrolling sideways.
SHOWN_COLUMNS: tuple[str, ...] = (
    "label",
    "created",
    "status",
    "started_by",
    "host",
    "levels",
    "best_out_tok_s",
    "best_at",
    "ttft_p50_low_ms",
    "ttft_low_at",
    "completed",
    "failed",
    "lanes",
    "models",
    "run_id",
)

OVERLAY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "run",
    "lane",
    "model",
    "series",
    "concurrency",
    "completed",
    "failed",
    "req_per_s",
    "out_tok_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "e2el_p50_ms",
    "e2el_p99_ms",
)

# (column, words in a sentence, higher is better, compared at the highest or lowest
# common level). Throughput differences show under load; TTFT is what one user feels.
DIFF_METRICS: tuple[tuple[str, str, bool, str], ...] = (
    ("out_tok_per_s", "output throughput", True, "highest"),
    ("req_per_s", "request throughput", True, "highest"),
    ("ttft_p50_ms", "p50 TTFT", False, "lowest"),
    ("tpot_p50_ms", "p50 TPOT", False, "highest"),
    ("e2el_p50_ms", "p50 E2E latency", False, "highest"),
)


# --- reading ---------------------------------------------------------------------------


def load_runs(db: str | os.PathLike[str] | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Runs newest first (store.list_runs rows) with their stored `lanes` and a `stamp`.

    `stamp` (status, finished_at, measured requests) changes whenever the run's figures
    can have changed, so a page may cache run_levels_by_id under it.
    """
    with store.opened(db) as conn:
        runs = store.list_runs(conn, limit=limit)
        counts = store.count_measured(conn)
        lanes = store.get_lanes_of(conn, [run["run_id"] for run in runs])
        for run in runs:
            run["lanes"] = lanes[run["run_id"]]
            run["stamp"] = (run["status"], run["finished_at"], counts.get(run["run_id"], 0))
    return runs


def run_levels_by_id(run_id: str, db: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """run_levels of the run with this id (empty when it is gone)."""
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            return pd.DataFrame(columns=[*frames.LEVEL_COLUMNS, "model"])
        run["lanes"] = store.get_lanes(conn, run_id)
        return run_levels(conn, run)


def run_levels(conn: Any, run: Mapping[str, Any]) -> pd.DataFrame:
    """Per lane and level of one run: frames.LEVEL_COLUMNS plus the lane's model."""
    rows = store.get_slim_requests(conn, run["run_id"])
    names = frames.lane_names(run, run.get("lanes") or [])
    order = (run.get("config") or {}).get("concurrency") or []
    levels = frames.level_frame(rows, names, order)
    models = _lane_models(run)
    levels["model"] = [models.get(i, "") for i in levels["lane_idx"]]
    return levels


def levels_for(
    runs: Sequence[Mapping[str, Any]], db: str | os.PathLike[str] | None = None
) -> dict[str, pd.DataFrame]:
    """run_levels for every run, over one short-lived connection."""
    with store.opened(db) as conn:
        return {run["run_id"]: run_levels(conn, run) for run in runs}


def _lane_models(run: Mapping[str, Any]) -> dict[int, str]:
    if run.get("lanes"):
        return {lane["lane_idx"]: str(lane["model"]) for lane in run["lanes"]}
    config_lanes = (run.get("config") or {}).get("lanes", [])
    return {i: str(lane.get("model", "")) for i, lane in enumerate(config_lanes)}


def run_title(run: Mapping[str, Any]) -> str:
    """What a run is called in lists and legends: its label, else its id."""
    return str(run.get("label") or run["run_id"])


def _created(run: Mapping[str, Any]) -> datetime | None:
    ts = run.get("created_at")
    # Naive local time: the table shows the user's clock, as the CLI's list does.
    return datetime.fromtimestamp(ts, UTC).astimezone().replace(tzinfo=None) if ts else None


# --- the runs table --------------------------------------------------------------------


# Status cells in the colours of the run header's badges: a failure shows in the list.
_STATUS_CSS = {
    outcome.FAILED: "color: #c62828; font-weight: 600",
    outcome.PARTIAL: "color: #b26a00; font-weight: 600",
}


def status_style(status: Any) -> str:
    """CSS for a status cell of the runs table (pandas Styler.map)."""
    return _STATUS_CSS.get(str(status), "")


def _judged_status(status: str | None, levels: pd.DataFrame) -> str | None:
    """The stored status, except that a run stored as "completed" before outcomes were
    judged says now what its levels' requests did (a dead engine is not a success)."""
    if status != outcome.COMPLETED or levels.empty:
        return status
    return outcome.combined_status(
        outcome.level_status(int(ok), int(bad))
        for ok, bad in zip(levels["completed"], levels["failed"], strict=True)
    )


def _level_name(level: Mapping[str, Any]) -> str:
    """ "c=5", or an open-loop level's "2 req/s" (its key only numbers it)."""
    label = level.get("load_label")
    return label if isinstance(label, str) and label else f"c={int(level['concurrency'])}"


def _levels_text(config: Mapping[str, Any], levels: pd.DataFrame) -> str:
    """The run's levels as configured ("1, 5"), or the loads its rate levels ran at."""
    by_load = (config.get("load") or {}).get("mode") == "rate" or config.get("capacity")
    if by_load and "load_label" in levels and not levels.empty:
        return ", ".join(dict.fromkeys(str(x) for x in levels["load_label"].dropna()))
    return ", ".join(str(c) for c in config.get("concurrency") or [])


def history_frame(
    runs: Sequence[Mapping[str, Any]], levels: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """One row per run: label, date, status, lanes, models, levels and headline figures.

    Headline figures are the run's best lane: the highest output throughput at any
    level (and where), and the lowest p50 TTFT at the run's lowest measured level.
    """
    out = []
    for run in runs:
        config = run.get("config") or {}
        lv = levels.get(run["run_id"])
        lv = lv if lv is not None else pd.DataFrame(columns=list(frames.LEVEL_COLUMNS))
        names = frames.lane_names(run, run.get("lanes") or [])
        models = list(dict.fromkeys(_lane_models(run).values()))
        row: dict[str, Any] = {
            "run_id": run["run_id"],
            "label": run.get("label") or "",
            "created": _created(run),
            "status": _judged_status(run.get("status"), lv),
            # Blank for runs stored before runs recorded who and where (migration 8).
            "started_by": run.get("started_by") or "",
            "host": run.get("host") or "",
            "lanes": ", ".join(names),
            "models": ", ".join(models),
            "levels": _levels_text(config, lv),
            "completed": int(lv["completed"].sum()) if not lv.empty else 0,
            "failed": int(lv["failed"].sum()) if not lv.empty else 0,
            "best_out_tok_s": None,
            "best_at": None,
            "ttft_p50_low_ms": None,
            "ttft_low_at": None,
            "error": run.get("error"),
        }
        thr = lv[lv["out_tok_per_s"].notna()] if not lv.empty else lv
        if not thr.empty:
            best = thr.loc[thr["out_tok_per_s"].idxmax()]
            row["best_out_tok_s"] = float(best["out_tok_per_s"])
            row["best_at"] = f"{_level_name(best)} · {best['lane']}"
        ttft = lv[lv["ttft_p50_ms"].notna()] if not lv.empty else lv
        if not ttft.empty:
            low = ttft[ttft["concurrency"] == ttft["concurrency"].min()]
            best = low.loc[low["ttft_p50_ms"].idxmin()]
            row["ttft_p50_low_ms"] = float(best["ttft_p50_ms"])
            row["ttft_low_at"] = f"{_level_name(best)} · {best['lane']}"
        out.append(row)
    frame = pd.DataFrame.from_records(out, columns=list(HISTORY_COLUMNS))
    for col in ("best_out_tok_s", "ttft_p50_low_ms"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["created"] = pd.to_datetime(frame["created"])
    return frame


# --- filters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterOptions:
    """What the History filters offer: every person, engine and model of the listed
    runs, each once, sorted without regard to case."""

    people: list[str]
    engines: list[str]
    models: list[str]


def run_engines(run: Mapping[str, Any]) -> list[str]:
    """The engines of a run's lanes, each once: what each endpoint said it is (vllm,
    ollama, llama.cpp), else its API dialect (openai); a run not yet started has only its
    config's lanes, whose dialect is all that is known."""
    lanes = run.get("lanes") or (run.get("config") or {}).get("lanes") or []
    return list(dict.fromkeys(kind for lane in lanes if (kind := engine_kind(lane))))


def run_models(run: Mapping[str, Any]) -> list[str]:
    """The models of a run's lanes, each once."""
    return [m for m in dict.fromkeys(_lane_models(run).values()) if m]


def _sorted(values: Collection[str]) -> list[str]:
    return sorted(set(values), key=lambda v: (v.casefold(), v))


def filter_options(runs: Sequence[Mapping[str, Any]]) -> FilterOptions:
    """The choices of the History filters over these runs. A run stored before runs
    recorded who started them adds no person."""
    return FilterOptions(
        people=_sorted([str(r["started_by"]) for r in runs if r.get("started_by")]),
        engines=_sorted([e for r in runs for e in run_engines(r)]),
        models=_sorted([m for r in runs for m in run_models(r)]),
    )


def filter_runs(
    runs: Sequence[Mapping[str, Any]],
    people: Collection[str] = (),
    engines: Collection[str] = (),
    models: Collection[str] = (),
    label: str = "",
) -> list[Mapping[str, Any]]:
    """The runs every given filter keeps, in their order: started by one of `people`,
    with a lane of one of `engines` and one of `models`, and a label containing `label`
    (case-insensitive, spaces around it ignored). An empty filter keeps every run."""
    wanted = label.strip().casefold()
    return [
        run
        for run in runs
        if (not people or run.get("started_by") in people)
        and (not engines or not set(engines).isdisjoint(run_engines(run)))
        and (not models or not set(models).isdisjoint(run_models(run)))
        and (not wanted or wanted in str(run.get("label") or "").casefold())
    ]


def is_filtered(
    people: Collection[str] = (),
    engines: Collection[str] = (),
    models: Collection[str] = (),
    label: str = "",
) -> bool:
    """Whether any filter is set (the page then says how many runs it shows)."""
    return bool(people or engines or models or label.strip())


# --- changing runs ---------------------------------------------------------------------


def validate_label(label: str) -> str:
    """The stripped label, or ValueError with one line."""
    cleaned = (label or "").strip()
    if len(cleaned) > MAX_LABEL_LEN:
        raise ValueError(f"Label is longer than {MAX_LABEL_LEN} characters.")
    if not cleaned.isprintable():
        raise ValueError("Label has control characters; use printable text only.")
    return cleaned


def relabel_run(run_id: str, label: str, db: str | os.PathLike[str] | None = None) -> str:
    """Set a run's label (empty clears it); returns the stored label."""
    cleaned = validate_label(label)
    with store.opened(db) as conn:
        if store.get_run(conn, run_id) is None:
            raise ValueError(f"No run {run_id!r} (deleted meanwhile?).")
        store.update_run(conn, run_id, label=cleaned)
    return cleaned


def delete_run(run_id: str, db: str | os.PathLike[str] | None = None) -> None:
    """Delete a run with its lanes, requests and samples.

    Refuses while the run's process is alive: it would go on writing rows for a run
    that no longer exists. Cancel it first.
    """
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            raise ValueError(f"No run {run_id!r} (deleted meanwhile?).")
        if run["status"] in ACTIVE and process_alive(run.get("pid"), run_id):
            raise ValueError("This run is still going; cancel it on the Run page first.")
        store.delete_run(conn, run_id)


# --- overlays --------------------------------------------------------------------------


def overlay_frame(
    runs: Sequence[Mapping[str, Any]],
    levels: Mapping[str, pd.DataFrame],
    run_ids: Sequence[str],
) -> pd.DataFrame:
    """Per run, lane and level of the chosen runs, with a `series` name per run × lane.

    Runs sharing a label are told apart by their id, so every legend entry is unique.
    """
    by_id = {run["run_id"]: run for run in runs}
    chosen = [by_id[r] for r in run_ids if r in by_id]
    titles = [run_title(run) for run in chosen]
    parts = []
    for run, title in zip(chosen, titles, strict=True):
        if titles.count(title) > 1:
            title = f"{title} [{run['run_id']}]"
        lv = levels.get(run["run_id"])
        if lv is None or lv.empty:
            continue
        part = lv.copy()
        part["run_id"] = run["run_id"]
        part["run"] = title
        part["series"] = title + " · " + part["lane"]
        if "model" not in part:
            part["model"] = ""
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=list(OVERLAY_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)
    return frame[list(OVERLAY_COLUMNS)]


def match_lanes(
    base: Sequence[tuple[str, str]], other: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Pairs (base lane, other lane) of the same engine and model across two runs.

    Lanes are (name, model). Same name first, then same model; if one lane is left on
    each side (a run of one engine against a run of another), they are compared.
    """
    pairs: list[tuple[str, str]] = []
    left_b, left_o = list(base), list(other)
    for key in (0, 1):
        for b in list(left_b):
            match = next((o for o in left_o if o[key] and o[key] == b[key]), None)
            if match is not None:
                pairs.append((b[0], match[0]))
                left_b.remove(b)
                left_o.remove(match)
    if len(left_b) == 1 and len(left_o) == 1:
        pairs.append((left_b[0][0], left_o[0][0]))
    return pairs


def _pct(base: float, value: float) -> float | None:
    return (value - base) / base * 100.0 if base else None


def headline_diffs(overlay: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """How each other run differs from `baseline` (a run_id) in each headline figure.

    One row per run, matched lane pair and metric, at the highest common concurrency
    (throughput, TPOT, E2E) or the lowest (TTFT); `text` reads like
    "+38% output throughput at c=8"; `better` says whether the change is good.
    """
    columns = ["run", "lane", "metric", "concurrency", "baseline", "value", "change_pct"]
    columns += ["better", "text"]
    rows: list[dict[str, Any]] = []
    if overlay.empty or baseline not in set(overlay["run_id"]):
        return pd.DataFrame(columns=columns)
    base = overlay[overlay["run_id"] == baseline]
    base_lanes = list(dict.fromkeys(zip(base["lane"], base["model"], strict=True)))
    for run_id in dict.fromkeys(overlay["run_id"]):
        if run_id == baseline:
            continue
        other = overlay[overlay["run_id"] == run_id]
        other_lanes = list(dict.fromkeys(zip(other["lane"], other["model"], strict=True)))
        for b_lane, o_lane in match_lanes(base_lanes, other_lanes):
            b = base[base["lane"] == b_lane].set_index("concurrency")
            o = other[other["lane"] == o_lane].set_index("concurrency")
            lane_text = b_lane if b_lane == o_lane else f"{b_lane} → {o_lane}"
            for col, words, higher, where in DIFF_METRICS:
                common = sorted(
                    set(b.index[b[col].notna()].tolist()) & set(o.index[o[col].notna()].tolist())
                )
                if not common:
                    continue
                c = common[-1] if where == "highest" else common[0]
                bv, ov = float(b.at[c, col]), float(o.at[c, col])
                change = _pct(bv, ov)
                if change is None:
                    continue
                better = None if round(change) == 0 else (change > 0) == higher
                rows.append(
                    {
                        "run": str(other["run"].iloc[0]),
                        "lane": lane_text,
                        "metric": words,
                        "concurrency": int(c),
                        "baseline": bv,
                        "value": ov,
                        "change_pct": change,
                        "better": better,
                        "text": f"{change:+.0f}% {words} at c={int(c)}",
                    }
                )
    return pd.DataFrame.from_records(rows, columns=columns)
