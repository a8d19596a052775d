"""A viewer's store, on both backends: its connections read but cannot write (the
database refuses, not servescope's own checks), never migrate a schema, and never create
a store that is not there."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from lib import cli, store
from lib.store.target import passwords_of
from lib.store.writer import StoreWriter
from tests.store.schemas import build_schema, columns, is_postgres, raw_sql, schema_version
from tests.store.test_store import _request


def _one_line_without_password(message: str, db: str) -> None:
    assert "\n" not in message and store.describe(db) in message
    assert not [secret for secret in passwords_of(db) if secret in message]


def _viewer_ways(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[str], Any]]:
    """Each way a process opens the store read-only, as a function of the store."""

    def role(db: str) -> Any:
        with monkeypatch.context() as env:
            env.setenv("SERVESCOPE_ROLE", "viewer")
            assert store.reading_only()
            return store.connect(db)

    def block(db: str) -> Any:
        with store.read_only():
            assert store.reading_only()
            return store.connect(db)

    return {
        "read_only()": block,
        "connect(read_only=True)": lambda db: store.connect(db, read_only=True),
        "SERVESCOPE_ROLE=viewer": role,
    }


def test_a_viewer_reads_and_the_database_refuses_its_writes(any_db, monkeypatch):
    monkeypatch.delenv("SERVESCOPE_ROLE", raising=False)
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {"lanes": []}, label="kept")
        store.add_requests(conn, [_request("r", 0)])
    writes: list[Callable[[Any], Any]] = [
        lambda c: store.create_run(c, "new", {}),
        lambda c: store.update_run(c, "r", label="changed"),
        lambda c: store.add_requests(c, [_request("r", 1)]),
        lambda c: store.delete_run(c, "r"),
        lambda c: store.save_endpoint(c, "e", "http://x", None, None),
    ]
    for way, open_viewer in _viewer_ways(monkeypatch).items():
        conn = open_viewer(any_db)
        try:
            assert conn.read_only, way
            assert store.get_run(conn, "r")["label"] == "kept"
            assert len(store.get_requests(conn, "r")) == 1
            for write in writes:
                # In a transaction too: the database, not the transaction, refuses.
                for wrap in (nullcontext, conn.transaction):
                    context: AbstractContextManager[Any] = wrap()
                    with pytest.raises(store.database_errors(), match=r"read-?only"), context:
                        write(conn)
        finally:
            conn.close()
    assert not store.reading_only()  # the block and the env are gone
    with store.opened(any_db) as conn:
        assert [r["label"] for r in store.list_runs(conn)] == ["kept"]
        assert len(store.get_requests(conn, "r")) == 1
        assert store.list_endpoints(conn) == []


def test_a_viewer_never_migrates_an_older_schema(any_db, monkeypatch):
    build_schema(any_db, 5)
    raw_sql(any_db, "INSERT INTO runs (run_id, created_at, config_json) VALUES ('old', 1.0, '{}')")
    before = columns(any_db, "runs"), columns(any_db, "requests")
    for way, open_viewer in _viewer_ways(monkeypatch).items():
        with pytest.raises(store.StoreError) as refused:
            open_viewer(any_db)
        message = str(refused.value)
        assert "schema 5 is older" in message and "a viewer never migrates" in message, way
        _one_line_without_password(message, any_db)
    assert schema_version(any_db) == 5
    assert (columns(any_db, "runs"), columns(any_db, "requests")) == before
    with store.opened(any_db) as conn:  # an operator's open migrates it
        assert store.get_run(conn, "old")["started_by"] is None
    assert schema_version(any_db) == store.SCHEMA_VERSION


def test_a_viewer_never_builds_the_schema_of_an_empty_store(any_db):
    if not is_postgres(any_db):
        Path(any_db).touch()  # an empty file: SQLite's store before its first open
    with pytest.raises(store.StoreError) as refused:
        store.connect(any_db, read_only=True)
    assert "schema 0 is older" in str(refused.value)
    _one_line_without_password(str(refused.value), any_db)
    if is_postgres(any_db):
        tables = raw_sql(any_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert tables == []
    else:
        assert Path(any_db).stat().st_size == 0
        assert sorted(p.name for p in Path(any_db).parent.iterdir()) == [Path(any_db).name]


def test_a_viewer_opening_a_missing_sqlite_file_creates_nothing(tmp_path, monkeypatch):
    missing = tmp_path / "team" / "servescope.db"
    with pytest.raises(store.StoreError) as refused:
        store.connect(missing, read_only=True)
    assert str(refused.value) == f"cannot open the store {missing}: {missing} does not exist"
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    monkeypatch.setenv("SERVESCOPE_DB", str(missing))
    with pytest.raises(store.StoreError, match="does not exist"), store.opened():
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_viewer_cannot_start_a_writer(any_db):
    with store.opened(any_db):
        pass
    with store.read_only(), pytest.raises(store.StoreError) as refused:
        StoreWriter(any_db)
    assert "a viewer's is read-only" in str(refused.value)
    _one_line_without_password(str(refused.value), any_db)


def test_a_viewers_cli_run_sends_nothing_and_writes_nothing(any_db, scripted, monkeypatch, capsys):
    vllm = scripted.openai(ttft_ms=5, gap_ms=2, models=["m"])
    with store.opened(any_db):
        pass  # a store ready to use: the refusal is not about its schema
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    monkeypatch.setenv("SERVESCOPE_DB", any_db)
    argv = ["run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "m"]
    code = cli.main([*argv, "--prompt", "hi", "--requests", "2", "--max-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 2 and "started" not in out + err
    (line,) = err.splitlines()
    assert "a viewer's is read-only" in line
    _one_line_without_password(line, any_db)
    assert vllm.recorded("/v1/chat/completions") == []  # not one request sent
    monkeypatch.delenv("SERVESCOPE_ROLE")
    with store.opened(any_db) as conn:
        assert store.list_runs(conn) == []
