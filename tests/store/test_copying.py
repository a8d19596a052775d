"""Copying runs between stores (lib/store/copying.py): a SQLite history into either
backend and a PostgreSQL one into SQLite, every column of every table as it was, votes
naming the destination's request ids, runs already there or still running left alone,
a run the destination refuses not half written, and the source never changed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from lib import store
from lib.analysis import results
from lib.store import copying
from tests.store.schemas import build_schema, columns, raw_sql, schema_version

FULL = "20261203-141531-c4fa99"  # a finished two-lane run with every column filled
RUNNING = "20261203-150000-aaaaaa"
OLD = "20261101-090000-bbbbbb"  # stored before runs recorded who and where
EARLIER = "20261001-080000-cccccc"


def seed_full(conn: Any, run_id: str = FULL, created_at: float = 1_764_770_131.5) -> None:
    """A finished run whose every column, in every table, holds a value somewhere:
    two lanes (one started from a recipe), warm-ups, a closed-loop and an open-loop
    level, warm-up, measured and failed requests, client and server samples, votes."""
    config = {
        "lanes": [{"engine": "openai", "base_url": "http://h:8000/v1", "model": "m"}],
        "prompts": [{"text": "안녕하세요", "name": "ko"}],
        "concurrency": [1, 4],
    }
    store.create_run(
        conn,
        run_id,
        config,
        label="vLLM bf16",
        env={"hardware": {"cpus": 16}},
        status="completed with failures",
        started_by="alice",
        host="gpu-1",
    )
    store.update_run(
        conn,
        run_id,
        pid=4242,
        started_at=created_at + 1.25,
        finished_at=created_at + 90.125,
        error="vllm c=4: 1 of 4 failed",
        cancel_requested=created_at + 80.0,
    )
    conn.execute("UPDATE runs SET created_at = ? WHERE run_id = ?", (created_at, run_id))
    for lane in (0, 1):
        store.add_lane(
            conn,
            run_id,
            lane,
            f"lane{lane}",
            "openai",
            f"http://127.0.0.1:800{lane}/v1",
            "m",
            {"kind": "vllm", "version": "0.11.0"},
            {"max_model_len": 4096},
        )
    store.set_lane_process(conn, run_id, 1, {"state": "stopped", "peak_rss_bytes": 123})
    t0 = created_at + 2.0
    for lane in (0, 1):
        store.set_level(conn, run_id, lane, 0, "completed", t0, t0 + 1)
        store.set_level(conn, run_id, lane, 1, "completed", t0 + 1, t0 + 10)
        store.set_level(
            conn,
            run_id,
            lane,
            2,
            "completed with failures",
            t0 + 10,
            t0 + 20,
            error="1 of 4 failed: timeout",
            load={"mode": "rate", "rate": 2.0, "burstiness": 1.0},
        )
    rows = []
    for lane in (0, 1):
        for level, count in ((0, 1), (1, 3), (2, 4)):
            for idx in range(count):
                t = t0 + level * 10 + idx * 0.5
                failed = level == 2 and idx == 3
                rows.append(
                    {
                        "run_id": run_id,
                        "lane_idx": lane,
                        "concurrency": level,
                        "idx": idx,
                        "warmup": level == 0,
                        "prompt_idx": 0,
                        "t_send": t,
                        "t_done": t + 0.4321,
                        "t_scheduled": t - 0.001,
                        "ttft_ms": 40.5 + idx,
                        "ttfat_ms": 60.25,
                        "reasoning_ms": 19.75,
                        "e2el_ms": 432.1,
                        "tpot_ms": 5.5,
                        "tokens_per_s": 181.8,
                        "itl_ms": [5.0, 6.25, 5.5],
                        "prompt_tokens": 12,
                        "output_tokens": 64,
                        "token_source": "usage",
                        "output_text": f"답변 {lane}-{level}-{idx} \U0001f600",
                        "finish_reason": "length",
                        "error": "timeout after 120 s" if failed else None,
                        "server": {"queue_ms": 1.5},
                        "quality": {"flags": [{"code": "truncated", "reason": "cut at 64"}]},
                    }
                )
    store.add_requests(conn, rows)
    store.add_samples(
        conn, run_id, None, [{"t": t0 + k, "source": "client", "name": "lag_ms", "value": 0.5 * k,
                              "labels": {"level": "1"}} for k in range(3)]
    )  # fmt: skip
    store.add_samples(
        conn, run_id, 1, [{"t": t0 + k, "source": "vllm", "name": "kv_cache", "value": 0.1 * k,
                           "labels": {"gpu": "0"}} for k in range(3)]
    )  # fmt: skip
    ids = {
        (r["lane_idx"], r["concurrency"], r["idx"]): r["id"]
        for r in store.get_requests(conn, run_id)
    }
    for idx, vote in ((0, "A"), (1, "tie"), (2, "both_bad")):
        store.add_vote(
            conn,
            run_id,
            concurrency=1,
            req_idx=idx,
            prompt_idx=0,
            lane_a=0,
            lane_b=1,
            left_lane=1,
            vote=vote,
            request_a=ids[(0, 1, idx)],
            request_b=ids[(1, 1, idx)],
            voter="bob",
        )


def seed_small(conn: Any, run_id: str, status: str = "completed", created_at: float = 0.0) -> None:
    """A one-lane run with two measured requests; `status` as given."""
    store.create_run(conn, run_id, {"concurrency": [1]}, label="small", status=status)
    conn.execute(
        "UPDATE runs SET created_at = ? WHERE run_id = ?", (created_at or 1_760_000_000.0, run_id)
    )
    store.add_lane(conn, run_id, 0, "ollama:m", "ollama", "http://h:11434", "m", {}, {})
    store.set_level(conn, run_id, 0, 1, "running" if status == "running" else "completed")
    store.add_requests(
        conn,
        [
            {"run_id": run_id, "lane_idx": 0, "concurrency": 1, "idx": k, "prompt_idx": 0,
             "t_send": 1.0 + k, "t_done": 2.0 + k, "output_text": "ok"}
            for k in range(2)
        ],
    )  # fmt: skip


def seed_source(db: str) -> None:
    """A history: an earlier run, the full run, a run stored before who and where were,
    and one still running."""
    with store.opened(db) as conn:
        seed_small(conn, EARLIER, created_at=1_759_000_000.0)
        seed_full(conn)
        seed_small(conn, OLD, created_at=1_761_000_000.0)
        conn.execute("UPDATE runs SET started_by = NULL, host = NULL WHERE run_id = ?", (OLD,))
        seed_small(conn, RUNNING, status="running", created_at=1_765_000_000.0)


def table_rows(db: str, table: str, run_id: str) -> list[dict[str, Any]]:
    """A run's rows of `table` as stored, in id order (the key's for lanes and levels),
    without the ids the destination assigns."""
    order = {"runs": "run_id", "lanes": "lane_idx", "levels": "lane_idx, concurrency"}.get(
        table, "id"
    )
    with store.opened(db, read_only=True) as conn:
        rows = conn.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", (run_id,))
        out = [dict(row) for row in rows]
    return out


def request_keys(db: str, run_id: str) -> dict[int, tuple[Any, ...]]:
    """Request id -> (lane, level, index, warm-up): what a vote's id stands for."""
    return {
        r["id"]: (r["lane_idx"], r["concurrency"], r["idx"], r["warmup"])
        for r in table_rows(db, "requests", run_id)
    }


