"""A run's shared state: its lanes (engine connected, model checked), its bookkeeping
(RunState) and each level's tally, shared by the runner, its level drivers and each
request's record (lib/load/one_request.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lib.core import outcome
from lib.core.records import EngineInfo, LaneSpec, ModelInfo, Prompt, RunConfig
from lib.engines import make_engine
from lib.engines.base import Engine
from lib.store.writer import StoreWriter

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class PreparedLane:
    """A lane with its engine connected and what the endpoint said about itself."""

    idx: int
    spec: LaneSpec
    engine: Engine
    info: EngineInfo
    model: ModelInfo
    # The level's synthetic prompts, sized by this lane's engine (lib/load/lane_prompts).
    prompts: list[Prompt] | None = None
    # Load workers make their own clients with it (lib/load/worker_pool.py); never stored.
    api_key: str | None = field(default=None, repr=False)


@dataclass
class RunState:
    """Bookkeeping shared by the run's tasks."""

    run_id: str
    writer: StoreWriter
    clock: Callable[[float], float]  # perf_counter seconds -> epoch seconds
    cancel: asyncio.Event
    progress: ProgressFn
    failed: int = 0
    completed: int = 0
    quality: Callable[..., Any] | None = None
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    # Per (lane_idx, concurrency; 0 = warm-up): successes and error messages, so a
    # level's outcome and its reason are known when it ends.
    tally: dict[tuple[int, int], LevelTally] = field(default_factory=dict)
    # How each measured level ended, in the order they ended.
    ended: list[dict[str, Any]] = field(default_factory=list)
    # The load worker processes (lib/load/worker_pool.WorkerPool) when a run uses more
    # than one; None: every request is sent from this process.
    pool: Any = None

    def count(self, lane_idx: int, concurrency: int) -> LevelTally:
        return self.tally.setdefault((lane_idx, concurrency), LevelTally())


@dataclass
class LevelTally:
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    recorded: int = 0  # every request handed to the store, cancelled ones included
    output_tokens: int = 0  # server-counted, of the completed ones
    # Each measured request's latencies, so the capacity search can judge the level.
    records: list[dict[str, Any]] = field(default_factory=list)

    def outcome(self, cancelled: bool) -> tuple[str, str | None]:
        total = self.ok + len(self.errors)
        status = outcome.level_status(self.ok, len(self.errors), cancelled)
        return status, outcome.error_reason(self.errors, total)


async def prepare_lanes(config: RunConfig, api_key: str | None = None) -> list[PreparedLane]:
    """Connect each lane's engine and check its model; raise EngineError on any fault.

    A lane whose engine servescope starts from a recipe is connected later, once its
    engine is up (``connect_lane``); until then it holds a placeholder.
    """
    lanes: list[PreparedLane] = []
    try:
        for idx, spec in enumerate(config.lanes):
            if spec.recipe is not None:
                lanes.append(not_started_lane(idx, spec))
                continue
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            lanes.append(PreparedLane(idx, spec, None, None, None))  # type: ignore[arg-type]
            await connect_lane(lanes[-1], key or api_key)
    except BaseException:
        await close_lanes(lanes)
        raise
    names = [lane.spec.name for lane in lanes]
    for lane in lanes:  # two lanes of one kind and model on different hosts
        if names.count(lane.spec.name) > 1:
            lane.spec.name = f"{lane.spec.name} @{lane.spec.base_url}"
    return lanes


def not_started_lane(idx: int, spec: LaneSpec) -> PreparedLane:
    """A recipe's lane before its engine runs: what the recipe says it will be."""
    assert spec.recipe is not None
    spec.name = spec.name or spec.recipe.label()
    info = EngineInfo(kind=spec.recipe.engine, api=spec.engine, base_url="")  # type: ignore[arg-type]
    model = ModelInfo(name=spec.model, extra={"recipe": spec.recipe.to_dict()})
    return PreparedLane(idx, spec, None, info, model)  # type: ignore[arg-type]


async def connect_lane(lane: PreparedLane, api_key: str | None = None) -> None:
    """Make the lane's client, ask the engine what it is and check the model is served."""
    spec = lane.spec
    lane.engine = make_engine(spec.engine, spec.base_url, api_key=api_key)
    lane.api_key = api_key
    lane.info = await lane.engine.info()
    lane.model = await lane.engine.check_model(spec.model)
    if not spec.name:
        spec.name = f"{lane.info.kind}:{spec.model}"


async def close_lanes(lanes: list[PreparedLane]) -> None:
    for lane in lanes:
        if lane.engine is not None:
            with contextlib.suppress(Exception):
                await lane.engine.aclose()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
