"""Telemetry samples as pandas frames for the memory, KV-cache and Ollama charts.

No Streamlit here (lib/ui.py draws, lib/charts_telemetry.py builds the figures). The
inputs are sample rows as `store.get_samples` returns them ({"lane_idx", "t", "source",
"name", "value", "labels"}, `t` in epoch seconds); every frame puts them on the run's
time axis (seconds since `t0`, the same zero as the latency timeline) in GiB, with the
lane each series belongs to so it can wear the lane's colour.

Attribution: NVML reports GPU processes with the engine they belong to (vllm, ollama,
llama.cpp; lib/telemetry/nvml.py reads /proc for that), not with a lane. A process is
drawn in a lane's colour when exactly one lane of the run talks to an engine of that
kind; two vLLM lanes cannot be told apart by NVML alone, so their processes stay grey
and are named by engine and pid.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lib.analysis.lane_memory import engine_kind

GIB = float(2**30)
MIB = float(2**20)
MAX_POINTS = 5_000  # per figure, as lib/charts.py
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

ENGINE_LABELS = {"vllm": "vLLM", "ollama": "Ollama", "llama.cpp": "llama.cpp"}

MEMORY_COLUMNS = (
    "gpu",
    "series",
    "kind",  # "device" (the GPU's used memory) or "process"
    "lane",
    "lane_idx",
    "engine",
    "process",
    "pid",
    "t_s",
    "gib",
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
    conn: sqlite3.Connection,
    run_id: str,
    since_id: int = 0,
    names: Sequence[str] = CHART_NAMES,
) -> list[dict[str, Any]]:
    """The run's samples with the given names and an id above `since_id`, oldest first.

    A query of its own beside store.get_samples because that one reads every sample of
    the run each time (no `since_id`, no name filter): at 1 Hz for a long run that is
    tens of thousands of rows re-read every second by the live view.
    """
    marks = ", ".join("?" * len(names))
    rows = conn.execute(
        "SELECT id, lane_idx, t, source, name, value, labels_json FROM samples"
        f" WHERE run_id = ? AND id > ? AND name IN ({marks}) ORDER BY id",
        (run_id, since_id, *names),
    )
    out = []
    for row in rows:
        rec = dict(row)
        rec["labels"] = json.loads(rec.pop("labels_json") or "{}")
        out.append(rec)
    return out


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

    def refresh(self, conn: sqlite3.Connection) -> int:
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


# --- lanes and attribution ------------------------------------------------------------


@dataclass(frozen=True)
class LaneRef:
    """What the telemetry frames need of a lane (from store lanes or a results document)."""

    idx: int
    name: str
    kind: str  # vllm, ollama, llama.cpp, openai
    model: str
    base_url: str


def lane_refs(lanes: Sequence[Mapping[str, Any]]) -> list[LaneRef]:
    """LaneRefs from store.get_lanes rows or a results document's lanes, by lane order."""
    out = []
    for pos, lane in enumerate(lanes):
        out.append(
            LaneRef(
                idx=int(lane.get("lane_idx", pos)),
                name=str(lane.get("name") or f"lane {pos + 1}"),
                kind=engine_kind(lane),
                model=str(lane.get("model") or ""),
                base_url=str(lane.get("base_url") or ""),
            )
        )
    return out


def lane_for_engine(engine: str, lanes: Sequence[LaneRef]) -> LaneRef | None:
    """The one lane that talks to an engine of this kind; None if none or several."""
    mine = [lane for lane in lanes if lane.kind == engine]
    return mine[0] if len(mine) == 1 else None


def lane_by_idx(lanes: Sequence[LaneRef], idx: Any) -> LaneRef | None:
    """The lane with this index, if the run has it."""
    return next((lane for lane in lanes if lane.idx == idx), None)


# --- GPU memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the samples name it: index (a string, as in the labels), model, total."""

    index: str
    name: str
    total_bytes: float | None