def assert_same_run(src: str, dst: str, run_id: str) -> None:
    """Every column of every table of the run is as in the source (ids aside, votes
    naming the same requests), and the results document reads the same."""
    for table in ("runs", "lanes", "levels", "requests", "samples"):
        before = [{k: v for k, v in r.items() if k != "id"} for r in table_rows(src, table, run_id)]
        after = [{k: v for k, v in r.items() if k != "id"} for r in table_rows(dst, table, run_id)]
        assert after == before, table
    src_keys, dst_keys = request_keys(src, run_id), request_keys(dst, run_id)
    votes_before = table_rows(src, "votes", run_id)
    votes_after = table_rows(dst, "votes", run_id)
    assert len(votes_after) == len(votes_before)
    for old, new in zip(votes_before, votes_after, strict=True):
        for key in ("request_a", "request_b"):
            assert dst_keys[new.pop(key)] == src_keys[old.pop(key)]  # the same request
        old.pop("id"), new.pop("id")
        assert new == old
    with store.read_only():
        assert document(dst, run_id) == document(src, run_id)


def document(db: str, run_id: str) -> dict[str, Any]:
    """The run's results document without the ids each store gives (its votes' flags
    are looked up through their request ids: the same flags, the same requests)."""
    out = results.run_document(db, run_id)
    ids = ("vote_id", "request_a_id", "request_b_id")
    votes = out.get("votes", [])
    out["votes"] = [{k: v for k, v in vote.items() if k not in ids} for vote in votes]
    assert all(vote["lane_a_flags"] == "truncated" for vote in out["votes"])
    return out


