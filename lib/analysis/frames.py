"""pandas DataFrames for the dashboard, built from store rows and results documents.

No Streamlit here: the pages hand these frames to lib/charts and to st.dataframe.
Statistics come from lib/core/metrics.py (the same functions the CLI and results documents
use), so the live view and a finished run's results agree to the digit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from lib import store
from lib.analysis import results

# A finished run's results-document frames live in document_frames; the pages and the
# report read them as frames.<name>, so they are re-exported here.
from lib.analysis.document_frames import OLLAMA_SERVER_KEYS as OLLAMA_SERVER_KEYS
from lib.analysis.document_frames import answers_by_prompt as answers_by_prompt
from lib.analysis.document_frames import lane_info_frame as lane_info_frame
from lib.analysis.document_frames import levels_of as levels_of
from lib.analysis.document_frames import quality_frame as quality_frame
from lib.analysis.document_frames import server_timings_frame as server_timings_frame
from lib.analysis.document_frames import settings_frame as settings_frame
from lib.analysis.lane_memory import lane_peak_memory
from lib.analysis.load_frames import level_loads as level_loads
from lib.analysis.load_frames import load_cells
from lib.analysis.load_frames import with_loads as with_loads

# The live view's progress and tile figures live in progress_frames; frames.<name> as before.
from lib.analysis.progress_frames import PROGRESS_COLUMNS as PROGRESS_COLUMNS
from lib.analysis.progress_frames import kpis as kpis
from lib.analysis.progress_frames import level_plan as level_plan
from lib.analysis.progress_frames import pick_labels as pick_labels
from lib.analysis.progress_frames import plan_order as plan_order
from lib.analysis.progress_frames import progress_frame as progress_frame
from lib.core import metrics

# What the live view keeps of each request: numbers only. Answers and inter-token gaps
# stay in the store (the results page reads them through results.run_document), so a
# long run's log stays small in the dashboard's memory.
SLIM_FIELDS: tuple[str, ...] = (
    "id",
    "lane_idx",
    "concurrency",
    "idx",
    "prompt_idx",
    "t_send",
    "t_done",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "tokens_per_s",
    "prompt_tokens",
    "output_tokens",
    "error",
    "lang_drift",  # from the request's quality record: drifted from the prompt's language?
    "drift_lang",  # ... and to which language
)

REQUEST_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "idx",
    "prompt_idx",
    "t_rel_s",
    "ttft_ms",
    "e2el_ms",
    "elapsed_ms",
    "tpot_ms",
    "tokens_per_s",
    "output_tokens",
    "failed",
    "error",
)

# Per lane and level: the columns of results.summary_rows plus a few more percentiles,
# and the level's load (lib/analysis/load_frames.py: a rate level's key only numbers it).
LEVEL_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "load_mode",
    "load",
    "load_label",
    "completed",
    "failed",
    "duration_s",
    "req_per_s",
    "out_tok_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "e2el_p50_ms",
    "e2el_p99_ms",
    "tok_per_s_p50",
)

# --- the live request log -------------------------------------------------------------


class RequestLog:
    """A run's measured requests, read incrementally from the store (`since_id`).

    The dashboard keeps one per run in st.cache_resource, so each second's redraw reads
    only the rows written since the last one. Thread-safe: several browser sessions
    may follow the same run. Connections are the caller's and never kept.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last_id = 0
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def refresh(self, conn: Any) -> int:
        """Read rows newer than the last seen; return how many arrived."""
        with self._lock:
            new = store.get_requests(conn, self.run_id, since_id=self.last_id)
            for rec in new:
                q = rec.get("quality") or {}
                rec["lang_drift"] = q.get("lang_drift") if q else None
                rec["drift_lang"] = (q.get("lang") or {}).get("detected") if q else None
                self._rows.append(tuple(rec.get(f) for f in SLIM_FIELDS))
            if new:
                self.last_id = new[-1]["id"]
            return len(new)

    def rows(self) -> list[dict[str, Any]]:
        """A copy of the slim rows, oldest first."""
        with self._lock:
            return [dict(zip(SLIM_FIELDS, row, strict=True)) for row in self._rows]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


# --- runs and lanes ---------------------------------------------------------------------


