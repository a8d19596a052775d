"""What a run measures: its request records and its telemetry samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lib.store.schema import clean_text, dumps, loads

REQUEST_COLUMNS = (
    "run_id",
    "lane_idx",
    "concurrency",
    "idx",
    "warmup",
    "prompt_idx",
    "t_send",
    "t_done",
    "t_scheduled",
    "ttft_ms",
    "ttfat_ms",
    "reasoning_ms",
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


def add_requests(conn: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert request records (dicts keyed as get_requests returns them)."""
    sql = (
        f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
    )
    conn.executemany(sql, [_request_values(r) for r in rows])


def _request_values(row: dict[str, Any]) -> tuple[Any, ...]:
    encoded = dict(row)
    encoded["warmup"] = int(bool(row.get("warmup")))
    encoded["itl_json"] = dumps(row.get("itl_ms") or [])
    encoded["server_json"] = dumps(row["server"]) if row.get("server") is not None else None
    encoded["quality_json"] = dumps(row["quality"]) if row.get("quality") is not None else None
    encoded.setdefault("token_source", "none")
    encoded.setdefault("output_text", "")
    values = (encoded.get(col) for col in REQUEST_COLUMNS)
    return tuple(clean_text(v) if isinstance(v, str) else v for v in values)


def get_requests(
    conn: Any,
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
        rec["itl_ms"] = loads(rec.pop("itl_json"), [])
        rec["server"] = loads(rec.pop("server_json"))
        rec["quality"] = loads(rec.pop("quality_json"))
        out.append(rec)
    return out


def count_requests(conn: Any, run_id: str) -> dict[tuple[int, int], dict[str, int]]:
    """Completed and failed measured requests per (lane_idx, concurrency)."""
    rows = conn.execute(
        "SELECT lane_idx, concurrency, SUM(CASE WHEN error IS NULL THEN 1 ELSE 0 END) AS ok,"
        " SUM(CASE WHEN error IS NULL THEN 0 ELSE 1 END) AS bad"
        " FROM requests WHERE run_id = ? AND warmup = 0 GROUP BY lane_idx, concurrency",
        (run_id,),
    )
    return {
        (r["lane_idx"], r["concurrency"]): {"completed": int(r["ok"]), "failed": int(r["bad"])}
        for r in rows
    }


# What the History page and the level tables read of each request: no answer text, no
# inter-token list, so a run of many thousands of requests loads in milliseconds.
SLIM_REQUEST_COLUMNS = (
    "lane_idx",
    "concurrency",
    "t_send",
    "t_done",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "tokens_per_s",
    "prompt_tokens",
    "output_tokens",
    "error",
)


def get_slim_requests(conn: Any, run_id: str) -> list[dict[str, Any]]:
    """A run's measured requests, oldest first, with SLIM_REQUEST_COLUMNS only."""
    rows = conn.execute(
        f"SELECT {', '.join(SLIM_REQUEST_COLUMNS)} FROM requests"
        " WHERE run_id = ? AND warmup = 0 ORDER BY id",
        (run_id,),
    )
    return [dict(r) for r in rows]


def count_measured(conn: Any) -> dict[str, int]:
    """Measured (not warm-up) requests stored per run id."""
    rows = conn.execute("SELECT run_id, COUNT(*) FROM requests WHERE warmup = 0 GROUP BY run_id")
    return {r[0]: int(r[1]) for r in rows}


def add_samples(conn: Any, run_id: str, lane_idx: int | None, samples: Sequence[Any]) -> None:
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
                dumps(field(s, "labels") or {}),
            )
            for s in samples
        ],
    )


def get_samples(
    conn: Any,
    run_id: str,
    source: str | None = None,
    since_id: int = 0,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """A run's samples ordered by time; with `since_id` or `names`, only those with a
    newer id and one of the names, in id order (the live view reads a long run's new
    samples each second instead of all of them)."""
    sql, args = "SELECT * FROM samples WHERE run_id = ?", [run_id]
    if source:
        sql += " AND source = ?"
        args.append(source)
    if since_id:
        sql += " AND id > ?"
        args.append(since_id)
    if names is not None:
        sql += f" AND name IN ({', '.join('?' * len(names))})" if names else " AND 0 = 1"
        args.extend(names)
    order = " ORDER BY id" if since_id or names is not None else " ORDER BY t, id"
    out = []
    for row in conn.execute(sql + order, args):
        rec = dict(row)
        rec["labels"] = loads(rec.pop("labels_json"), {})
        out.append(rec)
    return out
