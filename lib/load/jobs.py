"""Start runs as child processes, follow them, cancel them.

The dashboard never measures: it writes the run row and the config, then starts
`python -m lib.cli run --config FILE --run-id ID` in a session of its own, so the
run survives reruns, closed tabs and dashboard restarts. A run whose process is
gone while its row still says pending/running is marked failed (what finished is
kept). Processes start from argument lists, never shell strings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lib import store
from lib.core.identity import current_host
from lib.core.records import RunConfig
from lib.launch.engine_process import stop_orphans
from lib.load.config_check import ConfigError, validate_config
from lib.load.runner import new_run_id

ACTIVE = ("pending", "running")
# A pending row whose process never reported in (it failed before writing) is
# given this long before it is called dead.
PENDING_GRACE_S = 60.0


class EndpointBusy(RuntimeError):
    """Another active run already drives one of this run's endpoints."""


def jobs_dir(db: str | os.PathLike[str] | None = None) -> Path:
    """Folder for run configs and logs: beside a SQLite file, in this machine's data
    folder for a server database (store.Target.local_dir)."""
    folder = store.target(db).local_dir / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_path(run_id: str, db: str | os.PathLike[str] | None = None) -> Path:
    return jobs_dir(db) / f"{run_id}.log"


# A run started from a terminal (`python -m lib.cli run --engine ...`): its command line
# cannot name the run, which it creates itself. argv items are NUL-separated in /proc.
_CLI_RUN = b"lib.cli\x00run\x00"


def process_alive(pid: int | None, run_id: str) -> bool:
    """True while `pid` is the run's own process (guards against pid reuse): one started
    here names its run on its command line, one started from a terminal is a
    `lib.cli run` process."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # No /proc (not Linux): fall back to whether the pid exists at all.
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    # A zombie (exited, not yet reaped) has an empty cmdline.
    return run_id.encode() in cmdline or _CLI_RUN in cmdline


def _norm(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1")


# What a matrix's lanes use: engines started on this machine have no URL before they
# start, and two matrices at once would share its cores and memory (and GPU).
LAUNCHED = "the engines a matrix starts on this machine"


def _endpoint(base_url: str, recipe: Any) -> str:
    return LAUNCHED if recipe else _norm(base_url)


def busy_endpoints(config: RunConfig, db: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Endpoints of `config` that an active run is using: {url: run_id}; a matrix's
    started engines count as one endpoint (one matrix at a time)."""
    wanted = {_endpoint(lane.base_url, lane.recipe) for lane in config.lanes}
    busy: dict[str, str] = {}
    for run in active_runs(db, local_only=True):
        for lane in run["config"].get("lanes", []):
            url = _endpoint(lane.get("base_url", ""), lane.get("recipe"))
            if url in wanted:
                busy[url] = run["run_id"]
    return busy


def start(
    config: RunConfig,
    db: str | os.PathLike[str] | None = None,
    secrets: dict[str, str] | None = None,
    started_by: str | None = None,
) -> str:
    """Validate, create the run row and start its process on this host; return the run id.

    `secrets` maps environment variable names (a lane's api_key_env) to keys read
    from `.streamlit/secrets.toml`; they reach the child through its environment
    only, never its command line, the config file or the store. So does a server
    database's URL (its password would show in every user's `ps` otherwise).
    `started_by` is who asked (the dashboard's logged-in user), recorded with the run.

    Raises ConfigError for a config that cannot run and EndpointBusy when one of
    its endpoints is already being benchmarked (one active run per endpoint).
    """
    validate_config(config)
    busy = busy_endpoints(config, db)
    if busy:
        url, other = next(iter(busy.items()))
        raise EndpointBusy(f"{url} is busy with run {other}; wait for it or cancel it first")
    run_id = new_run_id()
    config_file = jobs_dir(db) / f"{run_id}.json"
    config_file.write_text(json.dumps(config.to_dict(), ensure_ascii=False), encoding="utf-8")
    with store.opened(db) as conn:
        store.create_run(
            conn,
            run_id,
            config.to_dict(),
            label=config.label,
            status="pending",
            started_by=started_by,
        )
    chosen = store.target(db)
    args = [sys.executable, "-m", "lib.cli", "run", "--config", str(config_file)]
    args += ["--run-id", run_id]
    child_env = {**os.environ, **(secrets or {})}
    if chosen.path is not None:
        args += ["--db", str(chosen.path)]
    else:
        child_env["SERVESCOPE_DB"] = chosen.url or ""
    if started_by:
        child_env["SERVESCOPE_USER"] = started_by
    log = log_path(run_id, db).open("ab")
    try:
        proc = subprocess.Popen(
            args,
            cwd=store.PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the dashboard and its reruns
            env=child_env,
        )
    finally:
        log.close()
    with store.opened(db) as conn:
        store.update_run(conn, run_id, pid=proc.pid)
    # Reap the child when it exits so it does not linger as a zombie.
    threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()
    return run_id


