"""A PostgreSQL database as the store (psycopg 3): opening and migrating it, and a
connection that takes the store's SQL as it is written for SQLite.

The store's queries use `?` placeholders and mean the same on both backends; this
connection turns them into psycopg's `%s`, gives rows that read like sqlite3.Row
(by index, by name, dict(row)) and keeps psycopg's autocommit so a statement outside
`transaction()` commits at once, as it does on SQLite. A table servescope_schema
holds the number of migrations applied; an advisory lock makes two servescopes that
open a new database at once migrate it once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lib.store.schema import SCHEMA_VERSION, statements
from lib.store.sqlite_backend import check_version
from lib.store.target import StoreError, scrub, without_password

# pg_advisory_xact_lock key for migrations and other whole-store write transactions
# ("servescope" in ASCII, cut to a bigint).
_LOCK_KEY = 0x73657276657363
CONNECT_TIMEOUT_S = int(os.environ.get("SERVESCOPE_DB_CONNECT_TIMEOUT_S", "10"))


class Row(tuple):
    """A result row as sqlite3.Row reads: row[0], row["name"], dict(row), tuple(row)."""

    __slots__ = ()
    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description or ()]
    # One Row subclass per result shape, holding its column index (rows stay tuples).
    shaped = type("Row", (Row,), {"_index": {name: i for i, name in enumerate(names)}})
    return lambda values: tuple.__new__(shaped, values)


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """SQLite's `?` as psycopg's `%s` (a literal % doubled). The store's SQL has no `?`
    inside a string literal."""
    return sql.replace("%", "%%").replace("?", "%s")


def _value(value: Any) -> Any:
    # A bool into an INTEGER column is an error in PostgreSQL (SQLite stores 0/1), and a
    # NUL in text is refused: a model's answer holding one must not lose the request.
    if value is True or value is False:
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _values(params: Sequence[Any]) -> list[Any]:
    return [_value(v) for v in params]


class PostgresConnection:
    """A psycopg connection with what the store's code asks of either backend."""

    dialect = "postgresql"

    def __init__(
        self, raw: Any, read_only: bool, release: Callable[[Any], None] | None = None
    ) -> None:
        self._raw = raw
        self.read_only = read_only
        self._release = release  # a pooled connection goes back to its pool on close

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:
            return self._raw.execute(sql)
        return self._raw.execute(_placeholders(sql), _values(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cursor = self._raw.cursor()
        cursor.executemany(_placeholders(sql), [_values(r) for r in rows])
        return cursor

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[None]:
        """One transaction, committed at the end or rolled back on an error. `exclusive`
        makes it the only such transaction in the whole store while it lasts (as SQLite's
        BEGIN IMMEDIATE is): for check-then-write steps such as saving an endpoint."""
        with self._raw.transaction():
            if exclusive:
                self._raw.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            yield

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self._raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release(self._raw)  # the pool rolls back anything left open, drops it if broken
        else:
            self._raw.close()


def connect_kwargs(read_only: bool) -> dict[str, Any]:
    """psycopg.connect's settings for a store connection (a pool's too)."""
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "servescope",
        "options": "-c default_transaction_read_only=on" if read_only else "",
        "row_factory": _row_factory,
    }


def open_postgres(url: str, read_only: bool) -> PostgresConnection:
    """The database opened and migrated; read-only sessions never migrate it and the
    server refuses their writes (default_transaction_read_only)."""
    import psycopg

    raw = None
    try:
        raw = psycopg.connect(url, **connect_kwargs(read_only))
        conn = PostgresConnection(raw, read_only)
        _migrate(conn)
    except (psycopg.Error, StoreError) as exc:
        if raw is not None:
            raw.close()
        reason = scrub(str(exc) or type(exc).__name__, url)
        raise StoreError(f"cannot open the store {without_password(url)}: {reason}") from None
    return conn


def _version(conn: PostgresConnection) -> int:
    exists = conn.execute("SELECT to_regclass('servescope_schema')").fetchone()[0]
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM servescope_schema").fetchone()
    return int(row[0] or 0)


def _migrate(conn: PostgresConnection) -> None:
    version = _version(conn)
    check_version(version, conn.read_only)
    if version == SCHEMA_VERSION:
        return
    # Answers come in any language (the seed log's Korean, a drifting model's Chinese):
    # a LATIN1 or SQL_ASCII database would refuse them in the middle of a run.
    encoding = conn.execute("SHOW server_encoding").fetchone()[0]
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise StoreError(
            f"the database is encoded {encoding}; servescope stores answers in any language:"
            " create it with ENCODING 'UTF8'"
        )
    with conn.transaction(exclusive=True):
        conn.execute("CREATE TABLE IF NOT EXISTS servescope_schema (version INTEGER NOT NULL)")
        # Re-read under the lock: another servescope may have migrated meanwhile.
        version = _version(conn)
        for number in range(version, SCHEMA_VERSION):
            for statement in statements(number, "postgresql"):
                conn.execute(statement)
        conn.execute("DELETE FROM servescope_schema")
        conn.execute("INSERT INTO servescope_schema (version) VALUES (?)", (SCHEMA_VERSION,))


def is_lost_connection(exc: BaseException) -> bool:
    """Whether a write failed because the server went away (worth a new connection and
    the same batch again), not because of what was written."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a requirement
        return False
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )
