"""A load worker process: its own event loop and connections, sending its share of a
level's requests and streaming each finished request's row back to the run's process.

The run's process (lib/load/worker_pool.py) starts it with `multiprocessing`'s spawn and
talks to it over two pipes. Commands in: ("level", id, LevelShare), ("go", id, start),
("cancel", id), ("stop",). Messages out, in batches (a list per send): ("ready", pid,
perf, wall), ("armed", id) once its client for the level is ready, then after "go"
("start", id, idx, scheduled, t_send) when a request goes,
("row", id, row) when it is finished, ("done", id, lags_ms, error) when its share of the
level is over. The rows are built here (metrics, quality check), so the run's process
only stores and counts them.

Times: `time.perf_counter()` is CLOCK_MONOTONIC on Linux, one clock for every process
of the machine, so a worker times requests on the run's own clock and converts to wall
time with the run's reference (perf0, wall0); the pool checks this at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from queue import SimpleQueue
from typing import Any

from lib.core.records import Prompt, RequestResult, RunConfig
from lib.engines import make_engine
from lib.engines.base import Engine
from lib.load import level_drivers
from lib.load.arrivals import sleep_until
from lib.load.client_probe import LoopLagProbe
from lib.load.one_request import RowMaker, quality_checker, request_row, timed_chat
from lib.load.run_state import one_line


@dataclass
class LevelShare:
    """One worker's part of a level: the same level, prompts and schedule as every
    other worker's, and which of its requests are this worker's."""

    run_id: str
    lane_idx: int
    key: int  # the level's key in the store (users, or an open-loop level's number)
    engine_kind: str
    base_url: str
    model: str
    api_key: str | None = field(repr=False)
    config: RunConfig
    prompts: list[Prompt] | None
    n: int  # the level's requests, all workers together
    users: int = 0  # closed loop: this worker's users
    counter: int = 0  # closed loop: the slot of the shared counter of request numbers
    load: dict[str, Any] | None = None  # open loop: the level's load, this worker's cap
    seed: int = 0
    worker: int = 0  # open loop: this worker sends requests idx % workers == worker
    workers: int = 1


def _import_adapters() -> None:
    """Import every engine adapter now: `make_engine` imports them on first use, and
    the openai SDK's import (~0.4 s) at a level's start would make the worker late."""
    import lib.engines.ollama
    import lib.engines.openai_compat  # noqa: F401


def main(
    commands: Connection,
    results: Connection,
    counters: Any,
    lock: Any,
    perf0: float,
    wall0: float,
) -> None:
    """The process's entry point (spawned): serve commands until told to stop."""
    _import_adapters()
    worker = LoadWorker(commands, results, counters, lock, perf0, wall0)
    with contextlib.suppress(KeyboardInterrupt):  # the run's Ctrl-C reaches the group
        asyncio.run(worker.serve())


