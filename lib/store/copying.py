"""Copying whole runs from one store to another: a person's SQLite history into the
team's PostgreSQL database (or back), `python -m lib.cli copy`.

Rows are copied as stored (JSON columns as their text, every column of the current
schema), so a copied run reads exactly as it did. Each run goes over in one destination
transaction: all of it or nothing. The source is opened read-only and never changed; a
SQLite file on an older schema is read from a migrated snapshot in a temporary folder,
since a read-only connection may not migrate it. Request ids are the destination's own
(new rows get the next ids there); votes name requests by id, so theirs are remapped.

A run already in the destination (by id) is left as it is; a run still pending or
running in the source is not copied (it is still being written).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.store.connect import connect, database_errors
from lib.store.measurements import REQUEST_COLUMNS
from lib.store.schema import SCHEMA_VERSION
from lib.store.target import StoreError, Target, scrub, target

# Every column of each table but the `id`s the destination assigns (schema.MIGRATIONS;
# tests/store/test_copying.py checks these against the tables a fresh store has).
RUN_COLUMNS = (
    "run_id",
    "created_at",
    "label",
    "status",
    "config_json",
    "env_json",
    "pid",
    "started_at",
    "finished_at",
    "error",
    "cancel_requested",
    "started_by",
    "host",
)
LANE_COLUMNS = (
    "run_id",
    "lane_idx",
    "name",
    "engine",
    "base_url",
    "model",
    "engine_info_json",
    "model_info_json",
    "process_json",
)
LEVEL_COLUMNS = (
    "run_id",
    "lane_idx",
    "concurrency",
    "status",
    "started_at",
    "finished_at",
    "error",
    "load_json",
)
SAMPLE_COLUMNS = ("run_id", "lane_idx", "t", "source", "name", "value", "labels_json")
VOTE_COLUMNS = (
    "run_id",
    "concurrency",
    "req_idx",
    "prompt_idx",
    "request_a",
    "request_b",
    "lane_a",
    "lane_b",
    "left_lane",
    "vote",
    "voter",
    "created_at",
)
COPIED_COLUMNS = {
    "runs": RUN_COLUMNS,
    "lanes": LANE_COLUMNS,
    "levels": LEVEL_COLUMNS,
    "requests": REQUEST_COLUMNS,
    "samples": SAMPLE_COLUMNS,
    "votes": VOTE_COLUMNS,
}
ACTIVE_STATUSES = ("pending", "running")
_CHUNK = 500  # ids per IN (...) query: under SQLite's bound-parameter limit

COPIED, ALREADY_THERE, STILL_RUNNING, FAILED = "copied", "already there", "still running", "failed"


@dataclass
class CopiedRun:
    """What became of one run: `outcome` is COPIED, ALREADY_THERE, STILL_RUNNING or
    FAILED (with `reason`, one line without a password)."""

    run_id: str
    outcome: str
    label: str = ""
    lanes: list[str] = field(default_factory=list)
    requests: int = 0
    samples: int = 0
    votes: int = 0
    reason: str = ""


class Copier:
    """Both stores open: which runs the source holds, and copying them one by one."""

    def __init__(self, source: Any, dest: Any, source_target: Target, dest_target: Target):
        self.source, self.dest = source, dest
        # How messages name them: the file, or the URL without its password.
        self.source_name, self.dest_name = source_target.name, dest_target.name
        self._urls = [t.url for t in (source_target, dest_target) if t.url]

    def run_ids(self) -> list[str]:
        """Every run of the source, oldest first."""
        rows = self.source.execute("SELECT run_id FROM runs ORDER BY created_at, run_id")
        return [row[0] for row in rows]

    def missing(self, run_ids: Sequence[str]) -> list[str]:
        """Which of `run_ids` the source does not hold."""
        found = _existing(self.source, run_ids)
        return [run_id for run_id in run_ids if run_id not in found]

    def copy(
        self, run_id: str, as_user: str | None = None, as_host: str | None = None
    ) -> CopiedRun:
        """Copy one run unless the destination has it or it is still being written;
        `as_user` / `as_host` fill a run's who and where where the source has none (a run
        stored before runs recorded them). A database error fails this run only, with
        nothing of it written."""
        try:
            found = _one(self.source, "runs", RUN_COLUMNS, run_id, order="run_id")
            if not found:
                return CopiedRun(run_id, FAILED, reason="no longer in the source")
            run = found[0]
            result = CopiedRun(run_id, COPIED, label=run["label"] or "")
            if run["status"] in ACTIVE_STATUSES:
                result.outcome = STILL_RUNNING
            elif _existing(self.dest, [run_id]):
                result.outcome = ALREADY_THERE
            else:
                self._copy(run_id, run, result, as_user, as_host)
        except database_errors() as exc:
            return CopiedRun(run_id, FAILED, reason=self._safe(exc))
        return result

    def _copy(
        self,
        run_id: str,
        run: dict[str, Any],
        result: CopiedRun,
        as_user: str | None,
        as_host: str | None,
    ) -> None:
        # Everything read first: the destination's write transaction (SQLite's write lock
        # on a shared file) lasts only as long as the inserts.
        src = self.source
        lanes = _one(src, "lanes", LANE_COLUMNS, run_id, order="lane_idx")
        levels = _one(src, "levels", LEVEL_COLUMNS, run_id, order="lane_idx, concurrency")
        requests = _one(src, "requests", ("id", *REQUEST_COLUMNS), run_id, order="id")
        samples = _one(src, "samples", SAMPLE_COLUMNS, run_id, order="id")
        votes = _one(src, "votes", VOTE_COLUMNS, run_id, order="id")
        run = dict(run)
        run["started_by"] = run["started_by"] or as_user
        run["host"] = run["host"] or as_host
        dst = self.dest
        with dst.transaction():
            if not _insert(dst, "runs", RUN_COLUMNS, [run], unique="run_id"):
                result.outcome = ALREADY_THERE  # another copy got there first
                return
            _insert(dst, "lanes", LANE_COLUMNS, lanes)
            _insert(dst, "levels", LEVEL_COLUMNS, levels)
            _insert(dst, "requests", REQUEST_COLUMNS, requests)
            # The new ids in the order the rows went in (the run is new here: its rows
            # are exactly these, each id above the one before).
            new_ids = [
                row[0]
                for row in dst.execute(
                    "SELECT id FROM requests WHERE run_id = ? ORDER BY id", (run_id,)
                )
            ]
            renumber = dict(zip((r["id"] for r in requests), new_ids, strict=True))
            _insert(dst, "samples", SAMPLE_COLUMNS, samples)
            _insert(dst, "votes", VOTE_COLUMNS, [_remapped(v, renumber) for v in votes])
        result.lanes = [lane["name"] for lane in lanes]
        result.requests, result.samples, result.votes = len(requests), len(samples), len(votes)

    def _safe(self, exc: BaseException) -> str:
        """A driver's message on one line, without either store's password."""
        text = str(exc) or type(exc).__name__
        for url in self._urls:
            text = scrub(text, url)
        return scrub(text, None)

    def close(self) -> None:
        for conn in (self.source, self.dest):
            conn.close()


def _remapped(vote: dict[str, Any], renumber: dict[int, int]) -> dict[str, Any]:
    """A vote naming the destination's ids of its requests (None for one the run no
    longer holds: an id of the source would name another run's request here)."""
    out = dict(vote)
    for key in ("request_a", "request_b"):
        out[key] = renumber.get(vote[key]) if vote[key] is not None else None
    return out


