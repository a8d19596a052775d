"""Load worker processes: a level's requests spread over N processes when one event
loop is not enough (`--workers N`; the count in lib/load/worker_count.py).

Each worker (lib/load/load_worker.py) has its own event loop and connection pool. The
level stays one level:
- one clock: every worker times on CLOCK_MONOTONIC, the run's own clock, checked at start;
- one start: the level begins at the same instant in every worker;
- closed loop: the c users are shared out and take request numbers from one shared
  counter, so together they send exactly the level's n requests, as one process's do;
- open loop: one schedule (the same seed and offsets), request idx going to worker
  idx mod k; a cap on requests in flight is shared out the same way.
Rows come back as each request finishes and go to the run's store writer here, so the
store, the level's tally and the progress events are the same as with one process.

A worker that dies mid-level: its requests in flight, and the open-loop requests it had
yet to send, are recorded as failed with the reason; the others go on (closed loop: the
remaining request numbers are taken by the live workers). A dead worker is replaced
before the next level.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from lib.core.records import Prompt, RequestResult, RunConfig
from lib.load import load_worker
from lib.load.arrivals import arrival_offsets
from lib.load.load_worker import LevelShare
from lib.load.one_request import RowMaker, account, request_row
from lib.load.run_state import PreparedLane, RunState

START_TIMEOUT_S = 60.0  # spawning imports servescope's modules: seconds on a slow box
START_LEAD_S = 0.02  # a level starts this long after "go", in every worker
ARM_TIMEOUT_S = 60.0  # for every worker's client to be ready (it asks the engine its info)
STOP_WAIT_S = 10.0  # a cancelled level's workers report their cancelled requests by then
CLOCK_TOLERANCE_S = 0.005  # two processes' wall - monotonic offsets must agree this well


class LoadWorkerError(RuntimeError):
    """The workers could not be started; the message is one line for the user."""


@dataclass
class _Worker:
    number: int  # 1-based, as the user reads it
    process: Any
    commands: Connection
    results: Connection
    pid: int = 0
    ready: asyncio.Future[tuple[float, float]] | None = None
    dead: str | None = None  # why, once it died


@dataclass
class _Level:
    """A level in progress across the workers."""

    state: RunState
    lane: PreparedLane
    maker: RowMaker
    key: int
    prompts: list[Prompt]  # the level's, as every worker cycles through them
    waiting: set[int]  # worker numbers whose share is not done
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    unarmed: set[int] = field(default_factory=set)  # workers not yet ready to start
    armed: asyncio.Event = field(default_factory=asyncio.Event)
    # Per worker: requests sent and not yet finished, idx -> (scheduled, t_send).
    in_flight: dict[int, dict[int, tuple[float | None, float]]] = field(default_factory=dict)
    # Per worker: open-loop requests it has not sent yet, idx -> offset in the schedule.
    unsent: dict[int, dict[int, float]] = field(default_factory=dict)
    lags_ms: list[float] = field(default_factory=list)
    cancelled: bool = False
    n: int = 0
    closed_loop: bool = True
    start: float | None = None  # the level's start on the shared clock, once armed
    # Why workers left the level early (died, or their share failed), latest last.
    reasons: list[str] = field(default_factory=list)


class WorkerPool:
    """N load worker processes for one run."""

    def __init__(self, count: int, lanes: int, perf0: float, wall0: float) -> None:
        self.count = count
        self.perf0, self.wall0 = perf0, wall0
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._counters = self._ctx.RawArray("q", max(lanes, 1))  # one per lane's level
        self._lock = self._ctx.Lock()
        self._workers: list[_Worker] = []
        self._levels: dict[int, _Level] = {}
        self._next_level = 0
        self.deaths: list[str] = []

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the workers and wait until each answers on the run's clock."""
        await self._fill()

    async def _fill(self) -> None:
        alive = [w for w in self._workers if w.dead is None]
        used = {w.number for w in alive}
        spawned = []
        for number in range(1, self.count + 1):
            if number not in used:
                spawned.append(self._spawn(number))
        self._workers = sorted(alive + spawned, key=lambda w: w.number)
        if not spawned:
            return
        ready = [w.ready for w in spawned if w.ready is not None]
        try:
            stamps = await asyncio.wait_for(asyncio.gather(*ready), START_TIMEOUT_S)
        except (TimeoutError, EOFError) as exc:
            why = "did not start in time" if isinstance(exc, TimeoutError) else "exited at start"
            await self.close()
            raise LoadWorkerError(f"load worker processes {why}; run with --workers 1") from None
        for worker, (perf, wall) in zip(spawned, stamps, strict=True):
            offset = (wall - perf) - (self.wall0 - self.perf0)
            if abs(offset) > CLOCK_TOLERANCE_S:
                await self.close()
                raise LoadWorkerError(
                    f"load worker {worker.number}'s monotonic clock is {offset * 1000:.0f} ms "
                    "off the run's: its times could not be compared; run with --workers 1"
                )

    def _spawn(self, number: int) -> _Worker:
        loop = asyncio.get_running_loop()
        commands_in, commands_out = self._ctx.Pipe(duplex=False)
        results_in, results_out = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=load_worker.main,
            args=(commands_in, results_out, self._counters, self._lock, self.perf0, self.wall0),
            name=f"servescope-load-{number}",
            daemon=True,
        )
        process.start()
        # The child holds its own ends now; closing ours makes its death an EOF here.
        commands_in.close()
        results_out.close()
        worker = _Worker(number, process, commands_out, results_in, pid=process.pid or 0)
        worker.ready = loop.create_future()
        loop.add_reader(results_in.fileno(), self._on_results, worker)
        return worker

    async def close(self) -> None:
        """Stop every worker: politely, then for good."""
        loop = asyncio.get_running_loop()
        for w in self._workers:
            if w.dead is None:
                with contextlib.suppress(OSError):
                    w.commands.send(("stop",))
        deadline = time.monotonic() + STOP_WAIT_S
        for w in self._workers:
            await asyncio.to_thread(w.process.join, max(deadline - time.monotonic(), 0.1))
            if w.process.is_alive():
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
            with contextlib.suppress(Exception):
                loop.remove_reader(w.results.fileno())
            w.dead = w.dead or "stopped"
            for conn in (w.commands, w.results):
                with contextlib.suppress(OSError):
                    conn.close()

    # --- a level --------------------------------------------------------------------

    async def run_level(
        self,
        state: RunState,
        config: RunConfig,
        lane: PreparedLane,
        key: int,
        n: int,
        load: dict[str, Any] | None,
        seed: int,
    ) -> list[float]:
        """Run one level over the workers; return their event loops' lags (ms)."""
        await self._fill()  # a worker that died in an earlier level is replaced
        workers = [w for w in self._workers if w.dead is None]
        cap = (load or {}).get("max_concurrency")
        active = min(len(workers), key if load is None else (cap or len(workers)), n)
        workers = workers[: max(active, 1)]
        level_id = self._next_level
        self._next_level += 1
        level = _Level(
            state=state,
            lane=lane,
            maker=RowMaker(state.run_id, state.clock, None, config),
            key=key,
            prompts=lane.prompts or config.prompts,
            waiting={w.number for w in workers},
            unarmed={w.number for w in workers},
            n=n,
            closed_loop=load is None,
        )
        self._levels[level_id] = level
        self._counters[lane.idx] = 0
        k = len(workers)
        # The open-loop schedule's offsets, for the requests a dying worker leaves unsent.
        offsets = arrival_offsets(n, load, seed, key) if load is not None else []
        for i, w in enumerate(workers):
            share = LevelShare(
                run_id=state.run_id,
                lane_idx=lane.idx,
                key=key,
                engine_kind=lane.spec.engine,
                base_url=lane.spec.base_url,
                model=lane.spec.model,
                api_key=lane.api_key,
                config=config,
                prompts=lane.prompts,
                n=n,
                counter=lane.idx,
                seed=seed,
                worker=i,
                workers=k,
            )
            level.in_flight[w.number] = {}
            if load is None:
                share.users = _share(key, k, i)
            else:
                share.load = dict(load)
                if cap:
                    share.load["max_concurrency"] = _share(cap, k, i)
                level.unsent[w.number] = {idx: offsets[idx] for idx in range(i, n, k)}
            self._send(w, ("level", level_id, share))
        try:
            await self._arm(level_id, level)
            while not level.finished.is_set():
                stop = asyncio.ensure_future(state.cancel.wait())
                done = asyncio.ensure_future(level.finished.wait())
                try:
                    await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    done.cancel()
                if state.cancel.is_set() and not level.finished.is_set():
                    await self._cancel(level_id, level)
        except (asyncio.CancelledError, LoadWorkerError):
            await self._cancel(level_id, level)
            raise
        finally:
            self._levels.pop(level_id, None)
        return level.lags_ms

    async def _arm(self, level_id: int, level: _Level) -> None:
        """Wait until every worker is ready, then give them one start, shortly after."""
        try:
            await asyncio.wait_for(level.armed.wait(), ARM_TIMEOUT_S)
        except TimeoutError:
            slow = ", ".join(str(n) for n in sorted(level.unarmed))
            raise LoadWorkerError(
                f"load worker {slow} not ready after {ARM_TIMEOUT_S:.0f} s"
            ) from None
        level.start = time.perf_counter() + START_LEAD_S
        for worker in self._workers:
            if worker.number in level.waiting and worker.dead is None:
                self._send(worker, ("go", level_id, level.start))

    async def _cancel(self, level_id: int, level: _Level) -> None:
        level.cancelled = True
        for w in self._workers:
            if w.number in level.waiting and w.dead is None:
                self._send(w, ("cancel", level_id))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(level.finished.wait(), STOP_WAIT_S)
        for number in list(level.waiting):  # never answered: its requests end here
            self._give_up(level, number, "cancelled")

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        try:
            worker.commands.send(message)
        except OSError:
            self._died(worker)

    # --- messages from the workers ---------------------------------------------------

    def _on_results(self, worker: _Worker) -> None:
        try:
            while worker.results.poll():
                for message in worker.results.recv():
                    self._handle(worker, message)
        except (EOFError, OSError):
            self._died(worker)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.pid = message[1]
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result((message[2], message[3]))
            return
        level = self._levels.get(message[1])
        if level is None:
            return
        if kind == "armed":
            self._armed(level, worker.number)
        elif kind == "start":
            _, _, idx, scheduled, t_send = message
            level.unsent.get(worker.number, {}).pop(idx, None)
            level.in_flight[worker.number][idx] = (scheduled, t_send)
        elif kind == "row":
            row = message[2]
            level.in_flight[worker.number].pop(row["idx"], None)
            account(level.state, level.lane.spec.name, row, warmup=False)
        elif kind == "done":
            _, _, lags, error = message
            level.lags_ms.extend(lags)
            if error is not None:
                reason = f"load worker {worker.number}: {error}"
                level.reasons.append(reason)
                self._give_up(level, worker.number, reason)
            elif level.cancelled:
                level.unsent.pop(worker.number, None)  # never sent: nothing to record
            self._finish_share(level, worker.number)

    def _died(self, worker: _Worker) -> None:
        if worker.dead is not None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(worker.results.fileno())
        worker.process.join(1)
        worker.dead = f"load worker {worker.number} (pid {worker.pid}) died: {_exit_text(worker)}"
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(EOFError(worker.dead))
            return
        self.deaths.append(worker.dead)
        for level in self._levels.values():
            if worker.number in level.waiting:
                lost = len(level.in_flight.get(worker.number, {}))
                lost += len(level.unsent.get(worker.number, {}))
                level.state.progress(
                    {
                        "event": "worker_died",
                        "lane": level.lane.spec.name,
                        "concurrency": level.key,
                        "reason": worker.dead,
                        "requests": lost,
                    }
                )
                level.reasons.append(worker.dead)
                self._give_up(level, worker.number, worker.dead)
                self._finish_share(level, worker.number)

    def _give_up(self, level: _Level, number: int, reason: str) -> None:
        """Record a worker's unfinished requests of the level as failed with `reason`."""
        now = time.perf_counter()
        lost = [
            (idx, scheduled, t_send)
            for idx, (scheduled, t_send) in level.in_flight.pop(number, {}).items()
        ]
        start = level.start if level.start is not None else now
        lost += [
            (idx, start + offset, min(start + offset, now))
            for idx, offset in level.unsent.pop(number, {}).items()
        ]
        _fail(level, lost, reason, now)

    def _armed(self, level: _Level, number: int) -> None:
        level.unarmed.discard(number)
        if not level.unarmed:
            level.armed.set()

    def _finish_share(self, level: _Level, number: int) -> None:
        self._armed(level, number)  # a worker gone before it was ready holds nobody up
        level.waiting.discard(number)
        if level.waiting:
            return
        if level.closed_loop and level.reasons and not level.cancelled:
            # No worker is left to send the level's remaining requests: each is recorded
            # as failed for the last worker's reason, so the level still holds all n.
            slot = level.lane.idx
            with self._lock:
                left = range(self._counters[slot], level.n)
                self._counters[slot] = level.n
            now = time.perf_counter()
            _fail(level, [(idx, None, now) for idx in left], level.reasons[-1], now)
        level.finished.set()


def _fail(
    level: _Level, lost: list[tuple[int, float | None, float]], reason: str, now: float
) -> None:
    """Record requests (idx, scheduled, t_send) of the level as failed with `reason`, in
    request order; each had the prompt its number gives, as in every worker."""
    for idx, scheduled, t_send in sorted(lost):
        prompt_idx = idx % len(level.prompts)
        result = RequestResult(t_send=t_send, t_done=now, error=reason)
        row = request_row(
            level.maker, level.lane.idx, level.prompts[prompt_idx], result, level.key, idx,
            prompt_idx, False, scheduled,
        )  # fmt: skip
        account(level.state, level.lane.spec.name, row, warmup=False)


def _share(total: int, parts: int, i: int) -> int:
    """Part i of `total` split as evenly as whole numbers allow (the first get one more)."""
    return total // parts + (1 if i < total % parts else 0)


def _exit_text(worker: _Worker) -> str:
    code = worker.process.exitcode
    if code is None:
        return "its pipe closed"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"
