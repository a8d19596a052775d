"""Telemetry samples as pandas frames for the memory, KV-cache and Ollama charts.

No Streamlit here (lib/app draws, lib/charts/telemetry.py builds the figures). The
inputs are sample rows as `store.get_samples` returns them ({"lane_idx", "t", "source",
"name", "value", "labels"}, `t` in epoch seconds); every frame puts them on the run's
time axis (seconds since `t0`, the same zero as the latency timeline) in GiB, with the
lane each series belongs to so it can wear the lane's colour.

This module reads the samples, says what the run recorded about its GPU, and builds
the engine-metric frames; which lane a process belongs to is telemetry_lanes.py and
the GPU memory frames are gpu_memory_frames.py (both re-exported here, where the pages
and charts read them as telemetry_frames.<name>).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from lib import store
from lib.analysis.gpu_memory_frames import (
    MEMORY_COLUMNS,
    GpuInfo,
    VllmCache,
    engine_phases,
    fmt_gib,
    gpus,
    memory_frame,
    process_series_name,
    vllm_caches,
    vllm_reservation,
)
from lib.analysis.telemetry_lanes import (
    ENGINE_LABELS,
    GIB,
    MIB,
    LaneRef,
    lane_by_idx,
    lane_for_engine,
    lane_refs,
)

__all__ = [
    "CHART_NAMES",
    "ENGINE_LABELS",
    "GIB",
    "KV_COLUMNS",
    "MAX_POINTS",
    "MEMORY_COLUMNS",
    "MIB",
    "NO_GPU",
    "OLLAMA_COLUMNS",
    "GpuInfo",
    "LaneRef",
    "SampleLog",
    "VllmCache",
    "engine_phases",
    "fmt_gib",
    "gpu_caption",
    "gpu_unavailable_reason",
    "gpus",
    "hardware_rows",
    "kv_frame",
    "lane_by_idx",
    "lane_for_engine",
    "lane_refs",
    "memory_frame",
    "ollama_frame",
    "process_series_name",
    "read_samples",
    "thin",
    "vllm_caches",
    "vllm_reservation",
]

MAX_POINTS = 5_000  # per figure, as lib/charts/style.py
NO_GPU = "no NVIDIA GPU"  # as lib/telemetry/nvml.py words it

# The sample names the charts read; the rest (power, counters, llama.cpp series) stay in
# the store, so the live view's 1 s redraw reads a fraction of the rows.
CHART_NAMES: tuple[str, ...] = (
    "memory_used_bytes",
    "memory_total_bytes",
    "process_memory_used_bytes",
    "kv_cache_usage_perc",
    "gpu_cache_usage_perc",
    "num_requests_running",
    "num_requests_waiting",
    "cache_config_info",
    "size",
    "size_vram",
    "gpu_share",
    "context_length",
)


KV_COLUMNS = ("lane", "lane_idx", "t_s", "kv_pct", "running", "waiting")
OLLAMA_COLUMNS = (
    "series",
    "lane",
    "lane_idx",
    "model",
    "t_s",
    "size_gib",
    "vram_gib",
    "share_pct",
    "context_length",
)


# --- reading the store ----------------------------------------------------------------


def read_samples(
    conn: Any,
    run_id: str,
    since_id: int = 0,
    names: Sequence[str] = CHART_NAMES,
) -> list[dict[str, Any]]:
    """The run's samples with the given names and an id above `since_id`, oldest first
    (not every sample of the run each time: at 1 Hz for a long run that is tens of
    thousands of rows, re-read every second by the live view)."""
    return store.get_samples(conn, run_id, since_id=since_id, names=list(names))


class SampleLog:
    """A run's chart samples, read incrementally (like frames.RequestLog).

    The dashboard keeps one per run in st.cache_resource; each redraw reads only the rows
    written since the last one. Thread-safe; connections are the caller's.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last_id = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def refresh(self, conn: Any) -> int:
        """Read rows newer than the last seen; return how many arrived."""
        with self._lock:
            new = read_samples(conn, self.run_id, since_id=self.last_id)
            self._rows.extend(new)
            if new:
                self.last_id = new[-1]["id"]
            return len(new)

    def rows(self) -> list[dict[str, Any]]:
        """The rows so far, oldest first (a new list; the dicts are shared, read-only)."""
        with self._lock:
            return list(self._rows)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


# --- what the run recorded about its GPU ----------------------------------------------


def gpu_unavailable_reason(env: Mapping[str, Any]) -> str | None:
    """Why the run has no GPU readings, or None when NVML worked.

    The recorder's final status (env["telemetry"]["nvml"], written when the run ends)
    wins over the hardware probe taken at its start; a run recorded before telemetry
    existed gives "not recorded with this run".
    """
    status = (env.get("telemetry") or {}).get("nvml")
    if isinstance(status, str):
        return None if status == "ok" else status.removeprefix("unavailable: ")
    gpu = (env.get("hardware") or {}).get("gpu")
    if isinstance(gpu, Mapping):
        if gpu.get("available"):
            return None
        return str(gpu.get("reason") or NO_GPU)
    return "not recorded with this run"


def gpu_caption(env: Mapping[str, Any]) -> str | None:
    """'GPU memory: no NVIDIA GPU on this machine (NVML library not found)', or None when
    the run had a GPU."""
    reason = gpu_unavailable_reason(env)
    if reason is None:
        return None
    if reason.startswith(NO_GPU):
        reason = NO_GPU + " on this machine" + reason[len(NO_GPU) :]
    return f"GPU memory: {reason}"


