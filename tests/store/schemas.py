"""Stores as an older or newer servescope left them, built without the store's own code,
on either backend: what the migration and version tests open."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from lib import store
from lib.store.schema import statements


def is_postgres(db: str) -> bool:
    """Whether ``db`` (an ``any_db`` value) is a PostgreSQL URL."""
    return store.target(db).dialect == "postgresql"


def raw_sql(db: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement straight through the driver (no migration, no store code), with
    psycopg's %s placeholders on PostgreSQL and SQLite's ? otherwise; its rows, if any."""
    if is_postgres(db):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(db)
    try:
        cursor = conn.execute(statement, params)
        rows = cursor.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def build_schema(db: str, version: int) -> None:
    """The first ``version`` migrations applied and recorded as the store keeps its number
    (SQLite's user_version; PostgreSQL's servescope_schema table)."""
    dialect = "postgresql" if is_postgres(db) else "sqlite"
    for number in range(version):
        for statement in statements(number, dialect):
            raw_sql(db, statement)
    set_version(db, version)


def set_version(db: str, version: int) -> None:
    """Record ``version`` as the schema's number, whatever the tables are."""
    if is_postgres(db):
        raw_sql(db, "CREATE TABLE IF NOT EXISTS servescope_schema (version INTEGER NOT NULL)")
        raw_sql(db, "DELETE FROM servescope_schema")
        raw_sql(db, "INSERT INTO servescope_schema (version) VALUES (%s)", (version,))
    else:
        raw_sql(db, f"PRAGMA user_version = {int(version)}")


def schema_version(db: str) -> int:
    """The schema number recorded in the store, read without opening it with the store."""
    if is_postgres(db):
        return int(raw_sql(db, "SELECT MAX(version) FROM servescope_schema")[0][0])
    return int(raw_sql(db, "PRAGMA user_version")[0][0])


def columns(db: str, table: str) -> set[str]:
    """The names of a table's columns."""
    if is_postgres(db):
        rows = raw_sql(
            db, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
    else:
        rows = [(r[1],) for r in raw_sql(db, f"PRAGMA table_info({table})")]
    return {r[0] for r in rows}
