"""The load generator: drives each lane through the Engine protocol, level by level.

Closed loop: at concurrency c, c workers each send their next request as soon as
their previous one finished, until the level's N measured requests have been sent.
Warm-up requests go first, one at a time, and are stored flagged as warm-ups
(excluded from statistics; an Ollama cold load shows there on its own).
Every finished request is handed to the store writer at once. Knows nothing of
Streamlit: progress goes to an optional callback and to the store.

Its parts: lanes and shared state in lib/load/run_state.py, one request and its record
in one_request.py, a level's pacing in level_drivers.py (closed loop or an open-loop
schedule), the capacity search's steps in capacity.py; the configuration check that runs
before it is config_check.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
import uuid
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from lib import __version__, store
from lib.core import outcome
from lib.core.load_pattern import CONCURRENCY, RATE, level_label
from lib.core.records import RunConfig
from lib.load import lane_prompts, launched_lane, level_drivers, open_files, worker_count
from lib.load.capacity import search
from lib.load.client_probe import LoopLagProbe, client_samples
from lib.load.config_check import ConfigError, validate_config
from lib.load.engine_logs import sandbox_engine_report
from lib.load.one_request import TIMEOUT_GRACE_S, one_request
from lib.load.one_request import quality_checker as _quality_checker  # tests replace it
from lib.load.run_state import (
    LevelTally,
    PreparedLane,
    ProgressFn,
    RunState,
    close_lanes,
    one_line,
    prepare_lanes,
)
from lib.load.worker_pool import LoadWorkerError, WorkerPool
from lib.store.writer import StoreWriter
from lib.telemetry import TelemetryRecorder, TelemetryTarget
from lib.telemetry.recorder import TARGET_KINDS

# The CLI and the Run page import the configuration check from here, beside the runner.
__all__ = [
    "TIMEOUT_GRACE_S",
    "ConfigError",
    "LevelTally",
    "LoadWorkerError",
    "PreparedLane",
    "ProgressFn",
    "RunState",
    "close_lanes",
    "execute_run",
    "new_run_id",
    "prepare_lanes",
    "validate_config",
]


def new_run_id() -> str:
    """Sortable and short: creation time plus randomness."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


async def execute_run(
    config: RunConfig,
    lanes: list[PreparedLane],
    db: str | None = None,
    run_id: str | None = None,
    progress: ProgressFn | None = None,
    cancel: asyncio.Event | None = None,
    env: dict[str, Any] | None = None,
    telemetry_interval_s: float = 1.0,
) -> str:
    """Run every lane and level, writing to the store; return the run id.

    The run row is created here unless `run_id` names one made beforehand (the
    dashboard creates it so the page can follow the run from its first second).
    """
    cancel = cancel or asyncio.Event()
    # Everything loaded so far (clients, modules, prompts) lives for the whole run:
    # keep it out of the garbage collector's scans, whose pauses showed as 30-55 ms
    # stalls in the client's chunk timing at 256 streams (BENCHMARKS.md).
    gc.freeze()
    perf0, wall0 = time.perf_counter(), time.time()
    writer = StoreWriter(db)
    state = RunState(
        run_id=run_id or new_run_id(),
        writer=writer,
        clock=lambda perf: wall0 + (perf - perf0),
        cancel=cancel,
        progress=progress or (lambda event: None),
        quality=_quality_checker(),
    )
    if config.load.seed is None:
        # A fresh schedule per run, recorded with it (settings.load_seed), so a run's
        # arrivals can be replayed and two runs are not the same draw by accident.
        config.load.seed = random.SystemRandom().randrange(2**31)
    env = {**(env or {}), "tool_version": __version__, "load_seed": config.load.seed}
    if lane_prompts.ensure_seed(config) is not None:
        env["synthetic_seed"] = config.synthetic["seed"]  # type: ignore[index]
    open_files.ensure_open_files(worker_count.peak_streams(config))
    workers = worker_count.resolve(config)
    env["load_workers"] = workers
    if workers > 1:
        # Started before the run is stored: workers that cannot start are one line
        # (LoadWorkerError), not a run that failed.
        state.pool = WorkerPool(workers, len(lanes), perf0, wall0)
        try:
            await state.pool.start()
        except BaseException:
            writer.close()
            raise
    lane_rows = [
        (
            state.run_id,
            lane.idx,
            lane.spec.name,
            lane.spec.engine,
            lane.spec.base_url,
            lane.spec.model,
            asdict(lane.info),
            asdict(lane.model),
        )
        for lane in lanes
    ]
    if run_id is None:
        writer.submit(store.create_run, state.run_id, config.to_dict(), config.label, env)
    writer.submit(_start_run, state.run_id, env, lane_rows)
    recorder = _telemetry(state, lanes, telemetry_interval_s)
    status, error = outcome.COMPLETED, None
    try:
        if config.lanes_parallel:
            await asyncio.gather(*(_run_lane(state, config, lane) for lane in lanes))
        else:
            for lane in lanes:
                if state.cancel.is_set():
                    break
                if lane.spec.recipe is None:
                    await _run_lane(state, config, lane)
                    continue
                # One engine alive at a time: started for its lane, stopped after it.
                log = launched_lane.engine_log_path(_jobs_folder(db), state.run_id, lane)
                await launched_lane.run_launched_lane(
                    state, config, lane, partial(_run_lane, state, config, lane), recorder, log
                )
        if cancel.is_set():
            status = outcome.CANCELLED
        else:
            # Finished is not the same as fine: a lane whose engine died fails its levels.
            status = outcome.combined_status(lv["status"] for lv in state.ended)
            error = outcome.run_error(state.ended, [lane.spec.name for lane in lanes])
    except BaseException as exc:  # record why, keep what finished
        status, error = ("cancelled", None) if _is_cancel(exc) else ("failed", one_line(exc))
        raise
    finally:
        if state.pool is not None:
            await state.pool.close()
            if state.pool.deaths:
                env["load_worker_deaths"] = state.pool.deaths
        recorder.stop()
        env["telemetry"] = recorder.status()
        logs = _engine_logs(state, lanes)
        if logs:
            env["engine_logs"] = logs
        writer.submit(_finish_run, state.run_id, status, error, env)
        writer.close()
    return state.run_id


