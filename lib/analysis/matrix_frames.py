"""The matrix side by side: each engine variant ("cell") a run started from a recipe, its
figures at each load, its start-up and its memory, as pandas frames (no figures here).

A cell is a lane whose run-document entry carries ``engine_process`` (lib/load/
launched_lane.py); other lanes are plain endpoints and stay out of these frames. The
figures come from the document's level summaries (lib/analysis/results.py) and, with an
SLO, from load_levels.judge: attainment and goodput per level, capacity per cell.

- ``matrix_frame``: one row per cell: engine, variant, settings, state, start-up, peak
  memory, capacity at the SLO, and one column per metric and load
  (``"out_tok_per_s@c=4"``); ``column_label`` names a column for people and
  ``cell_texts`` writes the frame as the table shows it ("–" where nothing was measured).
- ``winners``: per column the best cell (most throughput, least latency, memory and
  start-up), failed cells left out; ``failed_cells``: each failed cell's reason and log
  tail.
- ``memory_rows``: the seed team's memory row per cell, "6 MiB → 603 (weights loaded) →
  622 (KV cache reserved) → 699 (peak under load)".
- ``memory_frame``: each cell's process memory against seconds since ITS engine started,
  with the memory phases as points of their own (``run_start`` finds what the samples'
  ``t`` counts from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lib.analysis.load_levels import judge
from lib.core.load_pattern import RATE
from lib.core.slo import Slo
from lib.launch import phases

MAX, MIN = "max", "min"
FAILED = "failed"
MIB = 1024 * 1024
RSS_NAME, GPU_NAME, PROCESS_SOURCE = "rss_bytes", "gpu_memory_used_bytes", "process"
SEP = "@"  # level columns: "<metric>@<load label>"
_SLO_KEYS = ("slo_met_pct", "goodput_req_per_s")


@dataclass(frozen=True)
class Metric:
    """A column of figures: what it is, its unit, which way is better, its decimals."""

    key: str
    label: str
    unit: str
    better: str
    digits: int

    def title(self) -> str:
        return f"{self.label} ({self.unit})"


# Per load level, from each level's summary (and its SLO verdict when judged).
LEVEL_METRICS: tuple[Metric, ...] = (
    Metric("out_tok_per_s", "Output throughput", "tok/s", MAX, 1),
    Metric("ttft_p50_ms", "TTFT p50", "ms", MIN, 0),
    Metric("tpot_p50_ms", "TPOT p50", "ms", MIN, 1),
    Metric("e2el_p50_ms", "E2E p50", "ms", MIN, 0),
    Metric("slo_met_pct", "Within SLO", "%", MAX, 0),
    Metric("goodput_req_per_s", "Goodput", "req/s", MAX, 2),
)
# Once per cell.
CELL_METRICS: tuple[Metric, ...] = (
    Metric("ready_s", "Start-up to ready", "s", MIN, 2),
    Metric("peak_memory_mib", "Peak memory", "MiB", MIN, 0),
    Metric("peak_gpu_memory_mib", "Peak GPU memory", "MiB", MIN, 0),
    Metric("capacity_users", "Capacity at SLO", "users at once", MAX, 0),
    Metric("capacity_req_per_s", "Capacity at SLO", "req/s", MAX, 2),
)
METRICS: dict[str, Metric] = {m.key: m for m in (*LEVEL_METRICS, *CELL_METRICS)}
TEXT_COLUMNS: dict[str, str] = {
    "cell": "Cell",
    "engine": "Engine",
    "variant": "Variant",
    "settings": "Settings",
    "state": "State",
}


def is_matrix(document: Mapping[str, Any]) -> bool:
    """Whether any lane's engine was started by servescope from a recipe."""
    return any(lane.get("engine_process") for lane in document.get("lanes") or [])


