"""Plotly figures for telemetry beside a run: GPU memory, vLLM KV cache and queue, Ollama.

Data in (frames from lib/analysis/telemetry_frames.py), go.Figure out; no Streamlit.
Same style as the run charts: white, titled, units on the axes, legend under the plot,
one colour per lane from `lane_colors`, the run's time axis (seconds since the run
started) with each level as a band, and at most MAX_POINTS points a figure.

This module puts the section together (`telemetry_charts`); the figures are
gpu_memory.py and engine_metrics.py, their shared pieces telemetry_marks.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lib.analysis import telemetry_frames as tf
from lib.charts.engine_metrics import kv_cache_figure, ollama_figure, queue_figure
from lib.charts.gpu_memory import gpu_memory_figure
from lib.charts.telemetry_marks import add_run_marks, chart_text

__all__ = [
    "TelemetryCharts",
    "add_run_marks",
    "chart_text",
    "gpu_memory_figure",
    "kv_cache_figure",
    "memory_notes",
    "ollama_figure",
    "queue_figure",
    "telemetry_charts",
]


@dataclass
class TelemetryCharts:
    """What the telemetry section shows: figures by key (wide ones take a full row) and
    plain-text captions where a source gave nothing (to be escaped by the page)."""

    figures: list[tuple[str, go.Figure, bool]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def _status_line(env: Mapping[str, Any], key: str) -> str | None:
    status = (env.get("telemetry") or {}).get(key)
    return status if isinstance(status, str) and status != "ok" else None


def memory_notes(
    caches: Sequence[tf.VllmCache],
    engines: set[str],
    ollama: pd.DataFrame,
) -> list[str]:
    """Subtitle lines that say why the engines hold what they hold (reference §2.8, §5)."""
    notes = []
    if "vllm" in engines:
        for cache in caches[:1]:
            kv = f" ({cache.kv_tokens:,} tokens)" if cache.kv_tokens else ""
            if cache.kv_cache_memory_bytes is not None:
                size = cache.kv_cache_memory_bytes / tf.GIB
                notes.append(
                    f"vLLM's KV cache is fixed at {size:.1f} GiB{kv} by kv_cache_memory_bytes."
                )
            elif cache.gpu_memory_utilization is not None:
                util = cache.gpu_memory_utilization
                notes.append(
                    f"vLLM reserves gpu_memory_utilization ({util:g}) × the GPU up front: "
                    f"weights, then KV cache{kv} in all that is left."
                )
    if "ollama" in engines:
        contexts = (
            sorted({int(c) for c in ollama["context_length"].dropna()}) if len(ollama) else []
        )
        ctx = f" ({', '.join(f'{c:,}' for c in contexts)} here)" if contexts else ""
        notes.append(
            f"Ollama allocates weights + a KV cache for num_ctx × num_parallel tokens{ctx}."
        )
    return notes


def telemetry_charts(
    rows: Sequence[Mapping[str, Any]],
    env: Mapping[str, Any],
    lanes: Sequence[tf.LaneRef],
    spans: Sequence[Mapping[str, Any]],
    t0: float,
    colors: Mapping[str, str],
    end_s: float | None = None,
    active: bool = False,
    uirevision: str | None = None,
) -> TelemetryCharts:
    """Every telemetry figure a run's samples support, and captions for what is missing.

    GPU memory per GPU (or one caption saying why there is none: "GPU memory: no NVIDIA
    GPU on this machine (NVML library not found)"); vLLM KV cache and queue when a vLLM
    lane's /metrics answered; Ollama's models when /api/ps did.
    """
    out = TelemetryCharts()
    mem = tf.memory_frame(rows, t0, lanes)
    caches = tf.vllm_caches(rows)
    oll = tf.ollama_frame(rows, t0, lanes)
    kv = tf.kv_frame(rows, t0, lanes)
    devices = tf.gpus(rows)
    if not devices:
        caption = tf.gpu_caption(env)
        if caption is None:
            caption = "GPU memory: " + (
                "waiting for the first NVML reading" if active else "no readings were recorded"
            )
        out.captions.append(caption)
    for gpu in devices:
        procs = mem[(mem["gpu"] == gpu.index) & (mem["kind"] == "process")]
        engines = set(procs["engine"])
        reservations = []
        budget = None
        vllm_lane = tf.lane_for_engine("vllm", lanes)
        if "vllm" in engines:
            for cache in caches.values():
                res = tf.vllm_reservation(cache, gpu, tf.lane_by_idx(lanes, cache.lane_idx))
                if res is not None:
                    reservations.append(res)
                    budget = budget or res["gib"]
        total_gib = gpu.total_bytes / tf.GIB if gpu.total_bytes else None
        phases = tf.engine_phases(mem[mem["gpu"] == gpu.index], total_gib, budget)
        notes = memory_notes(
            [c for c in caches.values() if vllm_lane is None or c.lane_idx == vllm_lane.idx],
            engines,
            oll,
        )
        fig = gpu_memory_figure(
            mem, gpu, colors, spans, phases, reservations, notes, end_s, uirevision
        )
        out.figures.append((f"gpu{gpu.index}", fig, True))
    if not kv.empty:
        capacity = None
        tokens = [c.kv_tokens for c in caches.values() if c.kv_tokens]
        if len(tokens) == 1:
            capacity = f"{tokens[0]:,} tokens"
        out.figures.append(
            ("kv", kv_cache_figure(kv, colors, spans, end_s, capacity, uirevision), False)
        )
        out.figures.append(("queue", queue_figure(kv, colors, spans, end_s, uirevision), False))
    if not oll.empty:
        out.figures.append(("ollama", ollama_figure(oll, colors, spans, end_s, uirevision), False))
    seen = set(kv["lane_idx"]) | set(oll["lane_idx"].dropna().astype(int))
    for lane in lanes:
        if lane.kind not in ("vllm", "ollama") or lane.idx in seen:
            continue
        path = "/metrics" if lane.kind == "vllm" else "/api/ps"
        status = _status_line(env, f"{lane.idx}{path}")
        source = "vLLM /metrics" if lane.kind == "vllm" else "Ollama /api/ps"
        if status:
            out.captions.append(f"{source} of {lane.name}: {status}")
        elif not active:
            out.captions.append(f"{source} of {lane.name}: no readings were recorded")
    return out
