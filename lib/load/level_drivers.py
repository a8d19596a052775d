"""How one level's requests are paced: closed loop (c users) or open loop (a schedule).

`send(idx, scheduled)` makes and records one request (the runner's); these functions only
decide when it is called. Cancelling a driver cancels its requests, which record
themselves as cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lib.load.arrivals import arrival_offsets, sleep_until

Send = Callable[[int, float | None], Awaitable[None]]


async def closed_loop(
    send: Send,
    c: int,
    n: int,
    stopped: Callable[[], bool],
    take: Callable[[], int | None] | None = None,
) -> None:
    """c users, each sending its next request when its previous one finished.

    `take` hands out the next of the level's n request numbers (None when all are
    taken); load workers share one counter through it, so their users together send
    exactly n, as one process's users do.
    """
    issued = 0

    def next_here() -> int | None:
        nonlocal issued
        if issued >= n:
            return None
        issued += 1
        return issued - 1

    take = take or next_here

    async def user() -> None:
        while not stopped():
            idx = take()
            if idx is None:
                return
            await send(idx, None)

    await all_or_none([asyncio.create_task(user()) for _ in range(min(c, n))])


async def open_loop(
    send: Send,
    n: int,
    load: dict[str, Any],
    seed: int,
    key: int,
    stopped: Callable[[], bool],
    start: float | None = None,
    mine: Callable[[int], bool] | None = None,
) -> None:
    """Send each request at its scheduled time, whether earlier ones finished or not.

    With a cap on requests in flight a request waits for a free place; its scheduled
    time is recorded beside its send time, so the wait shows as schedule lag.
    A load worker keeps the one schedule of the level: the same offsets from the shared
    `start` (a perf_counter time), sending only the requests that are `mine`.
    """
    offsets = arrival_offsets(n, load, seed, key)
    cap = load.get("max_concurrency")
    slots = asyncio.Semaphore(cap) if cap else None
    tasks: list[asyncio.Task[None]] = []

    async def capped(idx: int, due: float) -> None:
        assert slots is not None
        async with slots:
            await send(idx, due)

    try:
        t0 = time.perf_counter() if start is None else start
        for idx, offset in enumerate(offsets):
            if mine is not None and not mine(idx):
                continue
            due = t0 + offset
            await sleep_until(due)
            if stopped():
                break
            work = send(idx, due) if slots is None else capped(idx, due)
            tasks.append(asyncio.create_task(work))  # type: ignore[arg-type]
    except asyncio.CancelledError:
        await _cancel(tasks)
        raise
    await all_or_none(tasks)


async def all_or_none(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; if this wait is cancelled, cancel them and let them record."""
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        await _cancel(tasks)
        raise


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
