"""GPU memory as frames: each GPU's and each engine process's memory over the run, vLLM's
cache config and up-front budget, and the steps where an engine started, loaded its
model and reserved its KV cache. No Streamlit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lib.analysis.telemetry_lanes import ENGINE_LABELS, GIB, LaneRef, lane_for_engine

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