def file_state(path: str) -> tuple[str, float, int]:
    """A SQLite file's bytes (hashed), its mtime and the size of its write-ahead log. A
    read-only connection to a file in WAL mode leaves SQLite's -wal and -shm beside it
    (it may not remove them), as any dashboard reading it does; the log stays empty."""
    file = Path(path)
    wal = file.with_name(file.name + "-wal")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return digest, file.stat().st_mtime, wal.stat().st_size if wal.exists() else 0


def copy_all(src: str, dst: str, **who: str) -> dict[str, copying.CopiedRun]:
    with store.open_copy(src, dst) as copier:
        return {run_id: copier.copy(run_id, **who) for run_id in copier.run_ids()}


def test_the_copied_columns_are_every_column_of_the_schema(any_db):
    """A later migration's new column must be copied too: these lists are the tables'."""
    with store.opened(any_db):
        pass  # a fresh store at the current schema
    for table, copied in copying.COPIED_COLUMNS.items():
        assert set(copied) == columns(any_db, table) - {"id"}, table
        assert len(set(copied)) == len(copied)


def test_every_column_of_the_seeded_run_holds_a_value(tmp_path):
    """The round-trip tests below cover every column only if the seed fills each one."""
    db = str(tmp_path / "seed.db")
    with store.opened(db) as conn:
        seed_full(conn)
    for table in copying.COPIED_COLUMNS:
        rows = table_rows(db, table, FULL)
        assert rows, table
        empty = [col for col in rows[0] if all(r[col] is None for r in rows)]
        assert empty == [], table


def test_a_sqlite_history_copies_whole_runs_into_either_store(tmp_path, any_db):
    src = str(tmp_path / "alice" / "servescope.db")
    seed_source(src)
    # The destination has a run of its own, so the copied requests get other ids there.
    with store.opened(any_db) as conn:
        seed_full(conn, "theirs", created_at=1_700_000_000.0)
    before = file_state(src)

    done = copy_all(src, any_db)

    assert {run_id: r.outcome for run_id, r in done.items()} == {
        EARLIER: "copied",
        FULL: "copied",
        OLD: "copied",
        RUNNING: "still running",
    }
    full = done[FULL]
    assert (full.label, full.lanes, full.requests, full.samples, full.votes) == (
        "vLLM bf16",
        ["lane0", "lane1"],
        16,
        6,
        3,
    )
    assert file_state(src) == before  # its bytes, mtime, nothing in its log
    for run_id in (EARLIER, FULL, OLD):
        assert_same_run(src, any_db, run_id)
    # The ids differ (the destination's "theirs" came first), so the votes were remapped.
    votes = [(v["request_a"], v["request_b"]) for v in table_rows(any_db, "votes", FULL)]
    assert votes != [(v["request_a"], v["request_b"]) for v in table_rows(src, "votes", FULL)]
    with store.opened(any_db, read_only=True) as conn:
        assert store.get_run(conn, RUNNING) is None  # still being written: not copied
        assert store.get_run(conn, OLD)["started_by"] is None  # left blank, as it was
        assert len(store.get_requests(conn, "theirs", include_warmup=True)) == 16

    # Again: everything is there already; nothing is duplicated or overwritten.
    counts = {t: len(raw_sql(any_db, f"SELECT id FROM {t}")) for t in ("requests", "samples")}
    again = copy_all(src, any_db)
    assert {r.outcome for r in again.values()} == {"already there", "still running"}
    assert {t: len(raw_sql(any_db, f"SELECT id FROM {t}")) for t in counts} == counts
    assert file_state(src) == before