def gpus(rows: Iterable[Mapping[str, Any]]) -> list[GpuInfo]:
    """Every GPU with a memory reading, by index; total memory from its last reading."""
    found: dict[str, tuple[str, float | None]] = {}
    for r in rows:
        if r["source"] != "nvml" or r["name"] not in ("memory_used_bytes", "memory_total_bytes"):
            continue
        labels = r.get("labels") or {}
        gpu = str(labels.get("gpu", "0"))
        name, total = found.get(gpu, (str(labels.get("name") or "GPU"), None))
        if r["name"] == "memory_total_bytes":
            total = float(r["value"])
        found[gpu] = (name, total)
    return [GpuInfo(g, n, t) for g, (n, t) in sorted(found.items(), key=lambda kv: _int(kv[0]))]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 1 << 30


def process_series_name(engine: str, process: str, pid: str, lane: LaneRef | None) -> str:
    """A process's legend entry: the lane's name when attributed, else engine and pid."""
    if lane is not None:
        return f"{lane.name} ({process})"
    label = ENGINE_LABELS.get(engine, "other")
    return f"{label}: {process} (pid {pid})"


def memory_frame(
    rows: Iterable[Mapping[str, Any]], t0: float, lanes: Sequence[LaneRef]
) -> pd.DataFrame:
    """GPU memory over time: each GPU's used memory and each GPU process's, in GiB.

    One row per reading (MEMORY_COLUMNS). Device rows have kind "device" and the series
    "GPU <i> used (all processes)"; process rows carry the engine NVML attributed and,
    where exactly one lane has that engine, the lane.
    """
    records: list[dict[str, Any]] = []
    for r in rows:
        if r["source"] != "nvml":
            continue
        labels = r.get("labels") or {}
        gpu = str(labels.get("gpu", "0"))
        point = {"gpu": gpu, "t_s": r["t"] - t0, "gib": r["value"] / GIB}
        if r["name"] == "memory_used_bytes":
            records.append(point | {"series": f"GPU {gpu} used (all processes)", "kind": "device"})
        elif r["name"] == "process_memory_used_bytes":
            engine = str(labels.get("engine") or "unknown")
            process, pid = str(labels.get("process") or "?"), str(labels.get("pid") or "?")
            lane = lane_for_engine(engine, lanes)
            records.append(
                point
                | {
                    "series": process_series_name(engine, process, pid, lane),
                    "kind": "process",
                    "lane": lane.name if lane else None,
                    "lane_idx": lane.idx if lane else None,
                    "engine": engine,
                    "process": process,
                    "pid": pid,
                }
            )
    frame = pd.DataFrame.from_records(records, columns=list(MEMORY_COLUMNS))
    frame["t_s"] = frame["t_s"].astype("float64")
    frame["gib"] = frame["gib"].astype("float64")
    return frame.sort_values(["gpu", "series", "t_s"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class VllmCache:
    """A vLLM lane's cache config (its cache_config_info labels), as numbers."""

    lane_idx: int
    gpu_memory_utilization: float | None
    num_gpu_blocks: int | None
    block_size: int | None
    kv_cache_memory_bytes: int | None  # when set, vLLM ignores gpu_memory_utilization

    @property
    def kv_tokens(self) -> int | None:
        """Tokens the KV cache holds: blocks × tokens per block."""
        if self.num_gpu_blocks is None or self.block_size is None:
            return None
        return self.num_gpu_blocks * self.block_size


def _number(value: Any) -> float | None:
    # Labels are strings; vLLM writes "None" for unset fields.
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def vllm_caches(rows: Iterable[Mapping[str, Any]]) -> dict[int, VllmCache]:
    """Per lane: the cache config vLLM reported (the first cache_config_info seen)."""
    out: dict[int, VllmCache] = {}
    for r in rows:
        if r["source"] != "vllm" or r["name"] != "cache_config_info" or r["lane_idx"] is None:
            continue
        if r["lane_idx"] in out:
            continue
        labels = r.get("labels") or {}
        blocks, size = _number(labels.get("num_gpu_blocks")), _number(labels.get("block_size"))
        kv_bytes = _number(labels.get("kv_cache_memory_bytes"))
        out[int(r["lane_idx"])] = VllmCache(
            lane_idx=int(r["lane_idx"]),
            gpu_memory_utilization=_number(labels.get("gpu_memory_utilization")),
            num_gpu_blocks=int(blocks) if blocks is not None else None,
            block_size=int(size) if size is not None else None,
            kv_cache_memory_bytes=int(kv_bytes) if kv_bytes is not None else None,
        )
    return out


def vllm_reservation(
    cache: VllmCache, gpu: GpuInfo, lane: LaneRef | None = None
) -> dict[str, Any] | None:
    """Where vLLM's up-front budget lies on a GPU: gpu_memory_utilization × total memory.

    None when the budget is not set by the utilization (kv_cache_memory_bytes set) or
    the GPU's total is unknown. {"gib", "text", "lane"}.
    """
    util = cache.gpu_memory_utilization
    if util is None or gpu.total_bytes is None or cache.kv_cache_memory_bytes is not None:
        return None
    total = gpu.total_bytes / GIB
    return {
        "gib": util * total,
        "text": f"vLLM reserves {util:g} × {total:.1f} GiB = {util * total:.1f} GiB up front",
        "lane": lane.name if lane else None,
    }


def fmt_gib(gib: float) -> str:
    """'5.8 GiB', or '3 MiB' below 1 GiB (a starting engine holds a few MiB)."""
    return f"{gib:.1f} GiB" if gib >= 1.0 else f"{gib * 1024:.0f} MiB"


def engine_phases(
    mem: pd.DataFrame,
    total_gib: float | None = None,
    vllm_budget_gib: float | None = None,
    max_phases: int = 8,
) -> list[dict[str, Any]]:
    """Where an engine's processes visibly started, loaded and reserved memory.

    Per process series (kind "process"): "started" where it first appears after the
    recording began; each rise of consecutive increases of at least max(256 MiB, 2 % of
    the GPU) is a step. The first step is "model loaded"; for vLLM, the step that ends
    nearest its budget (gpu_memory_utilization × total, else its largest later step) is
    "KV cache reserved" — vLLM allocates the whole budget for KV cache after the weights.
    Ollama's first step holds weights and a KV cache sized by num_ctx × num_parallel.

    Returns [{"series", "lane", "engine", "t_s", "gib", "label"}] in time order.
    """
    procs = mem[mem["kind"] == "process"] if not mem.empty else mem
    if procs.empty:
        return []
    first_t = float(mem["t_s"].min())
    threshold = max(256 / 1024, 0.02 * (total_gib or 0.0))
    phases: list[dict[str, Any]] = []
    for series, points in procs.groupby("series", sort=False):
        points = points.sort_values("t_s")
        engine = str(points["engine"].iloc[0])
        lane = points["lane"].iloc[0]
        label = ENGINE_LABELS.get(engine, "process")
        ts, gib = points["t_s"].to_list(), points["gib"].to_list()
        base = {"series": series, "lane": lane if isinstance(lane, str) else None}
        base["engine"] = engine
        # Absent from the first round of readings: it started while the run was recorded.
        if ts[0] > first_t + 0.5:
            phases.append(base | {"t_s": ts[0], "gib": gib[0], "label": f"{label} started"})
        steps = _rises(ts, gib, threshold)
        kv_step = None
        if engine == "vllm" and len(steps) >= 2:
            later = range(1, len(steps))
            if vllm_budget_gib:
                kv_step = min(later, key=lambda i: abs(steps[i][1] - vllm_budget_gib))
            else:
                kv_step = max(later, key=lambda i: steps[i][1] - steps[i][2])
        for i, (t_end, to_gib, from_gib) in enumerate(steps):
            if i == kv_step:
                text = "KV cache reserved"
            elif i == 0:
                text = "model loaded"
            else:
                text = f"+{fmt_gib(to_gib - from_gib)}"
            phases.append(base | {"t_s": t_end, "gib": to_gib, "label": f"{label}: {text}"})
    phases.sort(key=lambda p: p["t_s"])
    return phases[:max_phases]


def _rises(ts: list[float], gib: list[float], threshold: float) -> list[tuple[float, float, float]]:
    """(time it ended, GiB after, GiB before) of each run of rising readings that grew by
    at least `threshold` GiB. Readings within 16 MiB count as flat."""
    out = []
    start = 0
    for i in range(1, len(gib) + 1):
        rising = i < len(gib) and gib[i] - gib[i - 1] > 16 / 1024
        if rising:
            continue
        end = i - 1
        if end > start and gib[end] - gib[start] >= threshold:
            out.append((ts[end], gib[end], gib[start]))
        start = i
    return out


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