def cells(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The lanes that are cells, in the run's order."""
    return [lane for lane in document.get("lanes") or [] if lane.get("engine_process")]


def settings_text(process: Mapping[str, Any]) -> str:
    """The engine settings the recipe set, "max_num_seqs 4, dtype bfloat16" ("" if none)."""
    settings = process.get("settings") or {}
    return ", ".join(f"{k} {_value_text(v)}" for k, v in settings.items())


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def level_column(metric: str, load_label: str) -> str:
    return f"{metric}{SEP}{load_label}"


def split_column(column: str) -> tuple[str, str | None]:
    """("out_tok_per_s", "c=4") for a level column, (column, None) for the others."""
    metric, sep, label = column.partition(SEP)
    return (metric, label) if sep and metric in METRICS else (column, None)


def column_metric(column: str) -> Metric | None:
    """The metric a numeric column holds; None for text columns."""
    return METRICS.get(split_column(column)[0])


def column_label(column: str) -> str:
    """A column's name for people: "Output throughput (tok/s) · c=4", "Peak memory (MiB)"."""
    metric, label = split_column(column)
    found = METRICS.get(metric)
    if found is None:
        return TEXT_COLUMNS.get(column, column)
    return found.title() + (f" · {label}" if label else "")


def level_columns(frame: pd.DataFrame, metric: str) -> list[str]:
    """The frame's columns of one level metric, in load order."""
    return [c for c in frame.columns if split_column(c)[0] == metric and split_column(c)[1]]


def _judged(document: Mapping[str, Any], slo: Slo | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The document judged against `slo` when one with a target is given; else as it is
    (a run with an SLO of its own already carries its verdicts)."""
    found = slo if isinstance(slo, Slo) else Slo.from_dict(slo)
    if found is None or found.is_empty():
        return document
    search = ((document.get("settings") or {}).get("capacity") or {}).get("mode")
    return judge(document, found, search)


def _measured(level: Mapping[str, Any]) -> bool:
    return (level.get("completed") or 0) > 0


def _p50(level: Mapping[str, Any], field: str) -> float | None:
    dist = level.get(field)
    return dist.get("p50") if isinstance(dist, Mapping) else None


def _level_values(level: Mapping[str, Any]) -> dict[str, float | None]:
    values: dict[str, float | None] = {
        "out_tok_per_s": level.get("output_throughput"),
        "ttft_p50_ms": _p50(level, "ttft_ms"),
        "tpot_p50_ms": _p50(level, "tpot_ms"),
        "e2el_p50_ms": _p50(level, "e2el_ms"),
    }
    verdict = level.get("slo")
    if verdict:
        attainment = verdict.get("attainment")
        values["slo_met_pct"] = None if attainment is None else 100.0 * attainment
        values["goodput_req_per_s"] = verdict.get("goodput")
    return values


def _load_key(level: Mapping[str, Any]) -> float:
    load = level.get("load")
    return math.inf if load is None else float(load)


def _label(level: Mapping[str, Any]) -> str:
    return str(level.get("load_label") or f"c={level.get('concurrency')}")


def load_labels(document: Mapping[str, Any]) -> list[str]:
    """The loads any cell measured, lowest first ("all at once" last)."""
    seen: dict[str, float] = {}
    for lane in cells(document):
        for lv in lane.get("levels") or []:
            if _measured(lv):
                seen.setdefault(_label(lv), _load_key(lv))
    return sorted(seen, key=lambda label: (seen[label], label))


def matrix_frame(
    document: Mapping[str, Any], slo: Slo | Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """One row per cell (see the module's docstring); `slo` judges the cells anew (the
    Results page's targets), else the run's own SLO verdicts are used when it had one.

    Columns: lane_idx, cell, engine, variant, settings, state, error, ready_s,
    peak_memory_mib, peak_gpu_memory_mib (only when a cell had a GPU reading),
    capacity_users or capacity_req_per_s with capacity_reason (only when judged), then
    for each metric of LEVEL_METRICS and each load any cell measured, "<metric>@<load>".
    SLO columns appear only when the levels were judged.
    """
    doc = _judged(document, slo)
    labels = load_labels(doc)
    rows: list[dict[str, Any]] = []
    judged = any(lane.get("capacity") for lane in cells(doc))
    gpu = any((lane["engine_process"] or {}).get("peak_gpu_memory_mib") for lane in cells(doc))
    for idx, lane in enumerate(doc.get("lanes") or []):
        process = lane.get("engine_process")
        if not process:
            continue
        recipe = process.get("recipe") or {}
        row: dict[str, Any] = {
            "lane_idx": idx,
            "cell": str(lane["name"]),
            "engine": recipe.get("engine") or lane.get("engine") or "",
            "variant": process.get("variant") or recipe.get("variant") or "",
            "settings": settings_text(process),
            "state": process.get("state") or "",
            "error": process.get("error") or _level_error(lane),
            "ready_s": process.get("ready_s"),
            "peak_memory_mib": process.get("peak_memory_mib"),
        }
        if gpu:
            row["peak_gpu_memory_mib"] = process.get("peak_gpu_memory_mib")
        if judged:
            found = lane.get("capacity") or {}
            key = "capacity_req_per_s" if found.get("mode") == RATE else "capacity_users"
            row[key] = found.get("value")
            row["capacity_reason"] = found.get("reason")
        by_label = {_label(lv): lv for lv in lane.get("levels") or [] if _measured(lv)}
        for metric in LEVEL_METRICS:
            for label in labels:
                level = by_label.get(label)
                value = _level_values(level).get(metric.key) if level else None
                row[level_column(metric.key, label)] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # SLO columns only where the levels were judged.
    unjudged = [
        c for c in frame.columns if split_column(c)[0] in _SLO_KEYS and frame[c].isna().all()
    ]
    frame = frame.drop(columns=unjudged)
    for column in frame.columns:
        if column_metric(column) is not None:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _level_error(lane: Mapping[str, Any]) -> str | None:
    """A failed cell's reason from its levels ("engine not ready: ...")."""
    for lv in lane.get("levels") or []:
        if lv.get("status") == FAILED and lv.get("error"):
            return str(lv["error"])
    return None


def winners(frame: pd.DataFrame) -> dict[str, str]:
    """Per numeric column the cell with the best value (max for throughput, goodput and
    capacity; min for latencies, memory and start-up). Failed cells are left out; a
    column where fewer than two cells have a value, or the best is shared, has none."""
    if frame.empty or "cell" not in frame:
        return {}
    ok = frame[frame["state"] != FAILED] if "state" in frame else frame
    out: dict[str, str] = {}
    for column in frame.columns:
        metric = column_metric(column)
        if metric is None:
            continue
        values = ok[column].dropna()
        if len(values) < 2:
            continue
        best = values.max() if metric.better == MAX else values.min()
        at = values[values == best]
        if len(at) == 1:
            out[column] = str(ok.loc[at.index[0], "cell"])
    return out


def cell_texts(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the table shows it: numbers with their metric's decimals, "–" where a
    cell has none, "≥ 8" for a capacity at the highest load measured, "none" where no
    load met the targets."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        metric = column_metric(column)
        if metric is None:
            out[column] = [("–" if _missing(v) or v == "" else str(v)) for v in frame[column]]
            continue
        texts = [_number(v, metric.digits) for v in frame[column]]
        if metric.key.startswith("capacity") and "capacity_reason" in frame:
            for i, reason in enumerate(frame["capacity_reason"]):
                if reason == "ceiling" and texts[i] != "–":
                    texts[i] = f"≥ {texts[i]}"
                elif reason == "none":
                    texts[i] = "none"
        out[column] = texts
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, digits: int) -> str:
    return "–" if _missing(value) else f"{float(value):,.{digits}f}"


def failed_cells(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each cell that failed: its name, the reason in one line, its log's last lines and
    the log's path."""
    out = []
    for idx, lane in enumerate(document.get("lanes") or []):
        process = lane.get("engine_process")
        if not process or process.get("state") != FAILED:
            continue
        reason = process.get("error") or _level_error(lane) or "no reason recorded"
        out.append(
            {
                "lane_idx": idx,
                "cell": str(lane["name"]),
                "reason": str(reason),
                "exit": process.get("exit"),
                "log_tail": [str(line) for line in process.get("log_tail") or []],
                "log": process.get("log"),
            }
        )
    return out


# --- memory -------------------------------------------------------------------------

SHOWN_PHASES = (phases.WEIGHTS, phases.KV_CACHE)


def memory_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per cell the seed-style row of its resident memory (MiB): at the process start,
    at each loading step its log named, then the peak:
    "6 MiB → 603 (weights loaded) → 622 (KV cache reserved) → 699 (peak under load)".

    Each item: lane_idx, cell, state, row (text), gpu_row (the same on the GPU, from the
    engine's GPU memory samples at each step; None without a GPU reading)."""
    out = []
    for idx, lane in enumerate(document.get("lanes") or []):
        process = lane.get("engine_process")
        if not process:
            continue
        steps = _steps(process)
        gpu = _gpu_points(lane, document)
        out.append(
            {
                "lane_idx": idx,
                "cell": str(lane["name"]),
                "state": process.get("state") or "",
                "row": _row_text([(s["rss_mib"], s["label"]) for s in steps])
                or "no memory reading (the engine never started)",
                "gpu_row": _gpu_row(steps, gpu, process) if gpu else None,
            }
        )
    return out


def _steps(process: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's steps ({rss_mib, label, t}): the start, the loading steps its log named
    (else readiness), the peak (t None)."""
    marks = {p.get("phase"): p for p in process.get("phases") or []}
    steps = []
    start = marks.get(phases.STARTED)
    if start is not None:
        steps.append({"rss_mib": start.get("rss_mib"), "label": None, "t": start.get("t")})
    shown = [p for p in SHOWN_PHASES if p in marks] or (
        [phases.READY] if phases.READY in marks else []
    )
    for name in shown:
        p = marks[name]
        steps.append({"rss_mib": p.get("rss_mib"), "label": name, "t": p.get("t")})
    peak = process.get("peak_memory_mib")
    if peak is not None and steps:
        served = phases.FIRST_REQUEST in marks
        steps.append({"rss_mib": peak, "label": "peak under load" if served else "peak", "t": None})
    return [s for s in steps if s["rss_mib"] is not None]


def _row_text(points: Sequence[tuple[float, str | None]]) -> str:
    parts = []
    for i, (mib, label) in enumerate(points):
        number = f"{mib:,.0f}" + (" MiB" if i == 0 else "")
        parts.append(f"{number} ({label})" if label and i else number)
    return " → ".join(parts)


def _gpu_points(lane: Mapping[str, Any], document: Mapping[str, Any]) -> list[tuple[float, float]]:
    """[(epoch s, MiB)] of the cell's engine on the GPU, in time order."""
    start = run_start(document)
    if start is None:
        return []
    return sorted(
        (start + s["t"], s["value"] / MIB)
        for s in lane.get("telemetry") or []
        if s.get("source") == PROCESS_SOURCE and s.get("name") == GPU_NAME
    )


def _gpu_row(
    steps: Sequence[Mapping[str, Any]],
    gpu: Sequence[tuple[float, float]],
    process: Mapping[str, Any],
) -> str:
    """The GPU memory at each step of the row: the last reading at or before it."""
    points: list[tuple[float, str | None]] = []
    for step in steps:
        if step["t"] is None:
            continue
        before = [mib for t, mib in gpu if t <= step["t"] + 1e-6]
        points.append((before[-1] if before else 0.0, step["label"]))
    peak = process.get("peak_gpu_memory_mib")
    if peak is None:
        peak = max(mib for _, mib in gpu)
    label = steps[-1]["label"] if steps and steps[-1]["t"] is None else "peak"
    points.append((float(peak), label))
    return _row_text(points)


def run_start(document: Mapping[str, Any]) -> float | None:
    """The run's start (epoch s): what telemetry's ``t`` counts from.

    The run document carries its creation time only; the exact start comes from a cell
    whose memory sampler noted the epoch time of its first sample (``first_sample_t``),
    which is that sample's ``t`` after the start. Without one, the creation time."""
    for lane in cells(document):
        first = (lane.get("engine_process") or {}).get("first_sample_t")
        ts = [s["t"] for s in _process_samples(lane, RSS_NAME)]
        if first is not None and ts:
            return float(first) - min(ts)
    created = document.get("created_at")
    return float(created) if created is not None else None


def _process_samples(lane: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    return [
        s
        for s in lane.get("telemetry") or []
        if s.get("source") == PROCESS_SOURCE and s.get("name") == name
    ]


MEMORY_COLUMNS = ["lane_idx", "cell", "kind", "t_s", "rss_mib", "gpu_mib", "phase"]


def memory_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Each cell's engine memory against seconds since ITS process started.

    Rows of kind "sample": the memory sampler's readings (every 0.5 s from the spawn):
    rss_mib, and gpu_mib where the engine had GPU memory (else NaN). Rows of kind
    "phase": the phases of engine_process (process started, weights loaded, KV cache
    reserved, ready, first request, idle, stopped) with the resident memory noted then.
    Sample times are turned from seconds since the run's start (run_start) into seconds
    since the cell's ``started_at``.
    """
    start = run_start(document)
    rows: list[dict[str, Any]] = []
    for idx, lane in enumerate(document.get("lanes") or []):
        process = lane.get("engine_process")
        if not process:
            continue
        name = str(lane["name"])
        spawned = process.get("started_at")
        if spawned is not None and start is not None:
            shift = start - float(spawned)
            gpu = {s["t"]: s["value"] / MIB for s in _process_samples(lane, GPU_NAME)}
            for s in _process_samples(lane, RSS_NAME):
                rows.append(
                    {
                        "lane_idx": idx,
                        "cell": name,
                        "kind": "sample",
                        "t_s": s["t"] + shift,
                        "rss_mib": s["value"] / MIB,
                        "gpu_mib": gpu.get(s["t"], math.nan),
                        "phase": None,
                    }
                )
        for p in process.get("phases") or []:
            at = p.get("at_s")
            if at is None and spawned is not None and p.get("t") is not None:
                at = float(p["t"]) - float(spawned)
            if at is None:
                continue
            rows.append(
                {
                    "lane_idx": idx,
                    "cell": name,
                    "kind": "phase",
                    "t_s": float(at),
                    "rss_mib": p.get("rss_mib"),
                    "gpu_mib": math.nan,
                    "phase": p.get("phase"),
                }
            )
    frame = pd.DataFrame(rows, columns=MEMORY_COLUMNS)
    for column in ("t_s", "rss_mib", "gpu_mib"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.sort_values(["lane_idx", "kind", "t_s"], kind="stable").reset_index(drop=True)