def _one(conn: Any, table: str, columns: Sequence[str], run_id: str, order: str) -> list[Any]:
    """One run's rows of `table`, as stored (JSON columns as text)."""
    rows = conn.execute(
        f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = ? ORDER BY {order}",
        (run_id,),
    )
    return [dict(row) for row in rows]


def _insert(
    conn: Any,
    table: str,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    unique: str | None = None,
) -> int:
    """Insert rows in one executemany (PostgreSQL: psycopg pipelines them, not a round
    trip a row); with `unique`, the one row is left out when its key is already there.
    Returns how many went in."""
    if not rows:
        return 0
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    values = [tuple(row[c] for c in columns) for row in rows]
    if unique:  # one row: its own statement, whose rowcount says whether it went in
        (one,) = values
        return int(conn.execute(f"{sql} ON CONFLICT ({unique}) DO NOTHING", one).rowcount)
    conn.executemany(sql, values)
    return len(rows)


def _existing(conn: Any, run_ids: Sequence[str]) -> set[str]:
    """Which of `run_ids` the store holds."""
    found: set[str] = set()
    for start in range(0, len(run_ids), _CHUNK):
        chunk = list(run_ids[start : start + _CHUNK])
        rows = conn.execute(
            f"SELECT run_id FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})", chunk
        )
        found.update(row[0] for row in rows)
    return found


