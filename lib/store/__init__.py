"""SQLite store: runs, lanes, levels, requests, telemetry samples, endpoints.

WAL mode so the dashboard reads while a run writes; short-lived connections (one
per call or per thread, never shared across threads); busy_timeout so two runs
writing at once wait instead of failing with "database is locked".
Schema changes are numbered migrations applied in order; PRAGMA user_version holds
the applied number.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = PROJECT_ROOT / "data" / "servescope.db"

RUN_STATUSES = (
    "pending",
    "running",
    "completed",
    "completed with failures",
    "failed",
    "cancelled",
)

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'pending',
        config_json TEXT NOT NULL,
        env_json TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        started_at REAL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE lanes (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        lane_idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        engine TEXT NOT NULL,
        base_url TEXT NOT NULL,
        model TEXT NOT NULL,
        engine_info_json TEXT NOT NULL DEFAULT '{}',
        model_info_json TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (run_id, lane_idx)
    );
    CREATE TABLE levels (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        lane_idx INTEGER NOT NULL,
        concurrency INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'running',
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, lane_idx, concurrency)
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        lane_idx INTEGER NOT NULL,
        concurrency INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        warmup INTEGER NOT NULL DEFAULT 0,
        prompt_idx INTEGER NOT NULL,
        t_send REAL NOT NULL,
        t_done REAL NOT NULL,
        ttft_ms REAL,
        e2el_ms REAL,
        tpot_ms REAL,
        tokens_per_s REAL,
        itl_json TEXT NOT NULL DEFAULT '[]',
        prompt_tokens INTEGER,
        output_tokens INTEGER,
        token_source TEXT NOT NULL DEFAULT 'none',
        output_text TEXT NOT NULL DEFAULT '',
        finish_reason TEXT,
        error TEXT,
        server_json TEXT,
        quality_json TEXT
    );
    CREATE INDEX requests_by_run ON requests(run_id, lane_idx, concurrency);
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        lane_idx INTEGER,
        t REAL NOT NULL,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        labels_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX samples_by_run ON samples(run_id, source, name);
    CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        kind TEXT,
        api_key_env TEXT,
        created_at REAL NOT NULL
    );
    """,
    # 2: a cancel asked for by the dashboard, so a run killed before it could record
    # the cancel itself still reads as cancelled rather than failed.
    """
    ALTER TABLE runs ADD COLUMN cancel_requested REAL;
    """,
    # 3: blind review votes (Compare page). One row per voter, request index and lane
    # pair (lane_a < lane_b). `vote` names the real lane that won (A = lane_a, B =
    # lane_b) whichever side it was shown on; `left_lane` keeps the side for bias checks.
    # The voter is '' when anonymous (NULL would defeat the UNIQUE constraint).
    """
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        concurrency INTEGER NOT NULL,
        req_idx INTEGER NOT NULL,
        prompt_idx INTEGER NOT NULL,
        request_a INTEGER,
        request_b INTEGER,
        lane_a INTEGER NOT NULL,
        lane_b INTEGER NOT NULL,
        left_lane INTEGER NOT NULL,
        vote TEXT NOT NULL CHECK (vote IN ('A', 'B', 'tie', 'both_bad')),
        voter TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        CHECK (lane_a < lane_b),
        CHECK (left_lane IN (lane_a, lane_b)),
        UNIQUE (run_id, concurrency, req_idx, lane_a, lane_b, voter)
    );
    """,
    # 4: why a level failed ("4 of 4 failed: cannot connect…"), stored by the runner so
    # every page, the report and the card give the same reason. The warm-up of a lane is
    # a level row with concurrency 0 (status "warming up", then how it ended).
    """
    ALTER TABLE levels ADD COLUMN error TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The database to use: the argument, else $SERVESCOPE_DB, else data/servescope.db."""
    chosen = path or os.environ.get("SERVESCOPE_DB") or DEFAULT_DB
    return Path(chosen).expanduser()


class StoreError(RuntimeError):
    """The store cannot be opened (bad path, not a database, newer schema); one line."""


