"""The store's file and schema: where the database lives, its numbered migrations,
opening (and migrating) a connection, and the JSON encoding of its *_json columns.

WAL mode so the dashboard reads while a run writes; short-lived connections (one
per call or per thread, never shared across threads); busy_timeout so two runs
writing at once wait instead of failing with "database is locked".
Schema changes are numbered migrations applied in order; PRAGMA user_version holds
the applied number.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = PROJECT_ROOT / "data" / "servescope.db"

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
    # 5: reasoning output timed apart (core.metrics): time to the first answer token
    # beside vLLM's TTFT, and the reasoning before it. NULL in rows stored before.
    """
    ALTER TABLE requests ADD COLUMN ttfat_ms REAL;
    ALTER TABLE requests ADD COLUMN reasoning_ms REAL;
    """,
    # 6: open-loop levels (issue "Capacity"). A level's load as JSON ({"mode": "rate",
    # "rate": 2.0, "burstiness": 1.0, ...}; NULL for a closed-loop level, whose key
    # `concurrency` is its load). Rate levels are keyed 1, 2, ... in the order they ran.
    # Each request's scheduled send time, so the validation can report schedule lag.
    """
    ALTER TABLE levels ADD COLUMN load_json TEXT;
    ALTER TABLE requests ADD COLUMN t_scheduled REAL;
    """,
    # 7: engines started from recipes (issue "Variants"). A lane's engine process as
    # JSON: its recipe, state ("starting", "running", "stopped", "failed"), readiness
    # time, exit, peak memory, memory phases and log tail (lib/launch/engine_process.py).
    """
    ALTER TABLE lanes ADD COLUMN process_json TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store cannot be opened (bad path, not a database, newer schema); one line."""


# "postgresql://user:pw@host/db" and the like: a URL, never a file name. Taken for a path
# it became a folder named after it, password included, and the CLI reported success.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def without_password(url: str) -> str:
    """``url`` with any password replaced by ***, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return _URL.match(url).group(0) + "…"  # type: ignore[union-attr]


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The database to use: the argument, else $SERVESCOPE_DB, else data/servescope.db.

    StoreError for a database URL: the store is a SQLite file.
    """
    chosen = str(path or os.environ.get("SERVESCOPE_DB") or DEFAULT_DB)
    if _URL.match(chosen):
        raise StoreError(
            f"{without_password(chosen)} is a database URL; servescope keeps runs in a SQLite "
            "file: give a file path (PostgreSQL is not supported yet)"
        )
    return Path(chosen).expanduser()


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


def dumps(value: Any) -> str:
    """A value as stored in a *_json column."""
    return json.dumps(value, ensure_ascii=False, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    """A *_json column's value, or `default` when it is empty or NULL."""
    return json.loads(text) if text else default
