"""A lane whose engine servescope starts: launch, measure, stop, and keep the record.

The engine starts when its lane's turn comes (one engine alive at a time), with its
log in the run's folder beside the database (``jobs/<run_id>/lane-<n>.log``). Its
memory is sampled from the spawn on, so the first sample precedes the lane's first
request; the engine's /metrics joins the run's telemetry once it answers. A cell
that cannot start (refused recipe, port taken, exit, timeout) fails its levels with
the reason and the log's last lines, and the matrix goes on. The engine and every
child are stopped whatever happens, cancellation included.

The lane's ``engine_process`` record goes to the store at spawn (state "starting"),
at readiness ("running") and at the end ("stopped" or "failed"), so the dashboard shows
a cell starting up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lib import store
from lib.core import outcome
from lib.core.load_pattern import RATE, level_label
from lib.core.records import RunConfig
from lib.engines.base import EngineError
from lib.launch import phases
from lib.launch.engine_process import EngineProcess, LaunchFailed
from lib.launch.executables import LaunchRefused
from lib.load.run_state import PreparedLane, RunState, connect_lane, one_line
from lib.telemetry import TelemetryRecorder, TelemetryTarget
from lib.telemetry.recorder import TARGET_KINDS

STARTING, RUNNING, STOPPED, FAILED = "starting", "running", "stopped", "failed"


def engine_log_path(jobs_folder: Path, run_id: str, lane: PreparedLane) -> Path:
    return jobs_folder / run_id / f"lane-{lane.idx}.log"


async def run_launched_lane(
    state: RunState,
    config: RunConfig,
    lane: PreparedLane,
    run_lane: Callable[[], Awaitable[None]],
    recorder: TelemetryRecorder,
    log_path: Path,
) -> None:
    """Start the lane's engine, run ``run_lane`` against it, stop it; never raises for
    an engine that would not start (its levels fail instead)."""
    recipe = lane.spec.recipe
    assert recipe is not None
    run_id, idx = state.run_id, lane.idx

    def sink(samples: list[Any]) -> None:
        state.writer.submit(store.add_samples, run_id, idx, samples)

    proc = EngineProcess(recipe, log_path, sink)
    base = {"recipe": recipe.to_dict(), "settings": recipe.settings(), "variant": recipe.variant}

    def save(status: str, record: dict[str, Any]) -> None:
        state.writer.submit(
            store.set_lane_process, run_id, idx, {**base, **record, "state": status}
        )

    state.progress({"event": "engine_start", "lane": lane.spec.name})
    try:
        await asyncio.to_thread(proc.start)
    except (LaunchRefused, LaunchFailed) as exc:
        message = str(exc)
        save(FAILED, proc.not_started(message))
        _fail_levels(state, config, lane, f"engine not started: {message}")
        return
    save(STARTING, proc.record())
    status = FAILED
    try:
        await asyncio.to_thread(proc.wait_ready, state.cancel.is_set)
        lane.spec.base_url = proc.base_url
        await connect_lane(lane)
        state.writer.submit(
            store.update_lane, run_id, idx, proc.base_url, asdict(lane.info), asdict(lane.model)
        )
        save(RUNNING, proc.record())
        state.progress({"event": "engine_ready", "lane": lane.spec.name, "ready_s": proc.ready_s})
        if lane.info.kind in TARGET_KINDS:
            recorder.add_target(TelemetryTarget(str(idx), lane.info.kind, proc.base_url))
        proc.mark(phases.FIRST_REQUEST)
        await run_lane()
        proc.mark(phases.IDLE)
        status = STOPPED
    except LaunchFailed as exc:
        if not state.cancel.is_set():
            _fail_levels(state, config, lane, f"engine not ready: {exc}")
    except EngineError as exc:
        _fail_levels(state, config, lane, f"engine started but {one_line(exc)}")
    finally:
        recorder.remove_target(str(idx))
        if lane.engine is not None:
            await lane.engine.aclose()
            lane.engine = None  # type: ignore[assignment]
        await asyncio.to_thread(proc.stop)
        record = proc.record()
        if proc.exit_reason == "exited by itself" and status == STOPPED:
            status = FAILED  # it died during the lane: its failed requests say when
        save(status, record)
        state.progress(
            {
                "event": "engine_stop",
                "lane": lane.spec.name,
                "peak_memory_mib": record["peak_memory_mib"],
                "leftover": record["leftover_pids"],
            }
        )


def _fail_levels(state: RunState, config: RunConfig, lane: PreparedLane, reason: str) -> None:
    """Every level the lane would have run, failed with ``reason`` (the matrix goes on)."""
    now = time.time()
    if config.capacity is not None:
        keys: list[tuple[int, dict[str, Any] | None]] = [(1, None)]
    elif config.load.mode == RATE:
        keys = [(k, config.load.level_load(r)) for k, r in enumerate(config.load.rates, 1)]
    else:
        keys = [(c, None) for c in config.concurrency]
    for key, load in keys:
        state.writer.submit(
            store.set_level, state.run_id, lane.idx, key, outcome.FAILED, now, now, reason, load
        )
        state.ended.append(
            {
                "lane_idx": lane.idx,
                "concurrency": key,
                "load_label": level_label(load, key),
                "status": outcome.FAILED,
                "error": reason,
            }
        )
    state.progress({"event": "engine_failed", "lane": lane.spec.name, "error": reason})