def same_store(a: str | None, b: str | None) -> bool:
    """Whether two store names (paths or URLs) are one database: the same file, or the
    same database on the same server whichever user or password reaches it."""
    first, second = target(a), target(b)
    if first.dialect != second.dialect:
        return False
    if first.path is not None and second.path is not None:
        return first.path.expanduser().resolve() == second.path.expanduser().resolve()
    return _server_database(first) == _server_database(second)


def _server_database(chosen: Target) -> tuple[str, str, str]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(chosen.url or "")
    except psycopg.Error:  # a URL libpq cannot parse: compared as written
        return (chosen.name, "", "")
    host = str(info.get("host") or "localhost")
    if host in ("127.0.0.1", "::1", "localhost") or host.startswith("/"):
        host = "localhost"  # this machine, over TCP or its socket
    return (host, str(info.get("port") or "5432"), str(info.get("dbname") or info.get("user")))


@contextmanager
def open_copy(source: str, dest: str | None) -> Iterator[Copier]:
    """Both stores opened for copying: the source read-only (a migrated snapshot of a
    SQLite file on an older schema), the destination for writing (created or migrated
    as any writer's open does). StoreError with one line when either cannot be."""
    from_, to = target(source), target(dest)
    with _source(from_) as src:
        try:
            dst = connect(dest, read_only=False)
        except BaseException:
            src.close()
            raise
        copier = Copier(src, dst, from_, to)
        try:
            yield copier
        finally:
            copier.close()


@contextmanager
def _source(chosen: Target) -> Iterator[Any]:
    """The source read-only; a SQLite file on an older schema as a migrated snapshot in
    a temporary folder (read-only connections never migrate, and the person's history
    is left as it is), removed afterwards."""
    try:
        conn = connect(chosen.url or chosen.path, read_only=True)
    except StoreError:
        if chosen.path is None or not _older_sqlite(chosen.path):
            raise
        conn = None
    if conn is not None:
        yield conn
        return
    assert chosen.path is not None
    with tempfile.TemporaryDirectory(prefix="servescope-copy-") as folder:
        snapshot = Path(folder) / "snapshot.db"
        _snapshot(chosen.path, snapshot)
        try:
            conn = connect(snapshot, read_only=False)
        except StoreError as exc:
            # Name the person's file, not the temporary one.
            raise StoreError(str(exc).replace(str(snapshot), str(chosen.path))) from None
        yield conn


def _older_sqlite(path: Path) -> bool:
    """Whether `path` is a SQLite store on an older schema than this servescope's."""
    try:
        with _read_only_file(path) as raw:
            version = raw.execute("PRAGMA user_version").fetchone()[0]
    except (OSError, sqlite3.Error):
        return False
    return 0 < version < SCHEMA_VERSION


def _snapshot(path: Path, snapshot: Path) -> None:
    """A consistent copy of a SQLite file (its WAL included) through SQLite's backup."""
    try:
        with _read_only_file(path) as raw:
            out = sqlite3.connect(snapshot)
            try:
                raw.backup(out)
            finally:
                out.close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from None


@contextmanager
def _read_only_file(path: Path) -> Iterator[sqlite3.Connection]:
    raw = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield raw
    finally:
        raw.close()
