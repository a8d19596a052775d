"""What a run ran on: GPUs (NVML) and the host (stdlib and /proc only)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from lib.telemetry.nvml import NvmlSampler


def _cpu_info(text: str) -> tuple[str | None, int | None]:
    """CPU model and physical core count from /proc/cpuinfo text."""
    model = None
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            # End of one logical CPU's block: (package, core) counts a physical core.
            if physical is not None and core is not None:
                cores.add((physical, core))
            physical = core = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model") and model is None:  # "Model" on arm64 boards
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
    return model, (len(cores) or None)


def _mem_total_bytes(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024  # /proc/meminfo says kB, meaning KiB
            except (IndexError, ValueError):
                return None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def hardware_info(proc_root: str | Path = "/proc") -> dict[str, Any]:
    """Hardware and OS of this machine, recorded with each run.

    {"gpu": {"available", "driver", "gpus": [{"index", "name", "memory_total_bytes"}]}
    or {"available": false, "reason"}, "cpu_model", "cpu_cores_logical",
    "cpu_cores_physical", "cpu_cores_usable", "ram_total_bytes", "os", "python"}.
    Fields that cannot be read are None.
    """
    root = Path(proc_root)
    model, physical = _cpu_info(_read(root / "cpuinfo"))
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = None

    sampler = NvmlSampler(proc_root=root)
    if sampler.open():
        try:
            gpus = [
                {
                    "index": g["index"],
                    "name": g["name"],
                    "memory_total_bytes": g["memory_total_bytes"],
                }
                for g in sampler.read_gpus()
            ]
        finally:
            sampler.close()
        gpu: dict[str, Any] = {"available": True, "driver": sampler.driver, "gpus": gpus}
    else:
        gpu = {"available": False, "reason": sampler.reason}

    return {
        "gpu": gpu,
        "cpu_model": model or platform.processor() or None,
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "cpu_cores_usable": usable,
        "ram_total_bytes": _mem_total_bytes(_read(root / "meminfo")),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
