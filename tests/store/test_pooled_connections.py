"""A dashboard keeps its PostgreSQL connections (store.keep_connections): store calls
borrow from a pool instead of paying ~8 ms to connect each, with the same behaviour:
read-only stays read-only, a connection the server dropped is never handed out, and a
server that went away is one line, soon."""

from __future__ import annotations

import psycopg
import pytest

from lib import store
from lib.store import postgres_pool


def _backend_pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture
def kept() -> None:
    store.keep_connections()  # the autouse fixture in tests/conftest.py turns it off


def test_store_calls_reuse_one_connection(postgres_db: str, kept: None) -> None:
    with store.opened(postgres_db) as conn:  # the first: opened directly, schema checked
        store.create_run(conn, "r1", {})
    pids = set()
    for _ in range(5):
        with store.opened(postgres_db) as conn:
            pids.add(_backend_pid(conn))
            assert store.get_run(conn, "r1")["run_id"] == "r1"
    assert len(pids) == 1


def test_a_pooled_viewer_connection_stays_read_only(postgres_db: str, kept: None) -> None:
    with store.opened(postgres_db):
        pass  # an operator created the schema
    for _ in range(2):  # the direct first open, then a pooled one
        with (
            store.opened(postgres_db, read_only=True) as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            store.create_run(conn, "nope", {})
    with store.opened(postgres_db) as conn:  # the operator's pool writes
        store.create_run(conn, "yes", {})
        assert [r["run_id"] for r in store.list_runs(conn)] == ["yes"]


def test_a_transaction_left_open_is_rolled_back_on_return(postgres_db: str, kept: None) -> None:
    with store.opened(postgres_db):
        pass
    conn = store.connect(postgres_db)
    conn.execute("BEGIN")
    store.create_run(conn, "half", {})
    conn.close()  # back to the pool mid-transaction
    with store.opened(postgres_db) as conn:
        assert store.get_run(conn, "half") is None


def test_a_connection_the_server_dropped_is_not_handed_out(
    postgres, postgres_db: str, kept: None
) -> None:
    with store.opened(postgres_db):
        pass
    with store.opened(postgres_db) as conn:
        dropped = _backend_pid(conn)
    postgres.sql(f"SELECT pg_terminate_backend({dropped})")
    with store.opened(postgres_db) as conn:
        assert _backend_pid(conn) != dropped
        assert store.list_runs(conn) == []


def test_a_database_gone_after_the_pool_was_made_is_one_line(postgres_db: str, kept: None) -> None:
    """The pool holds a connection to a database that is then dropped: the next store call
    gives the driver's reason in one line without the password (the pool cannot connect,
    so the call opens directly to say why)."""
    name = postgres_db.rsplit("/", 1)[1]
    for _ in range(2):
        with store.opened(postgres_db):
            pass  # the first opens directly and makes the pool; the second is pooled
    assert postgres_pool._pools, "premise: the pool exists"
    admin = postgres_db.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as raw:
        raw.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # ends the pooled session too
    with pytest.raises(store.StoreError) as gone:
        store.connect(postgres_db)
    message = str(gone.value)
    assert f'database "{name}" does not exist' in message and "\n" not in message
    assert postgres_db.split("@")[0].rsplit(":", 1)[1] not in message  # no password