def connect(path: str | os.PathLike[str] | None = None) -> sqlite3.Connection:
    """Open the store (creating and migrating it if needed). Close it when done.

    Raises StoreError with one line naming the file when it cannot be opened: callers
    (the CLI, the run's process) report it instead of a traceback.
    """
    target = db_path(path)
    conn: sqlite3.Connection | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL: no fsync per commit, durable at checkpoints; a crash of the
        # benchmark process (not the OS) loses nothing committed.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except (OSError, sqlite3.Error, StoreError) as exc:
        if conn is not None:
            conn.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if target.is_dir():
            reason = "it is a folder"
        raise StoreError(f"cannot open the store {target}: {reason}") from exc
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema {version} is newer than this servescope ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def opened(path: str | os.PathLike[str] | None = None) -> Iterator[sqlite3.Connection]:
    """A short-lived connection: `with opened(db) as conn: ...`."""
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None, default: Any = None) -> Any:
    return json.loads(text) if text else default


# --- runs ---------------------------------------------------------------------------


def create_run(
    conn: sqlite3.Connection,
    run_id: str,
    config: dict[str, Any],
    label: str = "",
    env: dict[str, Any] | None = None,
    status: str = "pending",
) -> None:
    conn.execute(
        "INSERT INTO runs (run_id, created_at, label, status, config_json, env_json)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, time.time(), label, status, _dumps(config), _dumps(env or {})),
    )


def update_run(conn: sqlite3.Connection, run_id: str, **fields: Any) -> None:
    """Set columns of a run; dict values go to their *_json column."""
    allowed = {"label", "status", "pid", "started_at", "finished_at", "error", "env", "config"}
    allowed.add("cancel_requested")
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")
    cols, values = [], []
    for key, value in fields.items():
        if key in ("env", "config"):
            cols.append(f"{key}_json = ?")
            values.append(_dumps(value))
        else:
            cols.append(f"{key} = ?")
            values.append(value)
    if cols:
        conn.execute(f"UPDATE runs SET {', '.join(cols)} WHERE run_id = ?", (*values, run_id))


def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return _run_row(row) if row else None


def list_runs(conn: sqlite3.Connection, limit: int = 500) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
    return [_run_row(r) for r in rows]


def delete_run(conn: sqlite3.Connection, run_id: str) -> bool:
    cur = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
    return cur.rowcount > 0


def _run_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["config"] = _loads(out.pop("config_json"), {})
    out["env"] = _loads(out.pop("env_json"), {})
    return out


# --- lanes and levels ---------------------------------------------------------------


def add_lane(
    conn: sqlite3.Connection,
    run_id: str,
    lane_idx: int,
    name: str,
    engine: str,
    base_url: str,
    model: str,
    engine_info: dict[str, Any],
    model_info: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO lanes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, lane_idx, name, engine, base_url, model, _dumps(engine_info), _dumps(model_info)),
    )


