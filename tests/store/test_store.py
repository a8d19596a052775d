"""Store round-trips, upserts, filters, cascades and concurrent writers, on both backends
(`any_db`: a SQLite file, then a PostgreSQL database), and SQLite's own file rules."""

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


def _vote(run_id, **kw):
    args = {
        "concurrency": 1,
        "req_idx": 0,
        "prompt_idx": 0,
        "lane_a": 0,
        "lane_b": 1,
        "left_lane": 0,
        "vote": "A",
    }
    args.update(kw)
    return args


# --- both backends ---------------------------------------------------------------------


def test_run_lane_level_request_sample_round_trip(any_db):
    with store.opened(any_db) as conn:
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
        assert run["finished_at"] == 10.0 and run["cancel_requested"] is None
        assert store.get_lanes(conn, "r1")[0]["engine_info"] == {"kind": "vllm"}
        assert store.get_lanes(conn, "r1")[0]["engine_process"] is None
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
        for key in (*keys, "output_tokens", "t_send", "t_done", "token_source"):
            assert rec[key] == expected[key]
        assert rec["warmup"] is False and rec["t_scheduled"] is None
        both = store.get_requests(conn, "r1", include_warmup=True)
        assert [r["warmup"] for r in both] == [False, True] and both[1]["error"] == "reset"
        assert store.get_samples(conn, "r1")[0]["value"] == 0.5
        assert store.get_run(conn, "nope") is None


def test_runs_record_who_and_where_newest_first(any_db, monkeypatch):
    monkeypatch.setenv("SERVESCOPE_USER", "alice")
    monkeypatch.setenv("SERVESCOPE_HOST", "gpu-box")
    with store.opened(any_db) as conn:
        store.create_run(conn, "old", {})
        store.create_run(conn, "new", {}, started_by="bob", host="laptop")
        runs = store.list_runs(conn)
        assert [r["run_id"] for r in runs] == ["new", "old"]
        assert (runs[0]["started_by"], runs[0]["host"]) == ("bob", "laptop")
        assert (runs[1]["started_by"], runs[1]["host"]) == ("alice", "gpu-box")
        assert [r["run_id"] for r in store.list_runs(conn, limit=1)] == ["new"]


