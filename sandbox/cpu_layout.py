"""Where the sandbox engines run on the CPU, so that their streams really stream.

Measured on a 2-core machine with the dashboard's live view open (bench/stream_burst.py,
BENCHMARKS.md): left to the scheduler, vLLM's API server (which detokenizes and writes
every SSE event) lost the CPU to its own engine process, the dashboard and the browser,
and then sent a whole stream at once: 40-60% of the tiny model's requests arrived in one
burst (TTFT = E2E). With the engine process on its own core and the API server on the
other, none did. So vLLM's engine-core process (and its threads) gets every allowed core
but the last, and the API server gets the last one. llama.cpp runs compute and HTTP in one
process: it keeps the scheduler's placement and uses one thread fewer than the cores
(its spin barriers collapsed when 2 threads shared 2 busy cores).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Cores for vLLM's engine-core process and for its API server (empty: no pinning)."""

    engine: tuple[int, ...]
    api_server: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"engine_core": list(self.engine), "api_server": list(self.api_server)}


def allowed_cores() -> list[int]:
    """The cores this process may run on (a container's or taskset's limit included)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def vllm_layout(cores: list[int] | None = None) -> Layout:
    """The engine core on all cores but the last, the API server on the last one."""
    cores = allowed_cores() if cores is None else sorted(cores)
    if len(cores) < 2:
        return Layout((), ())
    return Layout(tuple(cores[:-1]), (cores[-1],))


def llama_threads(cores: list[int] | None = None) -> int:
    """llama.cpp's thread count: one fewer than the cores, at least one."""
    count = len(allowed_cores() if cores is None else cores)
    return max(1, count - 1)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children's children included)."""
    out: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def pin_process(pid: int, cores: tuple[int, ...]) -> int:
    """Set the affinity of every thread of ``pid``; returns how many threads were set.

    ``sched_setaffinity`` on a pid moves only its main thread; threads started later
    inherit from the thread that starts them, so the ones already running are set here.
    """
    done = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), cores)
            done += 1
    return done


def pin_vllm(api_server_pid: int, layout: Layout | None = None) -> dict[str, list[int]] | None:
    """Pin a started vLLM (its API server and the engine processes below it); returns the
    layout applied, or None where there is nothing to pin (one core, or no /proc)."""
    layout = layout or vllm_layout()
    if not layout.engine:
        return None
    children = descendants(api_server_pid)
    if not pin_process(api_server_pid, layout.api_server):
        return None
    for child in children:
        pin_process(child, layout.engine)
    return layout.to_json()
