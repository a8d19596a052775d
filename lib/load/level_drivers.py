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


async def closed_loop(send: Send, c: int, n: int, stopped: Callable[[], bool]) -> None:
    """c users, each sending its next request when its previous one finished."""
    issued = 0

    async def user() -> None:
        nonlocal issued
        while issued < n and not stopped():
            idx = issued
            issued += 1
            await send(idx, None)

    await all_or_none([asyncio.create_task(user()) for _ in range(min(c, n))])


async def open_loop(
    send: Send, n: int, load: dict[str, Any], seed: int, key: int, stopped: Callable[[], bool]
) -> None:
    """Send each request at its scheduled time, whether earlier ones finished or not.

    With a cap on requests in flight a request waits for a free place; its scheduled
    time is recorded beside its send time, so the wait shows as schedule lag.
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
        t0 = time.perf_counter()
        for idx, offset in enumerate(offsets):
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
