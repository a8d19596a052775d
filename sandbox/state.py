"""The two small JSON files other processes read: ``state.json`` and ``progress.json``.

Both are written atomically (temporary file + rename) because the dashboard may read them
at any moment while ``up`` runs in the background.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.paths import Home, home


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    """The current time as an ISO 8601 string in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(where: Home | None = None) -> dict[str, Any]:
    """The recorded engines (``{"engines": []}`` when nothing was started)."""
    data = _read_json((where or home()).state_file)
    if not data or not isinstance(data.get("engines"), list):
        return {"engines": []}
    return data


def write_state(data: dict[str, Any], where: Home | None = None) -> None:
    """Record the started engines."""
    _write_json((where or home()).state_file, data)


def clear_state(where: Home | None = None) -> None:
    """Forget the started engines (after ``down`` or a failed ``up``)."""
    (where or home()).state_file.unlink(missing_ok=True)


def read_progress(where: Home | None = None) -> dict[str, Any] | None:
    """The last progress record written by ``up``, or None when there is none."""
    return _read_json((where or home()).progress_file)


def _stdout_log(where: Home) -> str | None:
    """``logs/up.log`` when this process writes its output there (a background ``up``)."""
    up_log = where.logs / "up.log"
    try:
        return str(up_log) if os.path.samestat(os.fstat(1), os.stat(up_log)) else None
    except OSError:
        return None


class Reporter:
    """Prints progress lines and mirrors the latest one into ``progress.json``."""

    def __init__(self, where: Home | None = None, quiet: bool = False) -> None:
        self.home = where or home()
        self.quiet = quiet
        self.started = time.monotonic()
        self.own_log = _stdout_log(self.home)

    def __call__(self, phase: str, message: str, **extra: Any) -> None:
        """Report one step: ``phase`` is install, models, start, ready, failed or stopped."""
        if not self.quiet:
            print(f"sandbox: [{phase}] {message}", flush=True)
        self.record(phase, message, **extra)

    def record(self, phase: str, message: str, **extra: Any) -> None:
        """Write ``progress.json`` only (for messages printed some other way)."""
        record = {
            "phase": phase,
            "message": message,
            "updated_at": now_iso(),
            "pid": os.getpid(),
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "log": self.own_log,
        }
        record.update(extra)
        try:
            _write_json(self.home.progress_file, record)
        except OSError as exc:  # progress is advisory: never fail a command over it
            print(f"sandbox: could not write {self.home.progress_file}: {exc}", file=sys.stderr)