def lane_names(run: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Display names by lane index: the stored lanes, else the config's (a pending run).

    The dashboard names lanes when it starts a run, so both agree and a lane keeps its
    colour from the first second.
    """
    if lanes:
        ordered = sorted(lanes, key=lambda lane: lane["lane_idx"])
        return [str(lane["name"]) for lane in ordered]
    out = []
    for lane in (run.get("config") or {}).get("lanes", []):
        out.append(lane.get("name") or f"{lane.get('engine')}:{lane.get('model')}")
    return out


def run_start(run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Time zero of the run's time axis (epoch seconds)."""
    sends = [r["t_send"] for r in rows if r.get("t_send") is not None]
    candidates = [*sends, *([run["started_at"]] if run.get("started_at") else [])]
    return min(candidates) if candidates else None


def _name(names: Sequence[str], idx: int) -> str:
    return names[idx] if 0 <= idx < len(names) else f"lane {idx + 1}"


def request_frame(
    rows: Iterable[Mapping[str, Any]], names: Sequence[str], t0: float | None
) -> pd.DataFrame:
    """One row per measured request, times relative to `t0` (seconds) and in ms.

    `elapsed_ms` is send to finish for every request, failed ones included (they have no
    E2E latency), so a timeout still shows on the timeline where it happened.
    """
    records = []
    for r in rows:
        t_send, t_done = r.get("t_send"), r.get("t_done")
        elapsed = (t_done - t_send) * 1000.0 if t_send is not None and t_done is not None else None
        records.append(
            {
                "lane": _name(names, r["lane_idx"]),
                "lane_idx": r["lane_idx"],
                "concurrency": r["concurrency"],
                "idx": r.get("idx"),
                "prompt_idx": r.get("prompt_idx"),
                "t_rel_s": (t_send - t0) if t_send is not None and t0 is not None else None,
                "ttft_ms": r.get("ttft_ms"),
                "e2el_ms": r.get("e2el_ms"),
                "elapsed_ms": elapsed,
                "tpot_ms": r.get("tpot_ms"),
                "tokens_per_s": r.get("tokens_per_s"),
                "output_tokens": r.get("output_tokens"),
                "failed": bool(r.get("error")),
                "error": r.get("error"),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=list(REQUEST_COLUMNS))
    for col in ("t_rel_s", "ttft_ms", "e2el_ms", "elapsed_ms", "tpot_ms", "tokens_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["failed"] = frame["failed"].astype(bool)
    return frame


def _level_row(lane: str, lane_idx: int, level: Mapping[str, Any], key: bool = False) -> dict:
    # `key`: keep a rate level's key as `concurrency`, which the live frames join on; a
    # document's rows leave it out, so no table shows it as a concurrency.
    row = results.level_headline(lane, dict(level))
    row.pop("rate", None)  # load_label says it, in every row
    if key:
        row["concurrency"] = level.get("concurrency")
    return {"lane": row.pop("lane"), "lane_idx": lane_idx, **row, **load_cells(level)}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in frame.columns:
        if col.endswith(("_ms", "_s")) or col in ("out_tok_per_s", "req_per_s", "load"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def level_frame(
    rows: Iterable[Mapping[str, Any]],
    names: Sequence[str],
    concurrency_order: Sequence[int] = (),
    loads: Mapping[tuple[int, int], Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Per lane and level, the headline figures (metrics.level_summary over the rows).

    Levels come in the configured order, then any others, per lane in lane order.
    `loads` (level_loads of the stored levels) names a rate run's levels by their rate.
    """
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["lane_idx"], r["concurrency"]), []).append(r)
    order = {c: i for i, c in enumerate(concurrency_order)}
    keys = sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    summaries = {k: metrics.level_summary(groups[k], concurrency=k[1]) for k in keys}
    loads = loads or {}
    out = [
        _level_row(_name(names, k[0]), k[0], summaries[k] | {**loads.get(k, {})}, True)
        for k in keys
    ]
    return _typed(pd.DataFrame.from_records(out, columns=list(LEVEL_COLUMNS)))


def summary_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """The results document's per lane-and-level figures, as level_frame lays them out."""
    out = []
    for lane_idx, lane in enumerate(document.get("lanes", [])):
        for level in lane.get("levels", []):
            out.append(_level_row(lane["name"], lane_idx, level))
    return _typed(pd.DataFrame.from_records(out, columns=list(LEVEL_COLUMNS)))


def with_peak_memory(summary: pd.DataFrame, document: Mapping[str, Any]) -> pd.DataFrame:
    """summary_frame plus each lane's peak GPU memory (GiB) and what measured it.

    `peak_gpu_mem_gib` is the lane's own (every row of a lane shows the same value): its
    engine processes' NVML memory, else Ollama's VRAM, else the whole GPU while the lane
    ran (lane_memory.lane_peak_memory); NaN with an empty source when there was none.
    """

    peaks = [lane_peak_memory(lane) for lane in document.get("lanes", [])]
    out = summary.copy()
    by_lane = out["lane_idx"].map(lambda li: peaks[li] if 0 <= li < len(peaks) else (None, ""))
    out["peak_gpu_mem_gib"] = pd.to_numeric(
        by_lane.map(lambda p: p[0] / 2**30 if p[0] is not None else None), errors="coerce"
    ).astype("float64")
    out["peak_gpu_mem_source"] = by_lane.map(lambda p: p[1]).astype(object)
    return out


def drift_lines(rows: Iterable[Mapping[str, Any]], names: Sequence[str]) -> dict[str, str]:
    """Per lane with checked answers: "4/5 drifted to Chinese" (lib.quality's wording)."""
    from lib import quality  # optional module of another area: imported where used

    checks: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("lang_drift") is None:
            continue
        checks.setdefault(r["lane_idx"], []).append(
            {"lang_drift": r["lang_drift"], "lang": {"detected": r.get("drift_lang")}}
        )
    return {_name(names, li): quality.drift_summary(found) for li, found in checks.items()}


def level_spans(
    levels: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    t0: float | None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Where each lane's level ran on the run's time axis (seconds since `t0`)."""
    if t0 is None:
        return []
    now = time.time() if now is None else now
    spans = []
    for lv in levels:
        if lv.get("started_at") is None:
            continue
        end = lv.get("finished_at") or now
        spans.append(
            {
                "lane": _name(names, lv["lane_idx"]),
                "lane_idx": lv["lane_idx"],
                "concurrency": lv["concurrency"],
                "start_s": lv["started_at"] - t0,
                "end_s": end - t0,
                # What the level's key stands for: "c=4", or a rate run's "2 req/s".
                **level_loads([lv])[(lv["lane_idx"], lv["concurrency"])],
            }
        )
    return sorted(spans, key=lambda s: s["start_s"])