def test_update_run_rejects_unknown_fields(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        with pytest.raises(ValueError):
            store.update_run(conn, "r", statuss="x")
        store.update_run(conn, "r", config={"label": "x"}, env={"host": 1}, cancel_requested=3.5)
        run = store.get_run(conn, "r")
        assert (run["config"], run["env"], run["cancel_requested"]) == (
            {"label": "x"},
            {"host": 1},
            3.5,
        )


def test_endpoints_keep_only_the_key_variable_name(any_db):
    with store.opened(any_db) as conn:
        store.save_endpoint(conn, "gpu box", "http://10.0.0.2:8000/v1", "vllm", "VLLM_KEY")
        store.save_endpoint(conn, "gpu box", "http://10.0.0.3:8000/v1", "vllm", None)
        (ep,) = store.list_endpoints(conn)
        assert ep["url"] == "http://10.0.0.3:8000/v1" and ep["api_key_env"] is None
        assert store.delete_endpoint(conn, "gpu box")
        assert not store.delete_endpoint(conn, "gpu box")
        assert store.list_endpoints(conn) == []


def test_votes_upsert_per_voter_and_flip_to_ascending_lanes(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        first = store.add_vote(conn, "r", **_vote("r", vote="A", voter="ann"))
        # The same pair named the other way round, by the same voter: one row, replaced,
        # with the winner flipped to match the stored lane order.
        again = store.add_vote(
            conn, "r", **_vote("r", lane_a=1, lane_b=0, left_lane=1, vote="A", voter="ann")
        )
        assert again == first
        store.add_vote(conn, "r", **_vote("r", vote="tie"))  # anonymous
        store.add_vote(conn, "r", **_vote("r", req_idx=1, vote="both_bad", voter="ann"))
        votes = store.get_votes(conn, "r")
        assert len(votes) == 3
        (ann_first,) = [v for v in store.get_votes(conn, "r", voter="ann") if v["req_idx"] == 0]
        assert (ann_first["lane_a"], ann_first["lane_b"], ann_first["vote"]) == (0, 1, "B")
        assert ann_first["left_lane"] == 1
        assert [v["voter"] for v in store.get_votes(conn, "r", voter="")] == [""]
        assert store.delete_votes(conn, "r", vote_id=first) == 1
        assert store.delete_votes(conn, "r", voter="ann") == 1
        assert store.delete_votes(conn, "r") == 1
        assert store.get_votes(conn, "r") == []


def test_levels_upsert_keeps_what_a_later_write_leaves_out(any_db):
    load = {"mode": "rate", "rate": 2.0, "burstiness": 1.0}
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.set_level(conn, "r", 0, 0, "warming up", started_at=1.0)
        store.set_level(conn, "r", 0, 1, "running", started_at=2.0, load=load)
        store.set_level(conn, "r", 0, 1, "completed with failures", finished_at=3.0, error="1 of 4")
        store.set_level(conn, "r", 1, 2, "running", started_at=2.5)
        (warmup,) = store.get_levels(conn, "r", warmup=True)
        assert (warmup["concurrency"], warmup["status"]) == (0, "warming up")
        first, second = store.get_levels(conn, "r")
        assert (first["status"], first["started_at"], first["finished_at"]) == (
            "completed with failures",
            2.0,
            3.0,
        )
        assert (first["error"], first["load"]) == ("1 of 4", load)
        assert (second["lane_idx"], second["load"]) == (1, None)
        store.close_levels(conn, "r", "cancelled", at=9.0)
        statuses = {
            (lv["lane_idx"], lv["concurrency"]): (lv["status"], lv["finished_at"])
            for lv in store.get_levels(conn, "r") + store.get_levels(conn, "r", warmup=True)
        }
        assert statuses == {
            (0, 0): ("cancelled", 9.0),
            (0, 1): ("completed with failures", 3.0),  # already ended: left as it was
            (1, 2): ("cancelled", 9.0),
        }


def test_lanes_update_and_process_record(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.add_lane(conn, "r", 0, "a", "openai", "http://pending", "m", {}, {})
        store.update_lane(conn, "r", 0, "http://127.0.0.1:9000/v1", {"kind": "vllm"}, {"ctx": 9})
        store.set_lane_process(conn, "r", 0, {"state": "running", "peak_mb": 12.5})
        (lane,) = store.get_lanes(conn, "r")
        assert lane["base_url"] == "http://127.0.0.1:9000/v1"
        assert (lane["engine_info"], lane["model_info"]) == ({"kind": "vllm"}, {"ctx": 9})
        assert lane["engine_process"] == {"state": "running", "peak_mb": 12.5}


def test_samples_since_id_and_names_filter(any_db):
    samples = [
        Sample(t=3.0, source="vllm", name="kv", value=0.3),
        Sample(t=1.0, source="vllm", name="running", value=2.0, labels={"model": "m"}),
        Sample(t=2.0, source="nvml", name="kv", value=0.1),
    ]
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.create_run(conn, "other", {})
        store.add_samples(conn, "r", 0, samples)
        store.add_samples(conn, "other", None, [{"t": 0.5, "source": "vllm", "name": "kv",
                                                 "value": 9.0, "labels": None}])  # fmt: skip
        every = store.get_samples(conn, "r")
        assert [s["t"] for s in every] == [1.0, 2.0, 3.0]  # by time
        assert every[0]["labels"] == {"model": "m"} and every[1]["labels"] == {}
        assert [s["value"] for s in store.get_samples(conn, "r", source="vllm")] == [2.0, 0.3]
        first_id = min(s["id"] for s in every)
        newer = store.get_samples(conn, "r", since_id=first_id)
        assert [s["t"] for s in newer] == [1.0, 2.0]  # by id, the first one left out
        assert [s["t"] for s in store.get_samples(conn, "r", names=["kv"])] == [3.0, 2.0]
        assert store.get_samples(conn, "r", names=[]) == []
        assert [s["name"] for s in store.get_samples(conn, "r", since_id=first_id,
                                                     names=["running"])] == ["running"]  # fmt: skip
        (lone,) = store.get_samples(conn, "other")
        assert lone["lane_idx"] is None and lone["labels"] == {}


def test_request_counts_stamp_and_slim_rows(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        store.create_run(conn, "quiet", {})
        assert store.run_stamp(conn, "nope") == ()
        assert store.run_stamp(conn, "r") == ("pending", None, None)
        store.add_requests(
            conn,
            [
                _request("r", 0, warmup=True),
                _request("r", 1),
                _request("r", 2, error="HTTP 503"),
                _request("r", 3, lane_idx=1, concurrency=1),
            ],
        )
        assert store.count_requests(conn, "r") == {
            (0, 4): {"completed": 1, "failed": 1},
            (1, 1): {"completed": 1, "failed": 0},
        }
        assert store.count_requests(conn, "quiet") == {}
        assert store.count_measured(conn) == {"r": 3}
        slim = store.get_slim_requests(conn, "r")
        assert [set(row) for row in slim] == [set(store.SLIM_REQUEST_COLUMNS)] * 3
        assert [(row["lane_idx"], row["error"]) for row in slim] == [
            (0, None),
            (0, "HTTP 503"),
            (1, None),
        ]
        newest = max(r["id"] for r in store.get_requests(conn, "r", include_warmup=True))
        store.update_run(conn, "r", status="completed", finished_at=7.0)
        assert store.run_stamp(conn, "r") == ("completed", 7.0, newest)
        # since_id: only newer rows; lane_idx: one lane's.
        assert [r["idx"] for r in store.get_requests(conn, "r", since_id=newest - 1)] == [3]
        assert [r["idx"] for r in store.get_requests(conn, "r", lane_idx=0)] == [1, 2]


def test_delete_cascades_to_everything_of_the_run(any_db):
    with store.opened(any_db) as conn:
        for run_id in ("gone", "kept"):
            store.create_run(conn, run_id, {})
            store.add_lane(conn, run_id, 0, "a", "openai", "http://x/v1", "m", {}, {})
            store.add_lane(conn, run_id, 1, "b", "openai", "http://y/v1", "m", {}, {})
            store.set_level(conn, run_id, 0, 1, "completed", started_at=1.0)
            store.add_requests(conn, [_request(run_id, 0), _request(run_id, 1, warmup=True)])
            store.add_samples(conn, run_id, 0, [Sample(t=1.0, source="s", name="n", value=1.0)])
            store.add_vote(conn, run_id, **_vote(run_id))
        assert store.delete_run(conn, "gone")
        assert not store.delete_run(conn, "gone")
        assert store.get_run(conn, "gone") is None
        assert store.get_lanes(conn, "gone") == []
        assert store.get_levels(conn, "gone") == []
        assert store.get_requests(conn, "gone", include_warmup=True) == []
        assert store.get_samples(conn, "gone") == []
        assert store.get_votes(conn, "gone") == []
        assert len(store.get_lanes(conn, "kept")) == 2
        assert len(store.get_requests(conn, "kept", include_warmup=True)) == 2
        assert len(store.get_samples(conn, "kept")) == len(store.get_votes(conn, "kept")) == 1


def test_a_failed_transaction_keeps_nothing(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "r", {})
        with pytest.raises(store.database_errors()), conn.transaction():
            store.add_requests(conn, [_request("r", 0)])
            store.create_run(conn, "r", {})  # the same id again: refused
        assert store.get_requests(conn, "r") == []
        store.add_requests(conn, [_request("r", 1)])  # the connection goes on
        assert len(store.get_requests(conn, "r")) == 1


def test_two_writers_at_once_lose_nothing(any_db):
    with store.opened(any_db) as conn:
        store.create_run(conn, "a", {})
        store.create_run(conn, "b", {})
    writers = [StoreWriter(any_db), StoreWriter(any_db)]

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
    with store.opened(any_db) as conn:
        for run_id in "ab":
            assert [r["idx"] for r in store.get_requests(conn, run_id)] == list(range(300))


# --- SQLite's file ---------------------------------------------------------------------


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
        assert run["started_by"] is None and run["host"] is None
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


def test_db_path_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVESCOPE_DB", raising=False)
    assert store.db_path() == store.DEFAULT_DB
    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "x.db"))
    assert store.db_path() == tmp_path / "x.db"
    assert store.db_path(tmp_path / "y.db") == tmp_path / "y.db"


def test_lanes_of_many_runs_in_one_query(any_db):
    with store.opened(any_db) as conn:
        for run_id, lanes in (("a", 2), ("b", 0), ("c", 1)):
            store.create_run(conn, run_id, {})
            for idx in reversed(range(lanes)):
                store.add_lane(conn, run_id, idx, f"{run_id}{idx}", "vllm", "u", "m", {"v": 1}, {})
        by_run = store.get_lanes_of(conn, ["a", "b", "c", "gone"])
    assert [lane["name"] for lane in by_run["a"]] == ["a0", "a1"]
    assert by_run["b"] == [] and by_run["gone"] == []
    assert by_run["c"][0]["engine_info"] == {"v": 1} and by_run["c"][0]["engine_process"] is None
    with store.opened(any_db) as conn:
        assert by_run["a"] == store.get_lanes(conn, "a")


def test_the_writer_merges_consecutive_request_inserts_keeping_order():
    from lib.store.writer import merged

    def other(conn, *args):
        pass

    rows = [[{"idx": i}] for i in range(5)]
    ops = [
        (store.add_requests, (rows[0],)),
        (store.add_requests, (rows[1],)),
        (other, ("level",)),
        (store.add_requests, (rows[2],)),
        (store.add_requests, (rows[3],)),
        (store.add_requests, (rows[4],)),
    ]
    assert merged(ops) == [
        (store.add_requests, ([{"idx": 0}, {"idx": 1}],)),
        (other, ("level",)),
        (store.add_requests, ([{"idx": 2}, {"idx": 3}, {"idx": 4}],)),
    ]
    assert rows[0] == [{"idx": 0}]  # the submitted lists are not changed
