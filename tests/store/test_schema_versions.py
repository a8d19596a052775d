"""The schema on both backends: an older store migrates keeping its data, a newer one is
refused in one line, servescopes opening a new database at once migrate it once, and
what PostgreSQL would otherwise store differently (float precision, NUL in text)."""

from __future__ import annotations

import threading

import pytest

from lib import store
from lib.core.records import Sample
from lib.store.target import passwords_of
from lib.store.writer import StoreWriter
from tests.store.schemas import (
    build_schema,
    columns,
    is_postgres,
    raw_sql,
    schema_version,
    set_version,
)
from tests.store.test_store import _request

# An old run and one of its requests as every schema since the first can hold them.
_OLD_RUN = (
    "INSERT INTO runs (run_id, created_at, label, config_json) VALUES ('old', 1.5, 'x', '{}')"
)
_OLD_REQUEST = (
    "INSERT INTO requests (run_id, lane_idx, concurrency, idx, prompt_idx, t_send, t_done,"
    " ttft_ms, output_text) VALUES ('old', 0, 1, 0, 0, 1.25, 2.5, 150.0, 'kept')"
)


@pytest.mark.parametrize("version", [1, 5])
def test_an_older_schema_migrates_and_keeps_its_data(any_db, version):
    build_schema(any_db, version)
    raw_sql(any_db, _OLD_RUN)
    raw_sql(any_db, _OLD_REQUEST)
    assert "started_by" not in columns(any_db, "runs")
    with store.opened(any_db) as conn:
        run = store.get_run(conn, "old")
        assert (run["created_at"], run["label"], run["config"]) == (1.5, "x", {})
        # Columns of later migrations read NULL in rows stored before them.
        assert run["cancel_requested"] is None
        assert run["started_by"] is None and run["host"] is None
        (old,) = store.get_requests(conn, "old")
        assert (old["t_send"], old["t_done"], old["ttft_ms"]) == (1.25, 2.5, 150.0)
        assert old["output_text"] == "kept"
        assert old["ttfat_ms"] is None and old["t_scheduled"] is None
        # The new columns take values.
        store.add_requests(conn, [_request("old", 1, t_scheduled=1000.5, ttfat_ms=400.0)])
        new = store.get_requests(conn, "old")[-1]
        assert (new["t_scheduled"], new["ttfat_ms"]) == (1000.5, 400.0)
    assert schema_version(any_db) == store.SCHEMA_VERSION
    assert {"started_by", "host", "cancel_requested"} <= columns(any_db, "runs")
    with store.opened(any_db) as conn:  # opened again: nothing to migrate
        assert len(store.get_requests(conn, "old")) == 2


def test_a_newer_schema_is_refused_in_one_line(any_db):
    build_schema(any_db, store.SCHEMA_VERSION)
    set_version(any_db, store.SCHEMA_VERSION + 1)
    for read_only in (False, True):
        with pytest.raises(store.StoreError) as refused:
            store.connect(any_db, read_only=read_only)
        message = str(refused.value)
        assert "newer than this servescope" in message and "\n" not in message
        assert store.describe(any_db) in message
        assert not [secret for secret in passwords_of(any_db) if secret in message]
    assert schema_version(any_db) == store.SCHEMA_VERSION + 1  # left as it was


def test_servescopes_opening_a_new_database_at_once_migrate_it_once(any_db):
    openers = 6
    start = threading.Barrier(openers)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            with store.opened(any_db) as conn:
                store.create_run(conn, f"r{threading.get_ident()}", {})
        except BaseException as exc:  # reported below: a thread's raise is lost
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_version(any_db) == store.SCHEMA_VERSION
    if is_postgres(any_db):
        assert raw_sql(any_db, "SELECT COUNT(*) FROM servescope_schema") == [(1,)]
    with store.opened(any_db) as conn:
        assert len(store.list_runs(conn)) == openers


def test_times_keep_sub_millisecond_precision(any_db):
    # A Unix time in a 4-byte float (PostgreSQL's REAL) keeps about 7 digits: whole
    # minutes. Every float column must be DOUBLE PRECISION there.
    t = 1_764_770_000.123456
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.update_run(conn, "r", started_at=t, finished_at=t + 0.000_25)
        store.set_level(conn, "r", 0, 1, "running", started_at=t + 0.000_5)
        store.add_requests(conn, [_request("r", 0, t_send=t, t_done=t + 0.0001, t_scheduled=t)])
        store.add_samples(conn, "r", 0, [Sample(t=t, source="s", name="n", value=t)])
        run = store.get_run(conn, "r")
        assert (run["started_at"], run["finished_at"]) == (t, t + 0.000_25)
        assert abs(run["created_at"] - t) < 10 * 365 * 86400  # a real time, not a rounded one
        assert store.get_levels(conn, "r")[0]["started_at"] == t + 0.000_5
        (req,) = store.get_requests(conn, "r")
        assert (req["t_send"], req["t_done"], req["t_scheduled"]) == (t, t + 0.0001, t)
        (sample,) = store.get_samples(conn, "r")
        assert (sample["t"], sample["value"]) == (t, t)
    if is_postgres(any_db):
        types = raw_sql(
            any_db,
            "SELECT DISTINCT data_type FROM information_schema.columns"
            " WHERE table_schema = 'public'",
        )
        assert "real" not in {row[0] for row in types}


def test_a_nul_in_an_answer_does_not_lose_the_request(any_db):
    # PostgreSQL refuses NUL in text; SQLite keeps it. Either way the request is kept.
    text = "before\x00after"
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.add_requests(conn, [_request("r", 0, output_text=text, error="bad\x00byte")])
    writer = StoreWriter(any_db)
    writer.add_request(_request("r", 1, output_text=text, server={"raw": text}))
    writer.close()
    with store.opened(any_db) as conn:
        direct, written = store.get_requests(conn, "r")
    expected = "before\ufffdafter" if is_postgres(any_db) else text
    assert direct["output_text"] == written["output_text"] == expected
    assert direct["error"] in ("bad\ufffdbyte", "bad\x00byte")
    assert written["server"] == {"raw": text}  # JSON writes a NUL as \u0000


def test_a_lone_surrogate_in_an_answer_does_not_lose_the_request(any_db):
    # Half of an escaped pair from a server's JSON ("\\ud83d"); two halves from two
    # chunks join up again.
    lone, halves = "a\ud83db", "\ud83d" + "\ude00"
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.add_requests(conn, [_request("r", 0, output_text=lone, error=lone)])
    writer = StoreWriter(any_db)
    writer.add_request(_request("r", 1, output_text=halves, quality={"flags": [lone]}))
    writer.add_request(_request("r", 2))  # the writer goes on
    writer.close()
    with store.opened(any_db) as conn:
        direct, written, after = store.get_requests(conn, "r")
    assert direct["output_text"] == direct["error"] == "a\ufffdb"
    assert written["output_text"] == "\U0001f600"
    assert written["quality"] == {"flags": ["a\ufffdb"]}
    assert after["idx"] == 2