class LoadWorker:
    def __init__(
        self,
        commands: Connection,
        results: Connection,
        counters: Any,
        lock: Any,
        perf0: float,
        wall0: float,
    ) -> None:
        self.commands, self.results = commands, results
        self.counters, self.lock = counters, lock
        self.clock = lambda perf: wall0 + (perf - perf0)
        self.engines: dict[tuple[int, str], Engine] = {}
        self.levels: dict[int, asyncio.Task[None]] = {}
        # Each armed level's start (perf_counter), set when the run says "go".
        self.starts: dict[int, asyncio.Future[float]] = {}
        # Rows leave through a thread, so a slow reader on the other side never stalls
        # this loop's streams; each send carries everything queued since the last.
        self.outbox: SimpleQueue[tuple[Any, ...] | None] = SimpleQueue()
        self.sender = threading.Thread(target=self._send_loop, name="results", daemon=True)
        self.quality = quality_checker()

    def post(self, message: tuple[Any, ...]) -> None:
        self.outbox.put(message)

    def _send_loop(self) -> None:
        while True:
            batch = [self.outbox.get()]
            while not self.outbox.empty():
                batch.append(self.outbox.get())
            done = None in batch
            messages = [m for m in batch if m is not None]
            try:
                if messages:
                    self.results.send(messages)
            except OSError:  # the run's process is gone: nothing left to tell
                return
            if done:
                return

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        loop.add_reader(self.commands.fileno(), self._read, inbox)
        self.sender.start()
        gc.freeze()  # as the runner does: no collector pauses in the streams' timing
        self.post(("ready", os.getpid(), time.perf_counter(), time.time()))
        try:
            while True:
                message = await inbox.get()
                if message[0] == "stop":
                    break
                if message[0] == "level":
                    level_id, share = message[1], message[2]
                    task = asyncio.create_task(self._level(level_id, share))
                    self.levels[level_id] = task
                    task.add_done_callback(lambda _t, i=level_id: self.levels.pop(i, None))
                elif message[0] == "go" and message[1] in self.starts:
                    if not self.starts[message[1]].done():
                        self.starts[message[1]].set_result(message[2])
                elif message[0] == "cancel" and message[1] in self.levels:
                    self.levels[message[1]].cancel()
        finally:
            loop.remove_reader(self.commands.fileno())
            for task in list(self.levels.values()):
                task.cancel()
            await asyncio.gather(*self.levels.values(), return_exceptions=True)
            for engine in self.engines.values():
                with contextlib.suppress(Exception):
                    await engine.aclose()
            self.post(None)
            await asyncio.to_thread(self.sender.join, 10)

    def _read(self, inbox: asyncio.Queue[tuple[Any, ...]]) -> None:
        try:
            while self.commands.poll():
                inbox.put_nowait(self.commands.recv())
        except (EOFError, OSError):  # the run's process is gone: stop, don't linger
            inbox.put_nowait(("stop",))
            asyncio.get_running_loop().remove_reader(self.commands.fileno())

    async def _engine(self, share: LevelShare) -> Engine:
        """The lane's client in this process, asked what it talks to before its first
        level (as the run's process did when it connected the lane): otherwise the
        first request would find out, late, at the level's start."""
        key = (share.lane_idx, share.base_url)  # a started engine's lane changes port
        if key not in self.engines:
            engine = make_engine(share.engine_kind, share.base_url, share.api_key)
            self.engines[key] = engine
            await engine.info()
        return self.engines[key]

    def _taker(self, slot: int, n: int) -> Any:
        def take() -> int | None:
            with self.lock:
                idx = self.counters[slot]
                if idx >= n:
                    return None
                self.counters[slot] = idx + 1
            return int(idx)

        return take

    async def _level(self, level_id: int, share: LevelShare) -> None:
        maker = RowMaker(share.run_id, self.clock, self.quality, share.config)
        prompts = share.prompts or share.config.prompts
        error: str | None = None
        probe = LoopLagProbe()
        try:
            engine = await self._engine(share)

            async def send(idx: int, scheduled: float | None) -> None:
                prompt_idx = idx % len(prompts)
                prompt = prompts[prompt_idx]
                t_send = time.perf_counter()
                self.post(("start", level_id, idx, scheduled, t_send))

                def keep(result: RequestResult) -> None:
                    row = request_row(
                        maker, share.lane_idx, prompt, result, share.key, idx, prompt_idx,
                        False, scheduled,
                    )  # fmt: skip
                    self.post(("row", level_id, row))

                await timed_chat(engine, share.model, prompt, share.config, keep)

            never = lambda: False  # noqa: E731 - stopping is cancelling this task
            # Every worker is ready before any starts: the run then names one start.
            go = self.starts[level_id] = asyncio.get_running_loop().create_future()
            self.post(("armed", level_id))
            start = await go
            await sleep_until(start)
            probe.start()
            if share.load is None:
                take = self._taker(share.counter, share.n)
                await level_drivers.closed_loop(send, share.users, share.n, never, take)
            else:
                w, k = share.worker, share.workers
                await level_drivers.open_loop(
                    send, share.n, share.load, share.seed, share.key, never,
                    start=start, mine=lambda idx: idx % k == w,
                )  # fmt: skip
        except asyncio.CancelledError:
            pass  # its requests recorded themselves as cancelled
        except Exception as exc:  # told to the run, which records it
            error = one_line(exc)
        finally:
            self.starts.pop(level_id, None)
            lags = await probe.stop()
            self.post(("done", level_id, lags, error))
