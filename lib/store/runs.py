"""Runs and their structure: the run rows, their lanes and their levels."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lib.core.identity import current_host, current_user
from lib.store.schema import dumps, loads

RUN_STATUSES = (
    "pending",
    "running",
    "completed",
    "completed with failures",
    "failed",
    "cancelled",
)


def create_run(
    conn: Any,
    run_id: str,
    config: dict[str, Any],
    label: str = "",
    env: dict[str, Any] | None = None,
    status: str = "pending",
    started_by: str | None = None,
    host: str | None = None,
) -> None:
    """A new run, recorded with who started it and on which host (this process's
    identity unless given: the dashboard passes its logged-in user)."""
    conn.execute(
        "INSERT INTO runs (run_id, created_at, label, status, config_json, env_json,"
        " started_by, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            time.time(),
            label,
            status,
            dumps(config),
            dumps(env or {}),
            started_by or current_user(),
            host or current_host(),
        ),
    )


def update_run(conn: Any, run_id: str, **fields: Any) -> None:
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
            values.append(dumps(value))
        else:
            cols.append(f"{key} = ?")
            values.append(value)
    if cols:
        conn.execute(f"UPDATE runs SET {', '.join(cols)} WHERE run_id = ?", (*values, run_id))


def get_run(conn: Any, run_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return _run_row(row) if row else None


def list_runs(conn: Any, limit: int = 500) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
    return [_run_row(r) for r in rows]


def run_stamp(conn: Any, run_id: str) -> tuple[Any, ...]:
    """A cheap fingerprint of a run's answers: (status, finished_at, newest request id);
    () when there is no such run."""
    row = conn.execute(
        "SELECT r.status, r.finished_at, (SELECT MAX(id) FROM requests q"
        " WHERE q.run_id = r.run_id) FROM runs r WHERE r.run_id = ?",
        (run_id,),
    ).fetchone()
    return tuple(row) if row else ()


def delete_run(conn: Any, run_id: str) -> bool:
    cur = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
    return cur.rowcount > 0


def _run_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["config"] = loads(out.pop("config_json"), {})
    out["env"] = loads(out.pop("env_json"), {})
    return out


def add_lane(
    conn: Any,
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
        "INSERT INTO lanes (run_id, lane_idx, name, engine, base_url, model,"
        " engine_info_json, model_info_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, lane_idx, name, engine, base_url, model, dumps(engine_info), dumps(model_info)),
    )


def update_lane(
    conn: Any,
    run_id: str,
    lane_idx: int,
    base_url: str,
    engine_info: dict[str, Any],
    model_info: dict[str, Any],
) -> None:
    """What a lane's engine turned out to be once started (a recipe's lane)."""
    conn.execute(
        "UPDATE lanes SET base_url = ?, engine_info_json = ?, model_info_json = ?"
        " WHERE run_id = ? AND lane_idx = ?",
        (base_url, dumps(engine_info), dumps(model_info), run_id, lane_idx),
    )


def set_lane_process(conn: Any, run_id: str, lane_idx: int, process: dict[str, Any]) -> None:
    """The lane's engine process record (state, readiness, memory phases, log tail)."""
    conn.execute(
        "UPDATE lanes SET process_json = ? WHERE run_id = ? AND lane_idx = ?",
        (dumps(process), run_id, lane_idx),
    )


def get_lanes(conn: Any, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM lanes WHERE run_id = ? ORDER BY lane_idx", (run_id,))
    return [_lane_row(row) for row in rows]


def get_lanes_of(conn: Any, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The lanes of many runs in one query (History lists hundreds: one query each is
    a round trip each to a database server), by run id; [] for a run without lanes."""
    out: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), 500):  # under SQLite's bound-parameter limit
        chunk = list(run_ids[start : start + 500])
        rows = conn.execute(
            f"SELECT * FROM lanes WHERE run_id IN ({', '.join('?' * len(chunk))})"
            " ORDER BY run_id, lane_idx",
            chunk,
        )
        for row in rows:
            out[row["run_id"]].append(_lane_row(row))
    return out


def _lane_row(row: Any) -> dict[str, Any]:
    lane = dict(row)
    lane["engine_info"] = loads(lane.pop("engine_info_json"), {})
    lane["model_info"] = loads(lane.pop("model_info_json"), {})
    lane["engine_process"] = loads(lane.pop("process_json", None), None)
    return lane


def set_level(
    conn: Any,
    run_id: str,
    lane_idx: int,
    concurrency: int,
    status: str,
    started_at: float | None = None,
    finished_at: float | None = None,
    error: str | None = None,
    load: dict[str, Any] | None = None,
) -> None:
    """Create or update a level; concurrency 0 is the lane's warm-up.

    `load` describes an open-loop level (its key `concurrency` then numbers it)."""
    conn.execute(
        "INSERT INTO levels (run_id, lane_idx, concurrency, status, started_at, finished_at,"
        " error, load_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        # The existing row's columns named with the table: bare names are ambiguous
        # beside `excluded` in PostgreSQL.
        " ON CONFLICT (run_id, lane_idx, concurrency) DO UPDATE SET status = excluded.status,"
        " started_at = COALESCE(excluded.started_at, levels.started_at),"
        " finished_at = COALESCE(excluded.finished_at, levels.finished_at),"
        " error = COALESCE(excluded.error, levels.error),"
        " load_json = COALESCE(excluded.load_json, levels.load_json)",
        (
            run_id,
            lane_idx,
            concurrency,
            status,
            started_at,
            finished_at,
            error,
            dumps(load) if load is not None else None,
        ),
    )


def close_levels(conn: Any, run_id: str, status: str, at: float) -> None:
    """Give a run's still-running levels their final status (a run that died or was
    stopped never ended them itself)."""
    conn.execute(
        "UPDATE levels SET status = ?, finished_at = COALESCE(finished_at, ?)"
        " WHERE run_id = ? AND status IN ('running', 'warming up')",
        (status, at, run_id),
    )


def get_levels(conn: Any, run_id: str, warmup: bool = False) -> list[dict[str, Any]]:
    """A run's measured levels; with `warmup`, its lanes' warm-ups (concurrency 0) only."""
    where = "concurrency = 0" if warmup else "concurrency > 0"
    rows = conn.execute(
        f"SELECT * FROM levels WHERE run_id = ? AND {where} ORDER BY lane_idx, concurrency",
        (run_id,),
    )
    out = []
    for row in rows:
        level = dict(row)
        level["load"] = loads(level.pop("load_json", None))
        out.append(level)
    return out
