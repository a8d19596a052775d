"""SQLite store: runs, lanes, levels, requests, telemetry samples, endpoints, votes.

The public API callers use as `store.<name>`; the code lives in submodules by what it
stores: schema (file, migrations, connections), runs (runs, lanes, levels),
measurements (requests, samples) and saved (endpoints, votes). `writer` is the
background thread that commits a run's records.
"""

from __future__ import annotations

from lib.store.measurements import (
    REQUEST_COLUMNS,
    add_requests,
    add_samples,
    count_requests,
    get_requests,
    get_samples,
)
from lib.store.runs import (
    RUN_STATUSES,
    add_lane,
    close_levels,
    create_run,
    delete_run,
    get_lanes,
    get_levels,
    get_run,
    list_runs,
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
from lib.store.schema import (
    DEFAULT_DB,
    MIGRATIONS,
    PROJECT_ROOT,
    SCHEMA_VERSION,
    StoreError,
    connect,
    db_path,
    opened,
)

__all__ = [
    "DEFAULT_DB",
    "MIGRATIONS",
    "PROJECT_ROOT",
    "REQUEST_COLUMNS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "StoreError",
    "add_lane",
    "add_requests",
    "add_samples",
    "add_vote",
    "close_levels",
    "connect",
    "count_requests",
    "create_run",
    "db_path",
    "delete_endpoint",
    "delete_run",
    "delete_votes",
    "get_lanes",
    "get_levels",
    "get_requests",
    "get_run",
    "get_samples",
    "get_votes",
    "list_endpoints",
    "list_runs",
    "opened",
    "save_endpoint",
    "set_lane_process",
    "set_level",
    "update_lane",
    "update_run",
]
