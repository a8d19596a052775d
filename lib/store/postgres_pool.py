"""Connections kept open for a long-lived process (the dashboard), per database and mode.

Opening a PostgreSQL connection costs ~8 ms (TCP, the SCRAM password exchange, a new
server process, the schema check) against 0.3 ms for a SQLite file, and a dashboard
redraw opens about ten: 65-80 ms a redraw, and a process start on the server per store
call for every viewer (BENCHMARKS.md, "Store backends"). `keep_connections()` (app.py
calls it) makes `store.connect` borrow from a psycopg_pool pool instead; closing the
connection gives it back. The first connection to a database is still opened directly:
it checks (and, for an operator, migrates) the schema, and its errors are the precise
one-line ones; a pool that cannot hand a connection in time falls back to that too.
Command-line runs keep one connection for their writer and never pool.
"""

from __future__ import annotations

import threading
from typing import Any

from lib.store.postgres_backend import PostgresConnection, connect_kwargs, open_postgres

MAX_SIZE = 8  # connections one dashboard process holds to one database at most
MAX_IDLE_S = 60.0  # an idle connection is closed after this (a quiet dashboard holds none)
# How long a store call waits for the pool before opening directly: a pool with nothing
# idle connects in ~8 ms; waiting longer only delays the one-line error of a server that
# went away (a direct open says why at once).
POOL_WAIT_S = 2.0

_keep = False
_pools: dict[tuple[str, bool], Any] = {}
_lock = threading.Lock()


def keep_connections(on: bool = True) -> None:
    """Pool PostgreSQL connections in this process from now on (or stop, closing them)."""
    global _keep
    _keep = on
    if not on:
        close_all()


def keeping() -> bool:
    return _keep


def open_pooled(url: str, read_only: bool) -> PostgresConnection:
    """A connection from this database's pool, the pool made after a first direct open."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    key = (url, read_only)
    pool = _pools.get(key)
    if pool is not None:
        try:
            raw = pool.getconn(timeout=POOL_WAIT_S)
        except PoolTimeout:
            pass  # the server went away: a direct open says why, in one line
        else:
            return PostgresConnection(raw, read_only, release=pool.putconn)
    conn = open_postgres(url, read_only)  # checks the schema; raises StoreError
    with _lock:
        if key not in _pools:
            _pools[key] = ConnectionPool(
                url,
                kwargs=connect_kwargs(read_only),
                min_size=0,
                max_size=MAX_SIZE,
                max_idle=MAX_IDLE_S,
                # A connection the server dropped (a restart) is never handed out.
                check=ConnectionPool.check_connection,
                name="servescope",
                open=True,
            )
    return conn


def close_all() -> None:
    """Close every pool (their connections too)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