def _jobs_folder(db: str | None) -> Path:
    """Where the run's files live beside the database (as lib/load/jobs.jobs_dir, which
    imports this module)."""
    return store.target(db).local_dir / "jobs"


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)


def _start_run(
    conn: Any, run_id: str, env: dict[str, Any], lane_rows: list[tuple[Any, ...]]
) -> None:
    for row in lane_rows:
        store.add_lane(conn, *row)
    store.update_run(
        conn, run_id, status="running", started_at=time.time(), pid=os.getpid(), env=env
    )


def _finish_run(
    conn: Any, run_id: str, status: str, error: str | None, env: dict[str, Any]
) -> None:
    now = time.time()
    store.update_run(conn, run_id, status=status, error=error, finished_at=now, env=env)
    if status not in (outcome.COMPLETED, outcome.PARTIAL):
        # A stopped or crashed run leaves its level unfinished.
        store.close_levels(conn, run_id, status, now)


def _engine_logs(state: RunState, lanes: list[PreparedLane]) -> dict[str, Any]:
    """For each lane with failed requests that is a sandbox engine: whether it still
    answers, its log and the log's last lines, read now (the log may be rewritten)."""
    troubled = {li for (li, _), tally in state.tally.items() if tally.errors}
    out = {}
    for lane in lanes:
        # A started engine's log tail is in its lane's engine_process record.
        if lane.idx in troubled and lane.spec.recipe is None:
            report = sandbox_engine_report(lane.spec.base_url)
            if report:
                out[str(lane.idx)] = report
    return out


def _telemetry(state: RunState, lanes: list[PreparedLane], interval_s: float) -> TelemetryRecorder:
    """Start sampling GPUs and each lane's engine beside the benchmark.

    Samples go through the same writer thread as the requests; a failing series is
    marked unavailable by the recorder and never stops or slows the run.
    """
    targets = [
        TelemetryTarget(key=str(lane.idx), kind=lane.info.kind, base_url=lane.spec.base_url)
        for lane in lanes
        if lane.info.kind in TARGET_KINDS and lane.spec.recipe is None  # started later
    ]

    def sink(key: str | None, samples: list[Any]) -> None:
        lane_idx = int(key) if key is not None else None
        state.writer.submit(store.add_samples, state.run_id, lane_idx, samples)

    recorder = TelemetryRecorder(targets, sink, interval_s=interval_s)
    recorder.start()
    return recorder


async def _run_lane(state: RunState, config: RunConfig, lane: PreparedLane) -> None:
    if config.warmup and not state.cancel.is_set():
        await _warm_up(state, config, lane)
    if config.capacity is not None:
        await _search_capacity(state, config, lane)
    elif config.load.mode == RATE:
        # Open-loop levels are numbered 1, 2, ... in the store; their load says the rate.
        for key, rate in enumerate(config.load.rates, start=1):
            if state.cancel.is_set():
                return
            await _run_level(state, config, lane, key, config.load.level_load(rate))
    else:
        for c in config.concurrency:
            if state.cancel.is_set():
                return
            await _run_level(state, config, lane, c)


