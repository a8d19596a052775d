"""The store's schema: its numbered migrations, written once for both backends, and the
JSON encoding of its *_json columns.

Migrations are written in SQLite's words; `statements(number, dialect)` turns them into
PostgreSQL's where the two differ (REAL is a 4-byte float there: a Unix time in it
would lose its seconds, so it becomes DOUBLE PRECISION; AUTOINCREMENT becomes an
identity column). Each backend keeps the applied number its own way (sqlite_backend,
postgres_backend).
"""

from __future__ import annotations

import json
import re
from typing import Any

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
    # 8: one history for a team (issue "PostgreSQL"): who started a run (a name from
    # SERVESCOPE_USER, the dashboard's login, else the OS user) and on which host; the
    # dashboard reconciles only runs of its own host (another host's pid means nothing
    # here). NULL in runs stored before: those are this host's.
    """
    ALTER TABLE runs ADD COLUMN started_by TEXT;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# SQLite's words -> PostgreSQL's, for the migrations only (queries are written to mean
# the same on both).
_POSTGRES_DDL = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)


def statements(number: int, dialect: str) -> list[str]:
    """Migration `number` (0-based) as SQL statements for `dialect`."""
    out = []
    for statement in MIGRATIONS[number].split(";"):
        if not statement.strip():
            continue
        if dialect == "postgresql":
            for pattern, words in _POSTGRES_DDL:
                statement = pattern.sub(words, statement)
        out.append(statement.strip())
    return out


def dumps(value: Any) -> str:
    """A value as stored in a *_json column."""
    return clean_text(json.dumps(value, ensure_ascii=False, default=str))


def clean_text(text: str) -> str:
    """``text`` as either database can store it: a lone UTF-16 surrogate (a server's JSON
    may hold half of an escaped pair, "\\ud83d") becomes U+FFFD; neither driver can
    encode it, and one such answer would fail every later write of its run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: a pair split by escaping joins up again, a lone half is replaced.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def loads(text: str | None, default: Any = None) -> Any:
    """A *_json column's value, or `default` when it is empty or NULL."""
    return json.loads(text) if text else default
