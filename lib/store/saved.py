"""What the dashboard keeps besides runs: saved endpoints and blind-review votes."""

from __future__ import annotations

import time
from typing import Any


def save_endpoint(
    conn: Any, name: str, url: str, kind: str | None, api_key_env: str | None
) -> None:
    """Upsert an endpoint. Only the *name* of the key's environment variable is kept."""
    conn.execute(
        "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " url = excluded.url, kind = excluded.kind, api_key_env = excluded.api_key_env",
        (name, url, kind, api_key_env, time.time()),
    )


def list_endpoints(conn: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM endpoints ORDER BY created_at, name")]


def delete_endpoint(conn: Any, name: str) -> bool:
    return conn.execute("DELETE FROM endpoints WHERE name = ?", (name,)).rowcount > 0


def add_vote(
    conn: Any,
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


def get_votes(conn: Any, run_id: str, voter: str | None = None) -> list[dict[str, Any]]:
    """A run's votes, oldest first; only one voter's when `voter` is given."""
    sql, args = "SELECT * FROM votes WHERE run_id = ?", [run_id]
    if voter is not None:
        sql += " AND voter = ?"
        args.append(voter)
    return [dict(r) for r in conn.execute(sql + " ORDER BY created_at, id", args)]


def delete_votes(
    conn: Any, run_id: str, voter: str | None = None, vote_id: int | None = None
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
