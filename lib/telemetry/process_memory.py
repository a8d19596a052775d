"""Memory of one engine process and its children, from the second it starts.

The seed team's memory row ("3 -> 5770 (model loading) -> 20898 (KV cache)") can only be
measured by whoever watches the engine from its start, so a launched engine gets its own
sampler at spawn, before the benchmark sends anything. Without a GPU it reads the
resident memory (RSS) of the process tree (vLLM's engine core and workers are children of
its API server); on a GPU it adds the tree's memory on each GPU from NVML, per process.

Samples: source "process", names "rss_bytes" (the tree's sum) and "gpu_memory_used_bytes"
(the tree's sum over GPUs, only where NVML answers), labelled with the process count.
psutil does the reading; a process that vanishes between listing and reading is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from lib.core.records import Sample

SOURCE = "process"
RSS = "rss_bytes"
GPU = "gpu_memory_used_bytes"
MIB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and every process below it ([] when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss_bytes(procs: list[psutil.Process]) -> tuple[int, int]:
    """(resident bytes summed over ``procs``, processes counted: those still there)."""
    total = count = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
            count += 1
        except psutil.Error:
            continue
    return total, count


GpuReader = Callable[[set[int]], int | None]


class ProcessMemorySampler:
    """Samples one process tree when asked (lib/launch's watcher asks twice a second).

    ``sink`` receives each sample as it is taken; ``peak_rss_bytes`` and
    ``peak_gpu_bytes`` hold the largest seen. ``gpu_reader`` (pids -> bytes or None)
    is optional: without a GPU there is none.
    """

    def __init__(
        self,
        pid: int,
        sink: Callable[[list[Sample]], None],
        gpu_reader: GpuReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pid = pid
        self.sink = sink
        self.gpu_reader = gpu_reader
        self.clock = clock
        self.peak_rss_bytes = 0
        self.peak_gpu_bytes: int | None = None
        self.first_t: float | None = None
        self.latest_rss_bytes = 0

    def sample(self) -> list[Sample]:
        """Take one sample of the tree now (nothing once the process is gone)."""
        procs = tree(self.pid)
        if not procs:
            return []
        t = self.clock()
        rss, count = rss_bytes(procs)
        labels = {"processes": str(count)}
        samples = [Sample(t=t, source=SOURCE, name=RSS, value=float(rss), labels=labels)]
        self.latest_rss_bytes = rss
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        if self.gpu_reader is not None:
            gpu = self.gpu_reader({p.pid for p in procs})
            if gpu is not None:
                samples.append(
                    Sample(t=t, source=SOURCE, name=GPU, value=float(gpu), labels=labels)
                )
                self.peak_gpu_bytes = max(self.peak_gpu_bytes or 0, gpu)
        if self.first_t is None:
            self.first_t = t
        self.sink(samples)
        return samples

    def peaks_mib(self) -> dict[str, Any]:
        """{"rss": MiB, "gpu": MiB or None}, rounded to whole MiB."""
        gpu = self.peak_gpu_bytes
        return {
            "rss": round(self.peak_rss_bytes / MIB),
            "gpu": round(gpu / MIB) if gpu is not None else None,
        }


def nvml_tree_reader() -> tuple[GpuReader | None, Callable[[], None]]:
    """A reader of a process tree's GPU memory from NVML, and its closer; (None, no-op)
    where there is no GPU (no driver, no device, nvidia-ml-py missing)."""
    from lib.telemetry.nvml import NvmlSampler

    sampler = NvmlSampler()
    if not sampler.open():
        return None, lambda: None

    def read(pids: set[int]) -> int | None:
        used = [
            proc["used_bytes"]
            for gpu in sampler.read_gpus()
            for proc in gpu["processes"]
            if proc["pid"] in pids and proc["used_bytes"] is not None
        ]
        return sum(used)

    return read, sampler.close