def cancel(run_id: str, db: str | os.PathLike[str] | None = None) -> bool:
    """Ask a run to stop (SIGTERM: it records in-flight requests as cancelled). A run on
    another host is not this machine's to stop: False."""
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        if run is None or run["status"] not in ACTIVE or not on_this_host(run):
            return False
        store.update_run(conn, run_id, cancel_requested=time.time())
        if not process_alive(run["pid"], run_id):
            store.update_run(conn, run_id, status="cancelled", finished_at=time.time())
            store.close_levels(conn, run_id, "cancelled", time.time())
            return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(run["pid"], signal.SIGTERM)
    return True


def on_this_host(run: dict[str, Any]) -> bool:
    """Whether the run's process is this machine's (runs stored before hosts were
    recorded are)."""
    return run.get("host") in (None, "", current_host())


def reconcile(db: str | os.PathLike[str] | None = None) -> list[str]:
    """Mark this host's runs whose process is gone as failed; return their ids. Another
    host's run is never judged here: its pid means nothing on this machine."""
    dead = []
    now = time.time()
    if store.reading_only():
        return dead  # a viewer changes nothing; an operator's page or CLI will
    with store.opened(db) as conn:
        for run in store.list_runs(conn):
            if run["status"] not in ACTIVE or not on_this_host(run):
                continue
            if process_alive(run["pid"], run["run_id"]):
                continue
            if run["pid"] is None and now - run["created_at"] < PENDING_GRACE_S:
                continue  # being started right now
            if run.get("cancel_requested"):
                # Killed by our own SIGTERM before it could say so itself.
                status = "cancelled"
                store.update_run(conn, run["run_id"], status=status, finished_at=now)
            else:
                status = "failed"
                reason = _death_reason(run["run_id"], db)
                store.update_run(conn, run["run_id"], status=status, error=reason, finished_at=now)
            store.close_levels(conn, run["run_id"], status, now)
            _stop_orphaned_engines(conn, run["run_id"])
            dead.append(run["run_id"])
    return dead


def _stop_orphaned_engines(conn: Any, run_id: str) -> None:
    """A matrix whose process died leaves its current engine running in a session of its
    own: stop it (and its children) by the token its record keeps."""
    for lane in store.get_lanes(conn, run_id):
        process = lane.get("engine_process") or {}
        if process.get("state") in ("starting", "running") and process.get("token"):
            stop_orphans(process["token"])
            store.set_lane_process(
                conn,
                run_id,
                lane["lane_idx"],
                {
                    **process,
                    "state": "failed",
                    "error": "the run's process died; servescope stopped the engine",
                },
            )


def _death_reason(run_id: str, db: str | os.PathLike[str] | None) -> str:
    """The last line the run's process wrote, else a generic reason."""
    with contextlib.suppress(OSError):
        lines = log_path(run_id, db).read_text(encoding="utf-8", errors="replace").splitlines()
        for line in reversed(lines):
            if line.strip():
                return f"the run's process ended: {line.strip()[:300]}"
    return "the run's process ended unexpectedly; what finished is kept"


def active_runs(
    db: str | os.PathLike[str] | None = None, local_only: bool = False
) -> list[dict[str, Any]]:
    """Runs still pending or running (after reconciling dead ones), on any host, or on
    this one only with `local_only` (an endpoint or a matrix is busy per machine)."""
    reconcile(db)
    with store.opened(db) as conn:
        runs = [r for r in store.list_runs(conn) if r["status"] in ACTIVE]
    return [r for r in runs if on_this_host(r)] if local_only else runs


__all__ = [
    "ConfigError",
    "EndpointBusy",
    "active_runs",
    "cancel",
    "on_this_host",
    "reconcile",
    "start",
]
