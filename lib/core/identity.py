"""Who starts a run and where: recorded with every run so a team's shared history says
whose run it was and on which machine it ran.

The name is $SERVESCOPE_USER when set (a team's chosen name, or the dashboard's login
passed to the run it starts), else the OS user; the host is $SERVESCOPE_HOST, else
the machine's host name.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from typing import Any


def current_user() -> str:
    """The name runs started here are recorded under."""
    name = os.environ.get("SERVESCOPE_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (some containers)
        return f"uid {os.getuid()}"


def current_host() -> str:
    """The machine runs started here are recorded on."""
    return os.environ.get("SERVESCOPE_HOST", "").strip() or socket.gethostname()


def who_where(run: Mapping[str, Any]) -> str:
    """ "by alice on gpu-box": who started a run and on which host, as far as it was
    recorded ("" for a run stored before runs recorded either). Untrusted text: a page
    or a report escapes it."""
    who, host = (str(run.get(key) or "").strip() for key in ("started_by", "host"))
    return " ".join(part for part in (who and f"by {who}", host and f"on {host}") if part)
