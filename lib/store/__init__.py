"""The store: runs, lanes, levels, requests, telemetry samples, endpoints, votes, in a
SQLite file (the default) or a PostgreSQL database shared by a team.

The public API callers use as `store.<name>`; the code lives in submodules by job:
target (which database, named without its password), schema (migrations for both
backends), sqlite_backend and postgres_backend (opening, migrating, transactions),
connect (either one, read-only for viewers), and the SQL by what it stores: runs
(runs, lanes, levels), measurements (requests, samples) and saved (endpoints, votes).
`writer` is the background thread that commits a run's records; `copying` copies whole
runs from one store to another (`open_copy`).
"""

from __future__ import annotations

from lib.store.connect import (
    connect,
    database_errors,
    keep_connections,
    opened,
    read_only,
    reading_only,
)
from lib.store.copying import CopiedRun, Copier, open_copy, same_store
from lib.store.measurements import (
    REQUEST_COLUMNS,
    SLIM_REQUEST_COLUMNS,
    add_requests,
    add_samples,
    count_measured,
    count_requests,
    get_requests,
    get_samples,
    get_slim_requests,
)
from lib.store.runs import (
    RUN_STATUSES,
    add_lane,
    close_levels,
    create_run,
    delete_run,
    get_lanes,
    get_lanes_of,
    get_levels,
    get_run,
    list_runs,
    run_stamp,
    set_lane_process,
    set_level,
    update_lane,
    update_run,
)
from lib.store.saved import (
    add_vote,
    delete_endpoint,
    delete_votes,
    get_votes,
    list_endpoints,
    save_endpoint,
)
from lib.store.schema import MIGRATIONS, SCHEMA_VERSION
from lib.store.target import (
    DEFAULT_DB,
    PROJECT_ROOT,
    StoreError,
    Target,
    db_path,
    describe,
    target,
    without_password,
)

__all__ = [
    "DEFAULT_DB",
    "MIGRATIONS",
    "PROJECT_ROOT",
    "REQUEST_COLUMNS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "SLIM_REQUEST_COLUMNS",
    "CopiedRun",
    "Copier",
    "StoreError",
    "Target",
    "add_lane",
    "add_requests",
    "add_samples",
    "add_vote",
    "close_levels",
    "connect",
    "count_measured",
    "count_requests",
    "create_run",
    "database_errors",
    "db_path",
    "delete_endpoint",
    "delete_run",
    "delete_votes",
    "describe",
    "get_lanes",
    "get_lanes_of",
    "get_levels",
    "get_requests",
    "get_run",
    "get_samples",
    "get_slim_requests",
    "get_votes",
    "keep_connections",
    "list_endpoints",
    "list_runs",
    "open_copy",
    "opened",
    "read_only",
    "reading_only",
    "run_stamp",
    "same_store",
    "save_endpoint",
    "set_lane_process",
    "set_level",
    "target",
    "update_lane",
    "update_run",
    "without_password",
]
