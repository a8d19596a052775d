"""Enough open files for the run's streams: each stream holds a socket, and many systems
start a process with a soft limit of 1024 files, which a run at 1024 users passes
("Too many open files" on every request past it). The soft limit is raised, up to the
hard limit the system allows, before the first connection; load workers inherit it.
"""

from __future__ import annotations

import resource

# Beyond one socket per stream: the store, logs, pipes to load workers, the engines'
# telemetry connections.
SPARE_FILES = 256


def ensure_open_files(streams: int) -> int:
    """Raise this process's soft limit on open files to cover `streams` sockets where the
    hard limit allows; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = streams + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if ceiling > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
    return soft