def test_a_postgresql_history_copies_into_a_sqlite_file(tmp_path, postgres_db):
    seed_source(postgres_db)
    dst = str(tmp_path / "backup.db")
    dump = {t: raw_sql(postgres_db, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("runs", "votes")}

    done = copy_all(postgres_db, dst)

    assert done[FULL].outcome == "copied" and done[RUNNING].outcome == "still running"
    for run_id in (EARLIER, FULL, OLD):
        assert_same_run(postgres_db, dst, run_id)
    assert {t: raw_sql(postgres_db, f"SELECT * FROM {t} ORDER BY 1, 2") for t in dump} == dump


def test_as_user_and_as_host_fill_only_runs_that_do_not_say(tmp_path):
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    seed_source(src)
    done = copy_all(src, dst, as_user="carol", as_host="old-box")
    assert done[OLD].outcome == "copied"
    with store.opened(dst, read_only=True) as conn:
        assert (store.get_run(conn, OLD)["started_by"], store.get_run(conn, OLD)["host"]) == (
            "carol",
            "old-box",
        )
        full = store.get_run(conn, FULL)
        assert (full["started_by"], full["host"]) == ("alice", "gpu-1")  # kept as recorded


def test_a_sqlite_history_on_an_older_schema_is_read_from_a_snapshot(tmp_path):
    """A read-only connection may not migrate a file of schema 7; the copy reads a migrated
    snapshot instead, and the person's file stays at 7, byte for byte."""
    src, dst = str(tmp_path / "old.db"), str(tmp_path / "dst.db")
    build_schema(src, 7)
    raw_sql(
        src,
        "INSERT INTO runs (run_id, created_at, label, status, config_json) VALUES (?, ?, ?, ?, ?)",
        (OLD, 1_700_000_000.0, "before migration 8", "completed", "{}"),
    )
    raw_sql(
        src,
        "INSERT INTO requests (run_id, lane_idx, concurrency, idx, prompt_idx, t_send, t_done)"
        " VALUES (?, 0, 1, 0, 0, 1.0, 2.0)",
        (OLD,),
    )
    before = file_state(src)
    with pytest.raises(store.StoreError, match="older"):
        store.connect(src, read_only=True)  # why the snapshot is needed

    done = copy_all(src, dst, as_user="dave")

    assert done[OLD].outcome == "copied" and done[OLD].requests == 1
    assert file_state(src) == before and schema_version(src) == 7
    with store.opened(dst, read_only=True) as conn:
        run = store.get_run(conn, OLD)
        assert (run["label"], run["started_by"], run["host"]) == (
            "before migration 8",
            "dave",
            None,
        )
    assert not list(tmp_path.glob("**/snapshot.db"))  # the snapshot's folder is gone


def test_a_run_the_destination_refuses_is_not_half_written(tmp_path, postgres, postgres_db):
    """SQLite keeps a text in a REAL column; PostgreSQL refuses it. That run fails alone,
    with nothing of it in the destination, and the message has no password."""
    src = str(tmp_path / "src.db")
    with store.opened(src) as conn:
        seed_small(conn, EARLIER, created_at=1_759_000_000.0)
        seed_full(conn)
        conn.execute(
            "UPDATE samples SET value = 'n/a' WHERE run_id = ? AND source = 'vllm'", (FULL,)
        )

    done = copy_all(src, postgres_db)

    assert done[EARLIER].outcome == "copied"
    failed = done[FULL]
    assert failed.outcome == "failed" and "n/a" in failed.reason
    assert "\n" not in failed.reason and postgres.password not in failed.reason
    for table in ("runs", "lanes", "levels", "requests", "samples", "votes"):
        assert raw_sql(postgres_db, f"SELECT 1 FROM {table} WHERE run_id = %s", (FULL,)) == []
    # The connection is still good for the next run after the rollback.
    with store.open_copy(src, postgres_db) as copier:
        assert copier.copy(EARLIER).outcome == "already there"


def test_a_run_that_arrives_meanwhile_is_not_written_twice(tmp_path, any_db, monkeypatch):
    """The run appears in the destination after the check (a colleague copying the same
    run at once): its row is not inserted twice, and nothing else of it is written."""
    src = str(tmp_path / "src.db")
    with store.opened(src) as conn:
        seed_full(conn)
    with store.opened(any_db) as other:
        seed_small(other, FULL)  # the colleague's copy, as far as this one can tell
    monkeypatch.setattr(copying, "_existing", lambda conn, run_ids: set())  # checked too early

    assert copy_all(src, any_db)[FULL].outcome == "already there"
    with store.opened(any_db, read_only=True) as conn:
        assert store.get_run(conn, FULL)["label"] == "small"
        assert len(store.get_requests(conn, FULL)) == 2
        assert store.get_votes(conn, FULL) == []


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("data/x.db", "./data/../data/x.db", True),
        ("data/x.db", "data/y.db", False),
        ("postgresql://a:pw1@db:5432/team", "postgresql://b@db/team", True),
        ("postgresql://u@localhost/team", "postgresql://u@127.0.0.1:5432/team", True),
        ("postgresql://u@db/team", "postgresql://u@db/other", False),
        ("postgresql://u@db:5433/team", "postgresql://u@db:5432/team", False),
        ("data/team", "postgresql://u@db/team", False),
    ],
)
def test_same_store(a, b, same):
    assert store.same_store(a, b) is same
