"""When each request of an open-loop level is sent: the schedule, and keeping to it.

Inter-arrival times follow vLLM's `--request-rate` / `--burstiness`: gamma-distributed
with shape = burstiness and mean 1/rate (burstiness 1 is a Poisson process), or evenly
spaced ("constant"). A linear ramp moves the rate from `ramp_from` at the first request
to the level's rate at the last. The first request goes at offset 0.

Every lane gets the same schedule at the same level (the seed and the level's number
pick it, not the lane), so lanes are compared under identical arrivals.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

# epoll waits in whole milliseconds (rounded up), so a plain sleep lands up to 1 ms
# late; the last stretch before a send is spent yielding to the loop instead.
SPIN_WINDOW_S = 0.0015


def arrival_offsets(n: int, load: dict[str, Any], seed: int, level_key: int) -> list[float]:
    """Seconds from the level's start at which each of its n requests is due."""
    rate = load.get("rate")
    if n <= 0:
        return []
    if rate is None or math.isinf(rate):
        return [0.0] * n
    rng = random.Random(f"{seed}:{level_key}")
    burstiness = float(load.get("burstiness") or 1.0)
    start = load.get("ramp_from")
    offsets, t = [0.0], 0.0
    for i in range(1, n):
        r = rate if start is None else start + (rate - start) * i / max(n - 1, 1)
        r = max(r, 1e-9)
        if load.get("arrival") == "constant":
            gap = 1.0 / r
        else:
            gap = rng.gammavariate(burstiness, 1.0 / (r * burstiness))
        t += gap
        offsets.append(t)
    return offsets


async def sleep_until(deadline: float) -> None:
    """Return at perf_counter() >= deadline, within a few tens of microseconds."""
    delay = deadline - time.perf_counter()
    if delay > SPIN_WINDOW_S:
        await asyncio.sleep(delay - SPIN_WINDOW_S)
    while time.perf_counter() < deadline:
        await asyncio.sleep(0)  # yield: responses keep streaming meanwhile
