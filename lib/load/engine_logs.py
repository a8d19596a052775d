"""Where an engine under test writes its log, and its last lines, for a failed lane.

Only the sandbox's engines are known here (they record their log in the sandbox's
state); for any other server the user knows where its log is. Read once, when a
level fails, and stored with the run: the report still says why after the sandbox
was restarted and its log rewritten.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

from lib.endpoints import url_key

TAIL_LINES = 20
MAX_LINE = 300


def log_tail(path: str | os.PathLike[str], lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` non-empty lines of a text file, each cut to MAX_LINE characters."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            last = deque((line.rstrip() for line in fh if line.strip()), maxlen=lines)
    except OSError:
        return []
    return [line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…" for line in last]


def sandbox_engine_report(base_url: str) -> dict[str, Any] | None:
    """For a sandbox engine at `base_url`: its name, whether it still answers, its log
    path and the log's last lines. None for any other server or without a sandbox."""
    if os.environ.get("SERVESCOPE_SANDBOX", "").lower() == "off":
        return None
    try:
        import sandbox  # lazy: servescope works without the sandbox package

        engines = sandbox.status().get("engines", [])
    except Exception:  # no sandbox, or its state unreadable: nothing to add
        return None
    wanted = url_key(base_url)
    for eng in engines:
        if eng.get("base_url") and url_key(str(eng["base_url"])) == wanted:
            log = eng.get("log")
            return {
                "name": eng.get("name"),
                "ready": bool(eng.get("ready")),
                "log": str(log) if log else None,
                "tail": log_tail(Path(log)) if log else [],
            }
    return None
