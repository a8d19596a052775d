"""What the load generator itself did during a level, stored beside the engines' telemetry.

A benchmark whose client falls behind measures the client: a blocked event loop delays
every stream's chunks and every next send. `LoopLagProbe` wakes every PERIOD_S and
records how late it woke (the loop's lag); `client_samples` turns a level's lags and
the runner's own count of what it recorded into samples (source "client") that the
run's validation compares with the rows read back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from lib.core.metrics import distribution
from lib.core.records import Sample

PERIOD_S = 0.02  # how often the probe wakes; its lag is how much later than that it woke
SOURCE = "client"


class LoopLagProbe:
    """Samples the running event loop's lag (ms) until stopped."""

    def __init__(self, period_s: float = PERIOD_S) -> None:
        self.period_s = period_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.lags_ms

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.period_s)
            self.lags_ms.append(max(loop.time() - asked - self.period_s, 0.0) * 1000.0)


def client_samples(
    concurrency: int,
    lags_ms: list[float],
    requests: int,
    output_tokens: int,
    workers: int = 1,
) -> list[Sample]:
    """The level's client samples: loop lag p50/p99/max (when any was taken; with load
    workers, every worker's probes together), the runner's count of the requests and
    output tokens it handed to the store, and how many load processes sent them."""
    now = time.time()
    labels = {"concurrency": str(concurrency)}
    out = [
        Sample(now, SOURCE, "recorded_requests", float(requests), labels),
        Sample(now, SOURCE, "recorded_output_tokens", float(output_tokens), labels),
        Sample(now, SOURCE, "load_workers", float(workers), labels),
    ]
    if lags_ms:
        lag = distribution(lags_ms)  # the same percentiles as every latency here
        for name, value in (
            ("loop_lag_p50_ms", lag["p50"]),
            ("loop_lag_p99_ms", lag["p99"]),
            ("loop_lag_max_ms", max(lags_ms)),
            ("loop_lag_probes", len(lags_ms)),
        ):
            out.append(Sample(now, SOURCE, name, float(value), labels))
    return out
