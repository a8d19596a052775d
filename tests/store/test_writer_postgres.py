"""The StoreWriter on PostgreSQL when the server drops its connection: nothing measured is
lost and nothing is written twice, whether the connection goes between two batches or in
the middle of one (a batch is one transaction: the server kept none of it, and the writer
writes it again, whole, on a new connection)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from lib import store
from lib.store.writer import StoreWriter
from tests.postgres_server import PostgresServer
from tests.store.schemas import raw_sql
from tests.store.test_store import _request

# The writer's session (its connection says application_name=servescope), ended by the
# server as an administrator would, waiting up to 10 s until it is gone; the statement's
# own session and other databases' are left alone.
TERMINATE_WRITER = (
    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
    " WHERE application_name = 'servescope' AND pid <> pg_backend_pid()"
    " AND datname = current_database()"
)


def _terminate(postgres: PostgresServer, database: str, pid: int | None = None) -> int:
    """End the servescope sessions of ``database`` (one ``pid`` only, when given) and wait
    until they are gone; how many there were."""
    import psycopg

    sql = TERMINATE_WRITER + (f" AND pid = {int(pid)}" if pid is not None else "")
    with psycopg.connect(postgres.url(database), autocommit=True) as conn:
        ended = [row[0] for row in conn.execute(sql)]
    assert all(ended)
    return len(ended)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds (the writer commits on its own thread)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        time.sleep(0.05)


def _stored(url: str, run_id: str) -> list[int]:
    """The run's request indexes, oldest first, read on a session of no servescope (so
    that the only servescope session left to end is the writer's)."""
    rows = raw_sql(url, "SELECT idx FROM requests WHERE run_id = %s ORDER BY id", (run_id,))
    return [row[0] for row in rows]


def test_a_dropped_connection_loses_nothing_and_writes_nothing_twice(
    postgres: PostgresServer, postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres_db.rsplit("/", 1)[1]
    with store.opened(postgres_db) as conn:
        store.create_run(conn, "r", {})
    opens: list[str] = []  # the writer's connections (it opens them as store.connect)
    connect = store.connect
    monkeypatch.setattr(store, "connect", lambda db=None: opens.append(db) or connect(db))
    writer = StoreWriter(postgres_db)

    # Between batches, twice: the connection ends while the writer waits for records.
    for first in (0, 100):
        for idx in range(first, first + 100):
            writer.add_request(_request("r", idx))
        _wait_for(lambda n=first + 100: len(_stored(postgres_db, "r")) == n, "a batch stored")
        assert _terminate(postgres, database) == 1  # the writer's, no other

    # In the middle of a batch: the second of three records ends the connection, the
    # third then fails, and the batch goes again on a new connection.
    held, go = threading.Event(), threading.Event()

    def hold(conn: Any) -> None:  # keeps the writer busy while the next batch queues
        held.set()
        assert go.wait(30)

    cut: list[int] = []

    def cut_once(conn: Any) -> None:
        if not cut:
            cut.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            _terminate(postgres, database, pid=cut[0])

    writer.submit(hold)
    assert held.wait(30)
    writer.add_request(_request("r", 200))
    writer.submit(cut_once)
    writer.add_request(_request("r", 201))
    go.set()
    writer.add_request(_request("r", 202))
    writer.close()  # raises if any write failed

    assert len(cut) == 1
    assert len(opens) == 4  # its first connection, and one after each cut
    assert _stored(postgres_db, "r") == list(range(203))  # each once, in order
