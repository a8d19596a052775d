"""Store round-trips, migrations and concurrent writers."""

import sqlite3
import threading

import pytest

from lib import store
from lib.core.records import Sample
from lib.store.writer import StoreWriter


def _request(run_id, idx, **kw):
    row = {
        "run_id": run_id,
        "lane_idx": 0,
        "concurrency": 4,
        "idx": idx,
        "warmup": False,
        "prompt_idx": 0,
        "t_send": 1000.0 + idx,
        "t_done": 1001.5 + idx,
        "ttft_ms": 150.0,
        "ttfat_ms": 150.0,
        "reasoning_ms": None,
        "e2el_ms": 1500.0,
        "tpot_ms": 10.0,
        "tokens_per_s": 80.0,
        "itl_ms": [10.0, 11.5],
        "prompt_tokens": 12,
        "output_tokens": 120,
        "token_source": "server",
        "output_text": "안녕하세요 <script>alert(1)</script>",
        "finish_reason": "stop",
        "error": None,
        "server": {"eval_ms": 1200.0},
        "quality": {"flags": []},
    }
    row.update(kw)
    return row


def test_schema_version_and_wal(tmp_path):
    db = tmp_path / "s.db"
    with store.opened(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with store.opened(db) as conn:  # reopening does not migrate again
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_migration_from_version_1_keeps_data(tmp_path):
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.executescript(store.MIGRATIONS[0])
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO runs (run_id, created_at, config_json) VALUES ('old', 1.0, '{}')")
    raw.commit()
    raw.close()
    with store.opened(db) as conn:
        run = store.get_run(conn, "old")
        assert run["cancel_requested"] is None and run["config"] == {}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_migration_5_adds_answer_timings_old_rows_read_none(tmp_path):
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    for script in store.MIGRATIONS[:4]:
        raw.executescript(script)
    raw.execute("PRAGMA user_version = 4")
    raw.execute("INSERT INTO runs (run_id, created_at, config_json) VALUES ('old', 1.0, '{}')")
    raw.execute(
        "INSERT INTO requests (run_id, lane_idx, concurrency, idx, prompt_idx, t_send, t_done,"
        " ttft_ms) VALUES ('old', 0, 1, 0, 0, 1.0, 2.0, 150.0)"
    )
    raw.commit()
    raw.close()
    with store.opened(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION >= 5
        (old,) = store.get_requests(conn, "old")
        assert old["ttft_ms"] == 150.0
        assert old["ttfat_ms"] is None and old["reasoning_ms"] is None
        store.add_requests(conn, [_request("old", 1, ttfat_ms=400.0, reasoning_ms=250.0)])
        new = store.get_requests(conn, "old")[-1]
        assert (new["ttft_ms"], new["ttfat_ms"], new["reasoning_ms"]) == (150.0, 400.0, 250.0)


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "s.db"
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer"):
        store.connect(db)


def test_db_path_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVESCOPE_DB", raising=False)
    assert store.db_path() == store.DEFAULT_DB
    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "x.db"))
    assert store.db_path() == tmp_path / "x.db"
    assert store.db_path(tmp_path / "y.db") == tmp_path / "y.db"


def test_run_lane_level_request_sample_round_trip(tmp_path):
    db = tmp_path / "s.db"
    with store.opened(db) as conn:
        store.create_run(conn, "r1", {"concurrency": [4]}, label="first", env={"gpu": None})
        store.add_lane(conn, "r1", 0, "vllm:m", "openai", "http://x/v1", "m", {"kind": "vllm"}, {})
        store.set_level(conn, "r1", 0, 4, "running", started_at=5.0)
        store.set_level(conn, "r1", 0, 4, "completed", finished_at=9.0)
        store.add_requests(conn, [_request("r1", 0), _request("r1", 1, error="reset", warmup=True)])
        store.add_samples(conn, "r1", 0, [Sample(t=1.0, source="vllm", name="kv", value=0.5)])
        store.update_run(conn, "r1", status="completed", finished_at=10.0)

        run = store.get_run(conn, "r1")
        assert run["label"] == "first" and run["status"] == "completed"
        assert run["config"] == {"concurrency": [4]} and run["env"] == {"gpu": None}
        assert store.get_lanes(conn, "r1")[0]["engine_info"] == {"kind": "vllm"}
        level = store.get_levels(conn, "r1")[0]
        assert (level["status"], level["started_at"], level["finished_at"]) == (
            "completed",
            5.0,
            9.0,
        )
        measured = store.get_requests(conn, "r1")
        assert len(measured) == 1
        rec = measured[0]
        expected = _request("r1", 0)
        keys = ("itl_ms", "server", "quality", "output_text", "ttft_ms", "ttfat_ms", "reasoning_ms")
        for key in (*keys, "output_tokens"):
            assert rec[key] == expected[key]
        assert len(store.get_requests(conn, "r1", include_warmup=True)) == 2
        assert store.count_requests(conn, "r1") == {(0, 4): {"completed": 1, "failed": 0}}
        assert store.get_samples(conn, "r1")[0]["value"] == 0.5
        assert store.delete_run(conn, "r1")
        assert store.get_requests(conn, "r1", include_warmup=True) == []  # cascade


def test_update_run_rejects_unknown_fields(tmp_path):
    with store.opened(tmp_path / "s.db") as conn:
        store.create_run(conn, "r", {})
        with pytest.raises(ValueError):
            store.update_run(conn, "r", statuss="x")


def test_endpoints_keep_only_the_key_variable_name(tmp_path):
    with store.opened(tmp_path / "s.db") as conn:
        store.save_endpoint(conn, "gpu box", "http://10.0.0.2:8000/v1", "vllm", "VLLM_KEY")
        store.save_endpoint(conn, "gpu box", "http://10.0.0.3:8000/v1", "vllm", None)
        (ep,) = store.list_endpoints(conn)
        assert ep["url"] == "http://10.0.0.3:8000/v1" and ep["api_key_env"] is None
        assert store.delete_endpoint(conn, "gpu box")


def test_two_writers_at_once_lose_nothing(tmp_path):
    db = tmp_path / "s.db"
    with store.opened(db) as conn:
        store.create_run(conn, "a", {})
        store.create_run(conn, "b", {})
    writers = [StoreWriter(db), StoreWriter(db)]

    def write(writer, run_id):
        for i in range(300):
            writer.add_request(_request(run_id, i))

    threads = [
        threading.Thread(target=write, args=(w, r)) for w, r in zip(writers, "ab", strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    with store.opened(db) as conn:
        assert len(store.get_requests(conn, "a")) == 300
        assert len(store.get_requests(conn, "b")) == 300
