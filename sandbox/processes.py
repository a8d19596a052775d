"""Starting engine processes detached, recognising them later, and stopping exactly them.

Each engine runs in its own session (so it outlives ``up`` and its process group can be
signalled as a whole) with a per-``up`` token and its sandbox home in its environment, and
the home as its working directory. ``down`` only touches a process whose environment
carries that token and whose home is ``down``'s own, so a recycled pid or port of someone
else's process, or the engines of another checkout or home (a copied ``state.json``
names their tokens too), are never killed.
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
HOME_VAR = "SERVESCOPE_SANDBOX_HOME"  # as sandbox.paths.home() reads it


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


def _env_value(pid: int, name: str) -> str | None:
    prefix = f"{name}=".encode()
    for item in _environ(pid).split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def in_home(pid: int, root: Path) -> bool:
    """True when ``pid`` belongs to the sandbox home ``root``: its environment names that
    home (``up`` sets it for the engines it starts), or its working directory is the home
    (``spawn`` starts engines there; engines from before the variable was set have only
    this)."""
    named = _env_value(pid, HOME_VAR)
    cwd = _cwd(pid)
    if named and cwd is not None and _same_dir(cwd / named, root):  # relative: from its cwd
        return True
    return cwd is not None and _same_dir(cwd, root)


def is_sandbox_up(pid: int, root: Path) -> bool:
    """True when ``pid`` is ``python -m sandbox up`` working on the home ``root``.

    Its home is what ``sandbox.paths.home()`` gives in that process: its
    ``SERVESCOPE_SANDBOX_HOME`` (relative to its working directory), else ``.sandbox``
    of the checkout it runs from (``-m`` imports ``sandbox`` from its working directory).
    A process whose home cannot be told is not ours.
    """
    args = cmdline(pid)
    at = next((i for i in range(len(args) - 2) if args[i : i + 2] == ["-m", "sandbox"]), None)
    if at is None or args[at + 2] != "up" or _is_zombie(pid):
        return False
    cwd = _cwd(pid)
    if cwd is None:
        return False
    named = _env_value(pid, HOME_VAR)
    if named:
        return _same_dir(cwd / named, root)
    return (cwd / "sandbox" / "__main__.py").is_file() and _same_dir(cwd / ".sandbox", root)


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


def processes_with_token(token: str, root: Path | None = None) -> Iterator[int]:
    """Every live process that carries ``token`` (the engines and their children), and
    with ``root`` only those of that sandbox home (see ``in_home``)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        if not pid or needle not in _environ(pid).split(b"\0") or _is_zombie(pid):
            continue
        if root is None or in_home(pid, root):
            yield pid


def is_ours(pid: int, token: str, marker: str, root: Path | None = None) -> bool:
    """True when ``pid`` carries ``token``, its command line contains ``marker`` and, with
    ``root``, it belongs to that sandbox home."""
    return (
        carries_token(pid, token)
        and any(marker in part for part in cmdline(pid))
        and (root is None or in_home(pid, root))
    )


def stop(
    pgid: int, token: str, marker: str, grace_s: float = 20.0, root: Path | None = None
) -> bool:
    """Stop the process group ``pgid`` and every straggler carrying ``token``; with
    ``root``, only processes of that sandbox home.

    The group is signalled only while its leader is ours (token and ``marker`` in its
    command line, and of ``root``), so a recycled group id belonging to someone else is
    never hit; stragglers (vLLM's renamed engine core, say) are recognised by the token
    (and home) alone.

    SIGTERM first (vLLM shuts its engine core down cleanly), SIGKILL after ``grace_s``.
    Returns True when something was stopped.
    """
    pids = set(processes_with_token(token, root))
    if not pids:
        return False
    group_ok = pgid in pids and is_ours(pgid, token, marker, root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if group_ok:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            pids = set(processes_with_token(token, root))
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
