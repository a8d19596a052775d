"""NVML sampling: per-GPU memory, utilization, power, energy and per-process memory.

Everything degrades to a clean "no NVIDIA GPU" state where nvidia-ml-py, the driver
library or the driver itself is missing: no exception leaves this module and nothing is
logged above DEBUG for it (most machines that run the dashboard have no NVIDIA GPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lib.core.records import Sample

log = logging.getLogger(__name__)

NO_GPU = "no NVIDIA GPU"
METRICS = ("memory", "utilization", "power", "energy", "processes")


def _nvml_error_reason(pynvml: Any, exc: Exception) -> str:
    """A one-line reason for an NVML init failure, naming the no-GPU cases as such."""
    no_gpu = {
        "NVMLError_LibraryNotFound": f"{NO_GPU} (NVML library not found)",
        "NVMLError_DriverNotLoaded": f"{NO_GPU} (driver not loaded)",
        "NVMLError_NotFound": f"{NO_GPU} (no device found)",
    }
    for cls_name, reason in no_gpu.items():
        cls = getattr(pynvml, cls_name, None)
        if cls is not None and isinstance(exc, cls):
            return reason
    return f"NVML error: {exc}"


def _text(value: Any) -> str:
    # Older bindings return bytes, current ones str.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- process attribution -------------------------------------------------------------


def _read_proc(proc_root: Path, pid: int) -> tuple[str, list[str], int | None] | None:
    """comm, argv and parent pid of a process, or None when it cannot be seen."""
    base = proc_root / str(pid)
    try:
        comm = (base / "comm").read_text(errors="replace").strip()
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return None
    # setproctitle (vLLM's "VLLM::EngineCore") may leave the title space-padded in argv[0].
    argv = [a.decode(errors="replace").strip() for a in raw.split(b"\0") if a.strip()]
    ppid = None
    try:
        for line in (base / "status").read_text(errors="replace").splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
                break
    except (OSError, ValueError, IndexError):
        pass
    return comm, argv, ppid


def classify_process(
    comm: str,
    argv: Sequence[str],
    parent_comm: str = "",
    parent_argv: Sequence[str] = (),
) -> tuple[str, str]:
    """Name a GPU process and the engine it belongs to: (process, engine).

    engine is "vllm", "ollama", "llama.cpp" or "unknown". vLLM's GPU memory sits in its
    `VLLM::EngineCore` child (set with setproctitle; comm is cut to 15 characters), not
    in the API server; Ollama's sits in its runner child (`ollama runner` or a
    `llama-server` whose parent is `ollama`), not in `ollama serve`.
    """
    title = argv[0] if argv else ""
    base = os.path.basename(title.split()[0]) if title.strip() else comm
    parent_base = os.path.basename(parent_argv[0]) if parent_argv else parent_comm
    joined = " ".join(argv)

    if title.startswith("VLLM::"):
        return title.split()[0], "vllm"
    if comm.startswith("VLLM::"):
        return comm, "vllm"
    if (
        "vllm.entrypoints" in joined
        or base == "vllm"
        or any(os.path.basename(a) == "vllm" for a in argv[1:2])
    ):
        return "vllm api_server", "vllm"
    if "llama_cpp.server" in joined:
        return "llama_cpp.server", "llama.cpp"
    if base == "ollama" or comm == "ollama":
        if len(argv) > 1 and argv[1] == "runner":
            return "ollama runner", "ollama"
        return "ollama " + (argv[1] if len(argv) > 1 else ""), "ollama"
    if base in ("llama-server", "ollama_llama_server"):
        under_ollama = parent_base == "ollama" or parent_comm == "ollama"
        if under_ollama or base == "ollama_llama_server":
            return base, "ollama"
        return base, "llama.cpp"
    return comm or base or "?", "unknown"


def identify_process(pid: int, proc_root: str | Path = "/proc") -> tuple[str, str]:
    """(process, engine) for a host pid as NVML reports it, read from /proc.

    NVML gives host PIDs; inside a container without the host PID namespace they are
    not visible, which gives ("pid not visible", "unknown").
    """
    root = Path(proc_root)
    info = _read_proc(root, pid)
    if info is None:
        return "pid not visible", "unknown"
    comm, argv, ppid = info
    parent = _read_proc(root, ppid) if ppid else None
    parent_comm, parent_argv = (parent[0], parent[1]) if parent else ("", [])
    return classify_process(comm, argv, parent_comm, parent_argv)


# --- the sampler ---------------------------------------------------------------------


class NvmlSampler:
    """Reads every GPU once per `sample()`; one NVML init for its whole life.

    `reason` is None while NVML works, else why not. `status` holds one entry per
    series ("nvml" plus "nvml/gpu<i>/<metric>"): "ok" or "unavailable: <reason>". A
    metric that answers NotSupported is not asked again (it will not start working).
    """

    def __init__(
        self,
        proc_root: str | Path = "/proc",
        identify: Callable[[int], tuple[str, str]] | None = None,
    ) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._mem_version: Any = None
        self._energy_base: dict[int, float] = {}
        self._unsupported: set[str] = set()
        self._identify = identify or (lambda pid: identify_process(pid, proc_root))
        self.reason: str | None = "not opened"
        self.driver: str | None = None
        self.status: dict[str, str] = {}

    @property
    def available(self) -> bool:
        return self.reason is None

    def open(self) -> bool:
        """Initialise NVML and cache device handles; False (with `reason`) if no GPU."""
        try:
            import pynvml
        except ImportError:
            return self._fail(f"{NO_GPU} (nvidia-ml-py not installed)")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return self._fail(_nvml_error_reason(pynvml, exc))
        except OSError as exc:  # a broken libnvidia-ml can fail inside ctypes itself
            return self._fail(f"{NO_GPU} ({exc})")
        self._nvml = pynvml
        self._energy_base = {}
        try:
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        except pynvml.NVMLError as exc:
            self.close()
            return self._fail(_nvml_error_reason(pynvml, exc))
        if not self._handles:
            self.close()
            return self._fail(f"{NO_GPU} (no device found)")
        try:
            self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            self.driver = None
        # memory v2 separates driver-reserved memory, as current nvidia-smi does;
        # fall back to v1 on drivers that lack it.
        try:
            pynvml.nvmlDeviceGetMemoryInfo(self._handles[0], version=pynvml.nvmlMemory_v2)
            self._mem_version = pynvml.nvmlMemory_v2
        except (pynvml.NVMLError, AttributeError, TypeError):
            self._mem_version = None
        self.reason = None
        self.status["nvml"] = "ok"
        return True

    def _fail(self, reason: str) -> bool:
        log.debug("GPU telemetry unavailable: %s", reason)
        self.reason = reason
        self.status = {"nvml": f"unavailable: {reason}"}
        return False

    def close(self) -> None:
        """Release NVML (reference-counted by NVML, so other users are unaffected)."""
        if self._nvml is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        self._nvml = None
        self._handles = []
        if self.reason is None:
            self.reason = "closed"  # so a later open() starts afresh; status keeps the last word

    def _read(self, index: int, metric: str, fn: Callable[[], Any]) -> Any:
        """Run one NVML call; a failure marks only that series unavailable."""
        key = f"nvml/gpu{index}/{metric}"
        if key in self._unsupported:
            return None
        pynvml = self._nvml
        try:
            value = fn()
        except pynvml.NVMLError as exc:
            if isinstance(exc, pynvml.NVMLError_NotSupported):
                self._unsupported.add(key)
            if self.status.get(key) != f"unavailable: {exc}":
                log.debug("%s unavailable: %s", key, exc)
            self.status[key] = f"unavailable: {exc}"
            return None
        self.status[key] = "ok"
        return value

    def read_gpus(self) -> list[dict[str, Any]]:
        """One reading of every GPU, as plain dicts (None where a metric failed)."""
        if self._nvml is None:
            return []
        pynvml = self._nvml
        gpus = []
        for i, handle in enumerate(self._handles):
            if self._mem_version is not None:
                mem = self._read(
                    i,
                    "memory",
                    lambda h=handle: pynvml.nvmlDeviceGetMemoryInfo(h, version=self._mem_version),
                )
            else:
                mem = self._read(i, "memory", lambda h=handle: pynvml.nvmlDeviceGetMemoryInfo(h))
            util = self._read(
                i, "utilization", lambda h=handle: pynvml.nvmlDeviceGetUtilizationRates(h)
            )
            power_mw = self._read(i, "power", lambda h=handle: pynvml.nvmlDeviceGetPowerUsage(h))
            energy_mj = self._read(
                i, "energy", lambda h=handle: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            )
            procs = self._read(
                i, "processes", lambda h=handle: pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            )
            energy_j = None
            if energy_mj is not None:
                # The counter runs since driver load; the recorder wants its own window.
                base = self._energy_base.setdefault(i, float(energy_mj))
                energy_j = (float(energy_mj) - base) / 1000.0
            processes = []
            for proc in procs or []:
                used = getattr(proc, "usedGpuMemory", None)  # None e.g. under WDDM
                name, engine = self._identify(int(proc.pid))
                processes.append(
                    {"pid": int(proc.pid), "used_bytes": used, "process": name, "engine": engine}
                )
            gpus.append(
                {
                    "index": i,
                    "name": self._names[i],
                    "memory_total_bytes": int(mem.total) if mem is not None else None,
                    "memory_used_bytes": int(mem.used) if mem is not None else None,
                    "utilization_gpu_pct": float(util.gpu) if util is not None else None,
                    "power_w": power_mw / 1000.0 if power_mw is not None else None,
                    "energy_j": energy_j,
                    "processes": processes,
                }
            )
        return gpus

    def sample(self, t: float) -> list[Sample]:
        """Samples (source "nvml") for every GPU and GPU process, stamped `t`."""
        samples: list[Sample] = []
        for gpu in self.read_gpus():
            labels = {"gpu": str(gpu["index"]), "name": gpu["name"]}
            for name in (
                "memory_used_bytes",
                "memory_total_bytes",
                "utilization_gpu_pct",
                "power_w",
                "energy_j",
            ):
                if gpu[name] is not None:
                    samples.append(
                        Sample(
                            t=t,
                            source="nvml",
                            name=name,
                            value=float(gpu[name]),
                            labels=dict(labels),
                        )
                    )
            for proc in gpu["processes"]:
                if proc["used_bytes"] is None:
                    continue
                samples.append(
                    Sample(
                        t=t,
                        source="nvml",
                        name="process_memory_used_bytes",
                        value=float(proc["used_bytes"]),
                        labels={
                            "gpu": str(gpu["index"]),
                            "pid": str(proc["pid"]),
                            "process": proc["process"],
                            "engine": proc["engine"],
                        },
                    )
                )
        return samples


def gpu_snapshot() -> dict[str, Any]:
    """Current GPU state, for `python -m lib.cli gpu --json`.

    {"available": true, "driver": str, "gpus": [{"index", "name", "memory_total_bytes",
    "memory_used_bytes", "utilization_gpu_pct", "power_w", "processes": [{"pid",
    "used_bytes", "process", "engine"}]}]} or {"available": false, "reason": str}.
    """
    sampler = NvmlSampler()
    if not sampler.open():
        return {"available": False, "reason": sampler.reason}
    try:
        gpus = sampler.read_gpus()
    finally:
        sampler.close()
    for gpu in gpus:
        gpu.pop("energy_j", None)  # relative to this call's own start: always 0 here
    return {"available": True, "driver": sampler.driver, "gpus": gpus}