def get_lanes(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM lanes WHERE run_id = ? ORDER BY lane_idx", (run_id,))
    out = []
    for row in rows:
        lane = dict(row)
        lane["engine_info"] = _loads(lane.pop("engine_info_json"), {})
        lane["model_info"] = _loads(lane.pop("model_info_json"), {})
        out.append(lane)
    return out


def set_level(
    conn: sqlite3.Connection,
    run_id: str,
    lane_idx: int,
    concurrency: int,
    status: str,
    started_at: float | None = None,
    finished_at: float | None = None,
    error: str | None = None,
) -> None:
    """Create or update a level; concurrency 0 is the lane's warm-up."""
    conn.execute(
        "INSERT INTO levels (run_id, lane_idx, concurrency, status, started_at, finished_at,"
        " error) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id, lane_idx, concurrency) DO UPDATE SET status = excluded.status,"
        " started_at = COALESCE(excluded.started_at, started_at),"
        " finished_at = COALESCE(excluded.finished_at, finished_at),"
        " error = COALESCE(excluded.error, error)",
        (run_id, lane_idx, concurrency, status, started_at, finished_at, error),
    )


def close_levels(conn: sqlite3.Connection, run_id: str, status: str, at: float) -> None:
    """Give a run's still-running levels their final status (a run that died or was
    stopped never ended them itself)."""
    conn.execute(
        "UPDATE levels SET status = ?, finished_at = COALESCE(finished_at, ?)"
        " WHERE run_id = ? AND status IN ('running', 'warming up')",
        (status, at, run_id),
    )


def get_levels(conn: sqlite3.Connection, run_id: str, warmup: bool = False) -> list[dict[str, Any]]:
    """A run's measured levels; with `warmup`, its lanes' warm-ups (concurrency 0) only."""
    where = "concurrency = 0" if warmup else "concurrency > 0"
    rows = conn.execute(
        f"SELECT * FROM levels WHERE run_id = ? AND {where} ORDER BY lane_idx, concurrency",
        (run_id,),
    )
    return [dict(r) for r in rows]


# --- requests -----------------------------------------------------------------------

REQUEST_COLUMNS = (
    "run_id",
    "lane_idx",
    "concurrency",
    "idx",
    "warmup",
    "prompt_idx",
    "t_send",
    "t_done",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "tokens_per_s",
    "itl_json",
    "prompt_tokens",
    "output_tokens",
    "token_source",
    "output_text",
    "finish_reason",
    "error",
    "server_json",
    "quality_json",
)


def add_requests(conn: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert request records (dicts keyed as get_requests returns them)."""
    sql = (
        f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
    )
    conn.executemany(sql, [_request_values(r) for r in rows])


def _request_values(row: dict[str, Any]) -> tuple[Any, ...]:
    encoded = dict(row)
    encoded["warmup"] = int(bool(row.get("warmup")))
    encoded["itl_json"] = _dumps(row.get("itl_ms") or [])
    encoded["server_json"] = _dumps(row["server"]) if row.get("server") is not None else None
    encoded["quality_json"] = _dumps(row["quality"]) if row.get("quality") is not None else None
    encoded.setdefault("token_source", "none")
    encoded.setdefault("output_text", "")
    return tuple(encoded.get(col) for col in REQUEST_COLUMNS)


def get_requests(
    conn: sqlite3.Connection,
    run_id: str,
    lane_idx: int | None = None,
    include_warmup: bool = False,
    since_id: int = 0,
) -> list[dict[str, Any]]:
    """Request records of a run, oldest first; `since_id` reads only newer rows."""
    sql = "SELECT * FROM requests WHERE run_id = ? AND id > ?"
    args: list[Any] = [run_id, since_id]
    if lane_idx is not None:
        sql += " AND lane_idx = ?"
        args.append(lane_idx)
    if not include_warmup:
        sql += " AND warmup = 0"
    rows = conn.execute(sql + " ORDER BY id", args)
    out = []
    for row in rows:
        rec = dict(row)
        rec["warmup"] = bool(rec["warmup"])
        rec["itl_ms"] = _loads(rec.pop("itl_json"), [])
        rec["server"] = _loads(rec.pop("server_json"))
        rec["quality"] = _loads(rec.pop("quality_json"))
        out.append(rec)
    return out


def count_requests(conn: sqlite3.Connection, run_id: str) -> dict[tuple[int, int], dict[str, int]]:
    """Completed and failed measured requests per (lane_idx, concurrency)."""
    rows = conn.execute(
        "SELECT lane_idx, concurrency, SUM(error IS NULL) AS ok, SUM(error IS NOT NULL) AS bad"
        " FROM requests WHERE run_id = ? AND warmup = 0 GROUP BY lane_idx, concurrency",
        (run_id,),
    )
    return {
        (r["lane_idx"], r["concurrency"]): {"completed": r["ok"], "failed": r["bad"]} for r in rows
    }


# --- samples ------------------------------------------------------------------------


def add_samples(
    conn: sqlite3.Connection, run_id: str, lane_idx: int | None, samples: Sequence[Any]
) -> None:
    """Insert telemetry samples (records.Sample or mappings with the same fields)."""

    def field(s: Any, name: str) -> Any:
        return s[name] if isinstance(s, dict) else getattr(s, name)

    conn.executemany(
        "INSERT INTO samples (run_id, lane_idx, t, source, name, value, labels_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                lane_idx,
                field(s, "t"),
                field(s, "source"),
                field(s, "name"),
                field(s, "value"),
                _dumps(field(s, "labels") or {}),
            )
            for s in samples
        ],
    )


def get_samples(
    conn: sqlite3.Connection, run_id: str, source: str | None = None
) -> list[dict[str, Any]]:
    sql, args = "SELECT * FROM samples WHERE run_id = ?", [run_id]
    if source:
        sql += " AND source = ?"
        args.append(source)
    out = []
    for row in conn.execute(sql + " ORDER BY t, id", args):
        rec = dict(row)
        rec["labels"] = _loads(rec.pop("labels_json"), {})
        out.append(rec)
    return out


# --- endpoints ----------------------------------------------------------------------


def save_endpoint(
    conn: sqlite3.Connection, name: str, url: str, kind: str | None, api_key_env: str | None
) -> None:
    """Upsert an endpoint. Only the *name* of the key's environment variable is kept."""
    conn.execute(
        "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " url = excluded.url, kind = excluded.kind, api_key_env = excluded.api_key_env",
        (name, url, kind, api_key_env, time.time()),
    )


def list_endpoints(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM endpoints ORDER BY created_at, name")]


def delete_endpoint(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM endpoints WHERE name = ?", (name,)).rowcount > 0


# --- votes (blind review) -------------------------------------------------------------


def add_vote(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    concurrency: int,
    req_idx: int,
    prompt_idx: int,
    lane_a: int,
    lane_b: int,
    left_lane: int,
    vote: str,
    request_a: int | None = None,
    request_b: int | None = None,
    voter: str = "",
) -> int:
    """Store a vote on one answer pair, replacing the voter's earlier vote on it; returns
    its id. Lanes are stored in ascending order (the vote flipped to match), so one pair
    has one row whichever lane the page called A."""
    if lane_a > lane_b:
        lane_a, lane_b, request_a, request_b = lane_b, lane_a, request_b, request_a
        vote = {"A": "B", "B": "A"}.get(vote, vote)
    row = conn.execute(
        "INSERT INTO votes (run_id, concurrency, req_idx, prompt_idx, request_a, request_b,"
        " lane_a, lane_b, left_lane, vote, voter, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id, concurrency, req_idx, lane_a, lane_b, voter) DO UPDATE SET"
        " prompt_idx = excluded.prompt_idx, request_a = excluded.request_a,"
        " request_b = excluded.request_b, left_lane = excluded.left_lane,"
        " vote = excluded.vote, created_at = excluded.created_at RETURNING id",
        (
            run_id,
            concurrency,
            req_idx,
            prompt_idx,
            request_a,
            request_b,
            lane_a,
            lane_b,
            left_lane,
            vote,
            voter or "",
            time.time(),
        ),
    ).fetchone()
    return int(row[0])


def get_votes(
    conn: sqlite3.Connection, run_id: str, voter: str | None = None
) -> list[dict[str, Any]]:
    """A run's votes, oldest first; only one voter's when `voter` is given."""
    sql, args = "SELECT * FROM votes WHERE run_id = ?", [run_id]
    if voter is not None:
        sql += " AND voter = ?"
        args.append(voter)
    return [dict(r) for r in conn.execute(sql + " ORDER BY created_at, id", args)]


def delete_votes(
    conn: sqlite3.Connection, run_id: str, voter: str | None = None, vote_id: int | None = None
) -> int:
    """Delete a run's votes (one voter's, or one vote by id); returns how many went."""
    sql, args = "DELETE FROM votes WHERE run_id = ?", [run_id]
    if voter is not None:
        sql += " AND voter = ?"
        args.append(voter)
    if vote_id is not None:
        sql += " AND id = ?"
        args.append(vote_id)
    return conn.execute(sql, args).rowcount
