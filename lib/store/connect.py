"""Opening the store, whichever backend it is: `connect(db)` / `with opened(db) as conn`.

Every caller gets a connection with the same few methods (execute, executemany,
transaction, close) and rows that read the same; the functions of runs, measurements
and saved take it as their first argument and hold the store's SQL.

A viewer's connections are read-only (`read_only()` for a block of code, e.g. a
dashboard page drawn for a viewer, or `connect(read_only=True)`): SQLite opens the
file read-only, PostgreSQL's server refuses the session's writes, and neither ever
migrates the schema.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lib.store.target import StoreError, target

_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "servescope_store_read_only", default=False
)


def reading_only() -> bool:
    """Whether connections opened here are read-only (a viewer, or SERVESCOPE_ROLE=viewer)."""
    return _READ_ONLY.get() or os.environ.get("SERVESCOPE_ROLE", "").lower() == "viewer"


@contextmanager
def read_only(on: bool = True) -> Iterator[None]:
    """Connections opened inside the block are read-only (when `on`)."""
    token = _READ_ONLY.set(on or _READ_ONLY.get())
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


def connect(db: str | os.PathLike[str] | None = None, read_only: bool | None = None) -> Any:
    """Open the store (creating and migrating it when allowed). Close it when done.

    Raises StoreError with one line naming the database (never its password) when it
    cannot be opened: callers (the CLI, the run's process, the dashboard) report it
    instead of a traceback.
    """
    chosen = target(db)
    viewer = reading_only() if read_only is None else read_only
    if chosen.dialect == "postgresql":
        from lib.store.postgres_backend import open_postgres
        from lib.store.postgres_pool import keeping, open_pooled

        if keeping():
            return open_pooled(chosen.url or "", viewer)
        return open_postgres(chosen.url or "", viewer)
    from lib.store.sqlite_backend import open_sqlite

    return open_sqlite(chosen.path, viewer)  # type: ignore[arg-type]


@contextmanager
def opened(
    db: str | os.PathLike[str] | None = None, read_only: bool | None = None
) -> Iterator[Any]:
    """A short-lived connection: `with opened(db) as conn: ...`."""
    conn = connect(db, read_only)
    try:
        yield conn
    finally:
        conn.close()


def database_errors() -> tuple[type[BaseException], ...]:
    """What opening or querying either backend can raise, for `except` clauses that must
    not let an unreadable store take a page down (psycopg's only once it is loaded: it
    is imported when a PostgreSQL store is first opened)."""
    errors: list[type[BaseException]] = [sqlite3.Error, StoreError, OSError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)


def keep_connections(on: bool = True) -> None:
    """A long-lived process (the dashboard) keeps its PostgreSQL connections open between
    store calls (lib/store/postgres_pool); a SQLite file needs none."""
    from lib.store.postgres_pool import keep_connections as keep

    keep(on)