async def _search_capacity(state: RunState, config: RunConfig, lane: PreparedLane) -> None:
    """Measure the loads lib/load/capacity.py picks until it has the lane's capacity."""
    spec = config.capacity
    assert spec is not None and config.slo is not None  # validate_config requires both
    key = 0

    async def measure(load: float) -> list[dict[str, Any]]:
        nonlocal key
        if spec.mode == CONCURRENCY:
            key = int(load)
            # Each of the c users sends at least twice: fewer requests than users would
            # never put c requests in flight, and the level would pass untested.
            await _run_level(state, config, lane, key, requests=max(config.requests, 2 * key))
        else:
            key += 1  # open-loop levels are numbered in the order they ran
            await _run_level(state, config, lane, key, config.load.level_load(load))
        return state.count(lane.idx, key).records

    def step(load: float, judged: dict[str, Any]) -> None:
        state.progress({"event": "capacity_step", "lane": lane.spec.name, "load": load, **judged})

    await search(spec, config.slo, measure, step, state.cancel.is_set)


async def _warm_up(state: RunState, config: RunConfig, lane: PreparedLane) -> None:
    """Warm-up requests, one at a time, as a level of concurrency 0 in the store: the
    pages show "warming up" with its own timer while an engine loads its model."""
    run_id = state.run_id
    state.writer.submit(store.set_level, run_id, lane.idx, 0, outcome.WARMING_UP, time.time(), None)
    lane.prompts = await lane_prompts.level_prompts(
        config, lane.engine, lane.spec.model, 0, config.warmup
    )
    for i in range(config.warmup):
        if state.cancel.is_set():
            break
        state.progress({"event": "warmup", "lane": lane.spec.name, "index": i, "of": config.warmup})
        await one_request(state, config, lane, concurrency=0, idx=i, warmup=True)
    status, error = state.count(lane.idx, 0).outcome(state.cancel.is_set())
    state.writer.submit(store.set_level, run_id, lane.idx, 0, status, None, time.time(), error)


async def _run_level(
    state: RunState,
    config: RunConfig,
    lane: PreparedLane,
    key: int,
    load: dict[str, Any] | None = None,
    requests: int | None = None,
) -> None:
    """One level: closed loop at concurrency `key`, or open loop when `load` gives a rate;
    `requests` measured (default: the run's requests per level)."""
    run_id = state.run_id
    n = requests or config.requests
    started = time.time()
    state.writer.submit(
        store.set_level, run_id, lane.idx, key, "running", started, None, None, load
    )
    state.progress(
        {"event": "level_start", "lane": lane.spec.name, "concurrency": key, "load": load}
    )
    # Synthetic runs: this level's own prompts, n of them, sized by this lane's engine.
    lane.prompts = await lane_prompts.level_prompts(config, lane.engine, lane.spec.model, key, n)
    seed = config.load.seed or 0
    if state.pool is not None:
        lags = await state.pool.run_level(state, config, lane, key, n, load, seed)
    else:
        lags = await _drive_here(state, config, lane, key, n, load, seed)
    tally = state.count(lane.idx, key)
    # What the client did, beside the engines' telemetry: its loop's lag (every load
    # worker's) and its own count of what it recorded (the validation reads both back).
    workers = state.pool.count if state.pool is not None else 1
    samples = client_samples(key, lags, tally.recorded, tally.output_tokens, workers)
    state.writer.submit(store.add_samples, run_id, lane.idx, samples)
    status, error = tally.outcome(state.cancel.is_set())
    state.ended.append(
        {
            "lane_idx": lane.idx,
            "concurrency": key,
            "load_label": level_label(load, key),  # the run's error names a rate level by it
            "status": status,
            "error": error,
        }
    )
    state.writer.submit(store.set_level, run_id, lane.idx, key, status, None, time.time(), error)
    state.progress(
        {
            "event": "level_end",
            "lane": lane.spec.name,
            "concurrency": key,
            "load": load,
            "status": status,
            "error": error,
        }
    )


async def _drive_here(
    state: RunState,
    config: RunConfig,
    lane: PreparedLane,
    key: int,
    n: int,
    load: dict[str, Any] | None,
    seed: int,
) -> list[float]:
    """Run the level's requests from this process; return its event loop's lags (ms)."""
    probe = LoopLagProbe()
    probe.start()

    async def send(idx: int, scheduled: float | None) -> None:
        await one_request(state, config, lane, key, idx, warmup=False, scheduled=scheduled)

    stopped = state.cancel.is_set
    if load is None:
        work = level_drivers.closed_loop(send, key, n, stopped)
    else:
        work = level_drivers.open_loop(send, n, load, seed, key, stopped)
    driver = asyncio.create_task(work)
    cancel_wait = asyncio.create_task(state.cancel.wait())
    try:
        await asyncio.wait({driver, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not driver.done():
            # Stop now: in-flight requests are cancelled and recorded as such.
            driver.cancel()
        await asyncio.gather(driver, return_exceptions=True)
        if not driver.cancelled() and driver.exception():
            raise driver.exception()  # type: ignore[misc]
    finally:
        cancel_wait.cancel()
        lags = await probe.stop()
    return lags
