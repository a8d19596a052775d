"""How many load worker processes a run uses, and which counts are refused.

One process is the default wherever it is enough: it is the most accurate (BENCHMARKS.md,
"Clients side by side": TTFT error p50 1.2–1.6 ms up to 128 streams on 2 shared cores)
and starts nothing. Past STREAMS_PER_WORKER streams in flight at once, one event loop's
CPU per chunk starts to show in the timing, so the automatic count adds a worker per
STREAMS_PER_WORKER streams, keeping one core for the run's own process (the store
writer, telemetry) and the engine when it shares the machine.

64 streams a worker, not more: on the 16-core GPU host's slower cores (BENCHMARKS.md,
"Load workers") 64 streams a worker kept TTFT error p50 near 1 ms and every worker count
on schedule, while 128 a worker fell behind from 4 workers on; and closed-loop users
that finish together (fixed output lengths) hand one loop a burst of finished and new
requests whose lag grows with the streams it holds.
"""

from __future__ import annotations

import math
import os
import sys

from lib.core.load_pattern import CONCURRENCY, RATE
from lib.core.records import RunConfig

STREAMS_PER_WORKER = 64
# An open-loop level without a cap holds about rate × request time streams; before any
# request is measured the request time is a guess.
ASSUMED_REQUEST_S = 2.0


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def problem(workers: object, available: int | None = None) -> str | None:
    """Why `workers` cannot be used here, in one line; None when it can."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        return f"--workers must be a whole number of processes, 1 or more (got {workers!r})"
    available = available or cores()
    if workers > available:
        return (
            f"--workers {workers}: this machine gives servescope {available} "
            f"core{'s' if available != 1 else ''}; more load processes than cores would time "
            f"each other's streams. Use at most {available}, or leave it out (automatic)"
        )
    if workers > 1 and not sys.platform.startswith("linux"):
        return "--workers above 1 needs Linux, whose monotonic clock every process shares"
    return None


def peak_streams(config: RunConfig) -> int:
    """The most requests the run may hold in flight at once, all lanes together."""
    search = config.capacity
    if search is not None:
        per_lane = search.max if search.mode == CONCURRENCY else search.max * ASSUMED_REQUEST_S
    elif config.load.mode == RATE:
        cap = config.load.max_concurrency
        rates = [r for r in config.load.rates if r is not None]
        fastest = max(rates, default=math.inf)
        per_lane = cap or (config.requests if math.isinf(fastest) else fastest * ASSUMED_REQUEST_S)
        per_lane = min(per_lane, cap or per_lane, config.requests)
    else:
        per_lane = max(config.concurrency, default=1)
    lanes = len(config.lanes) if config.lanes_parallel else 1
    return max(math.ceil(per_lane), 1) * lanes


def automatic(config: RunConfig, available: int | None = None) -> int:
    """Enough workers for the run's peak streams, at most the cores less one."""
    available = available or cores()
    if not sys.platform.startswith("linux"):
        return 1
    wanted = math.ceil(peak_streams(config) / STREAMS_PER_WORKER)
    return max(1, min(wanted, available - 1))


def resolve(config: RunConfig, available: int | None = None) -> int:
    """The worker count the run uses: the one asked for, else the automatic one."""
    return config.workers if config.workers is not None else automatic(config, available)