def hardware_rows(hardware: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The GPU part of a run's hardware as (setting, value) rows: model and total memory
    per GPU, the driver; or why there is none."""
    gpu = hardware.get("gpu")
    if not isinstance(gpu, Mapping):
        return [("Hardware: gpu", str(gpu))] if gpu is not None else []
    if not gpu.get("available"):
        return [("Hardware: GPU", f"none: {gpu.get('reason') or NO_GPU}")]
    rows = []
    for g in gpu.get("gpus") or []:
        total = g.get("memory_total_bytes")
        mem = f" ({total / GIB:.1f} GiB)" if isinstance(total, int | float) else ""
        rows.append((f"Hardware: GPU {g.get('index')}", f"{g.get('name')}{mem}"))
    rows.append(("Hardware: GPU driver", str(gpu.get("driver") or "–")))
    return rows


# --- engine metrics: vLLM and Ollama ---------------------------------------------------


def kv_frame(
    rows: Iterable[Mapping[str, Any]], t0: float, lanes: Sequence[LaneRef]
) -> pd.DataFrame:
    """vLLM's KV-cache usage (%) and queue (requests running, waiting) per lane over time.

    One row per lane and poll (KV_COLUMNS). `kv_cache_usage_perc` is a 0-1 fraction
    despite its name; `gpu_cache_usage_perc` (servers before the rename) stands in for it.
    """
    wanted = {
        "kv_cache_usage_perc": "kv_pct",
        "gpu_cache_usage_perc": "kv_pct",
        "num_requests_running": "running",
        "num_requests_waiting": "waiting",
    }
    cells: dict[tuple[int, float], dict[str, float]] = {}
    for r in rows:
        if r["source"] != "vllm" or r["name"] not in wanted or r["lane_idx"] is None:
            continue
        col = wanted[r["name"]]
        value = r["value"] * 100.0 if col == "kv_pct" else r["value"]
        cell = cells.setdefault((int(r["lane_idx"]), r["t"]), {})
        # Summed across model names (aliases of one server); the fraction averaged.
        if col in cell and col != "kv_pct":
            cell[col] += value
        else:
            cell[col] = value
    records = []
    for (idx, t), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        lane = lane_by_idx(lanes, idx)
        name = lane.name if lane else f"lane {idx + 1}"
        records.append(
            (name, idx, t - t0, cell.get("kv_pct"), cell.get("running"), cell.get("waiting"))
        )
    frame = pd.DataFrame.from_records(records, columns=list(KV_COLUMNS))
    for col in ("t_s", "kv_pct", "running", "waiting"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def ollama_frame(
    rows: Iterable[Mapping[str, Any]], t0: float, lanes: Sequence[LaneRef]
) -> pd.DataFrame:
    """Ollama's loaded models over time (/api/ps): size, the part in VRAM, VRAM share.

    One row per model and poll (OLLAMA_COLUMNS). A model that some lane benchmarks is
    that lane's series; other loaded models are listed by name. Two lanes polling the
    same server see the same models: each (server, model) is kept once.
    """
    cells: dict[tuple[str, str, float], dict[str, Any]] = {}
    owner: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["source"] != "ollama" or r["lane_idx"] is None:
            continue
        lane = lane_by_idx(lanes, r["lane_idx"])
        server = lane.base_url if lane else str(r["lane_idx"])
        model = str((r.get("labels") or {}).get("model") or "?")
        owner.setdefault((server, model), int(r["lane_idx"]))
        if owner[(server, model)] != r["lane_idx"]:
            continue  # the same server's answer polled by another lane
        cells.setdefault((server, model, r["t"]), {})[r["name"]] = r["value"]
    records = []
    for (server, model, t), cell in sorted(cells.items(), key=lambda kv: kv[0]):
        lane = next((x for x in lanes if x.base_url == server and x.model == model), None)
        size, vram = cell.get("size"), cell.get("size_vram")
        share = cell.get("gpu_share")
        if share is None and size and vram is not None:
            share = vram / size
        records.append(
            (
                lane.name if lane else f"Ollama: {model} (not a lane)",
                lane.name if lane else None,
                lane.idx if lane else None,
                model,
                t - t0,
                size / GIB if size is not None else None,
                vram / GIB if vram is not None else None,
                share * 100.0 if share is not None else None,
                cell.get("context_length"),
            )
        )
    frame = pd.DataFrame.from_records(records, columns=list(OLLAMA_COLUMNS))
    for col in ("t_s", "size_gib", "vram_gib", "share_pct", "context_length"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


# --- bounded point counts --------------------------------------------------------------


def thin(frame: pd.DataFrame, by: str, value: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most about `max_points` rows, shared among the `by` series by their length.

    A series that must shrink is cut into equal runs of rows and keeps each run's lowest
    and highest reading (and its first and last row), so a memory peak or a step never
    disappears, and the same rows are kept on every redraw.
    """
    if len(frame) <= max_points:
        return frame
    keep: list[Any] = []
    for _, part in frame.groupby(by, sort=False):
        budget = max(int(max_points * len(part) / len(frame)), 4)
        if len(part) <= budget:
            keep.extend(part.index)
            continue
        buckets = max(budget // 2, 1)
        size = -(-len(part) // buckets)  # ceiling division
        values = part[value].reset_index(drop=True)
        index = part.index.to_list()
        keep += [index[0], index[-1]]
        for start in range(0, len(part), size):
            chunk = values.iloc[start : start + size].dropna()
            if chunk.empty:
                keep.append(index[start])
                continue
            keep += [index[int(chunk.idxmin())], index[int(chunk.idxmax())]]
    return frame.loc[sorted(set(keep))]
