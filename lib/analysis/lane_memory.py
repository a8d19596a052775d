"""How much memory a lane's engine used, from a results-document lane's telemetry.

One rule for the dashboard, the HTML report and the PNG card: the NVML memory of the
lane's engine processes, else the VRAM Ollama reports for its models, else the whole
GPU while the lane ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def engine_kind(lane: Mapping[str, Any]) -> str:
    """vllm, ollama, llama.cpp or openai (what the endpoint said it is)."""
    return str((lane.get("engine_info") or {}).get("kind") or lane.get("engine") or "")


def memory_series(lane: Mapping[str, Any]) -> tuple[str, list[tuple[float, float]]]:
    """(what was measured, [(t seconds since run start, bytes)]) for a lane.

    Best source first: NVML memory of the lane's engine processes (summed per sample
    time); else Ollama's /api/ps model size (VRAM part, or all of it when on CPU); else
    the whole GPU's used memory while the lane ran. ("", []) when none was sampled.
    """
    samples = lane.get("telemetry") or []
    kind = engine_kind(lane)
    by_t: dict[float, float] = {}
    for s in samples:
        labels = s.get("labels") or {}
        if s["name"] == "process_memory_used_bytes" and labels.get("engine") == kind:
            by_t[s["t"]] = by_t.get(s["t"], 0.0) + s["value"]
    if by_t:
        return "GPU, engine processes", sorted(by_t.items())
    ollama: dict[str, list[tuple[float, float]]] = {"size_vram": [], "size": []}
    for s in samples:
        if s["source"] == "ollama" and s["name"] in ollama:
            ollama[s["name"]].append((s["t"], s["value"]))
    if any(v > 0 for _, v in ollama["size_vram"]):
        return "VRAM, Ollama", ollama["size_vram"]
    if ollama["size"]:
        return "model size, Ollama", ollama["size"]
    for s in samples:
        if s["source"] == "nvml" and s["name"] == "memory_used_bytes":
            by_t[s["t"]] = by_t.get(s["t"], 0.0) + s["value"]
    return ("GPU, whole device", sorted(by_t.items())) if by_t else ("", [])


PEAK_SOURCES = {
    "GPU, engine processes": "engine processes (NVML)",
    "VRAM, Ollama": "Ollama /api/ps size_vram",
    "GPU, whole device": "whole GPU (NVML)",
}


def lane_peak_memory(lane: Mapping[str, Any]) -> tuple[float | None, str]:
    """(peak bytes, what was measured) over a results-document lane's telemetry.

    The sources and their order are memory_series's, so the dashboard, the
    report and the card agree: the NVML memory of the lane's engine processes, else the
    VRAM Ollama reports for its models, else the whole GPU while the lane ran. A model
    size Ollama reports with nothing in VRAM is RAM, not GPU memory: left out.
    """
    label, points = memory_series(lane)
    if label not in PEAK_SOURCES or not points:
        return None, ""
    return max(v for _, v in points), PEAK_SOURCES[label]
