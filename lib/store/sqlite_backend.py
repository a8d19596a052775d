"""The SQLite file: opening it (and migrating it when allowed), and transactions.

WAL mode so the dashboard reads while a run writes; short-lived connections (one per
call or per thread, never shared across threads); busy_timeout so two runs writing at
once wait instead of failing with "database is locked". PRAGMA user_version holds the
number of migrations applied.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lib.store.schema import SCHEMA_VERSION, statements
from lib.store.target import StoreError

_BUSY_TIMEOUT_S = 30.0


class SqliteConnection(sqlite3.Connection):
    """sqlite3's connection with what the store's code asks of either backend."""

    dialect = "sqlite"
    read_only = False

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[None]:
        """One transaction, committed at the end or rolled back on an error. SQLite takes
        its write lock at BEGIN IMMEDIATE, so `exclusive` (one writer in the whole store)
        is what every SQLite write transaction already is."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.in_transaction:
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")


def open_sqlite(path: Path, read_only: bool) -> SqliteConnection:
    """The file opened and migrated; read-only opens never create or migrate it."""
    conn: SqliteConnection | None = None
    try:
        if read_only:
            if not path.is_file():
                raise StoreError(f"{path} does not exist")
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                factory=SqliteConnection,
            )
            conn.read_only = True
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, factory=SqliteConnection
            )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        if not read_only:
            _use_wal(conn)
            # NORMAL in WAL: no fsync per commit, durable at checkpoints; a crash of the
            # benchmark process (not the OS) loses nothing committed.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except (OSError, sqlite3.Error, StoreError) as exc:
        if conn is not None:
            conn.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if path.is_dir():
            reason = "it is a folder"
        raise StoreError(f"cannot open the store {path}: {reason}") from exc
    return conn


def _use_wal(conn: SqliteConnection) -> None:
    """Put the file in WAL mode (once: the mode stays with the file). Changing the mode
    needs the file to itself and may answer "database is locked" without waiting out
    busy_timeout while another connection has it open, as when several servescopes open
    a new file together (seen: 3 in 60 tries of six openers). So wait here instead."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _migrate(conn: SqliteConnection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    check_version(version, conn.read_only)
    if version == SCHEMA_VERSION:
        return
    with conn.transaction():
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            for statement in statements(number, "sqlite"):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")


def check_version(version: int, read_only: bool) -> None:
    """StoreError for a schema this servescope cannot use as it is: newer than it knows,
    or older when it may not migrate (a viewer never changes the schema)."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema {version} is newer than this servescope ({SCHEMA_VERSION}):"
            " update servescope"
        )
    if version < SCHEMA_VERSION and read_only:
        raise StoreError(
            f"database schema {version} is older than this servescope ({SCHEMA_VERSION}) and"
            " a viewer never migrates it: open it once with servescope as an operator"
        )
