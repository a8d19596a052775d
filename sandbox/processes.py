"""Starting engine processes detached, recognising them later, and stopping exactly them.

Each engine runs in its own session (so it outlives ``up`` and its process group can be
signalled as a whole) with a per-``up`` token in its environment. ``down`` only touches a
process whose environment carries that token, so a recycled pid or port of someone
else's process is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

TOKEN_VAR = "SERVESCOPE_SANDBOX_TOKEN"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (servers set SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, avoid: Sequence[int] = ()) -> int:
    """``preferred`` when it is free, else a free port the kernel picks."""
    if preferred and preferred not in avoid and port_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def spawn(
    args: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` (a list, never a shell string) detached, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # own session and process group: survives `up`
            close_fds=True,
        )


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def cmdline(pid: int) -> list[str]:
    """The argument list of ``pid`` ([] when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def carries_token(pid: int, token: str) -> bool:
    """True when ``pid`` is alive and was started by the ``up`` that issued ``token``."""
    return f"{TOKEN_VAR}={token}".encode() in _environ(pid).split(b"\0") and not _is_zombie(pid)


def processes_with_token(token: str) -> Iterator[int]:
    """Every live process that carries ``token`` (the engines and their children)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        if pid and needle in _environ(pid).split(b"\0") and not _is_zombie(pid):
            yield pid


def is_ours(pid: int, token: str, marker: str) -> bool:
    """True when ``pid`` carries ``token`` and its command line contains ``marker``."""
    return carries_token(pid, token) and any(marker in part for part in cmdline(pid))


def stop(pgid: int, token: str, marker: str, grace_s: float = 20.0) -> bool:
    """Stop the process group ``pgid`` and every straggler carrying ``token``.

    The group is signalled only while its leader is ours (token and ``marker`` in its
    command line), so a recycled group id belonging to someone else is never hit;
    stragglers (vLLM's renamed engine core, say) are recognised by the token alone.

    SIGTERM first (vLLM shuts its engine core down cleanly), SIGKILL after ``grace_s``.
    Returns True when something was stopped.
    """
    pids = set(processes_with_token(token))
    if not pids:
        return False
    group_ok = pgid in pids and is_ours(pgid, token, marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if group_ok:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            pids = set(processes_with_token(token))
            if not pids:
                return True
            time.sleep(0.2)
        group_ok = group_ok and pgid in pids
    return True


def reap(proc: subprocess.Popen[bytes] | None) -> None:
    """Collect a child's exit status so it does not linger as a zombie."""
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=0.1)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)
