"""One engine started from a recipe: spawned, watched, waited for, stopped with its children.

``start()`` resolves the program (the allow-list), picks the port (the recipe's, refused
when another process holds it; else a free one), and spawns the argument list in a
session of its own, output appended to the log beside the run, with a token in its
environment so a child that left the process group is still found at the end. A watcher
thread samples the process tree's memory from that moment (the first sample is taken
before ``start`` returns) and reads new log lines for the memory phases.

``wait_ready()`` polls until the engine answers and serves its model, the process exits,
or the recipe's timeout passes; only a server whose process tree listens on the port
counts, so another program on that port is never mistaken for it. ``stop()`` sends
SIGTERM to the group and every descendant, SIGKILL after a grace period, and checks that
nothing carrying the token is left. ``record()`` is what the run keeps per lane
(``engine_process``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from lib.core.recipes import OLLAMA, EngineRecipe
from lib.core.records import Sample
from lib.launch import command, phases
from lib.launch.executables import LaunchRefused, Program, resolve
from lib.telemetry.process_memory import MIB, ProcessMemorySampler, nvml_tree_reader, tree

TOKEN_VAR = "SERVESCOPE_ENGINE_TOKEN"
LOG_TAIL_LINES = 20
STOP_GRACE_S = 20.0
WATCH_INTERVAL_S = 0.5


class LaunchFailed(Exception):
    """The engine did not come up; the message is one line, ``log_tail`` the details."""

    def __init__(self, message: str, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail or []


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((command.HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((command.HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of the log (without servescope's own header)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [line[:400] for line in kept[-lines:]]


class EngineProcess:
    """An engine started from ``recipe``; memory samples go to ``sink`` as they are taken."""

    def __init__(
        self,
        recipe: EngineRecipe,
        log_path: Path,
        sink: Callable[[list[Sample]], None] = lambda samples: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recipe = recipe
        self.log_path = log_path
        self.sink = sink
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.port = 0
        self.argv: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.program: Program | None = None
        self.sampler: ProcessMemorySampler | None = None
        self.phases: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self.ready_s: float | None = None
        self.exit_code: int | None = None
        self.exit_reason: str | None = None
        self.error: str | None = None
        self.leftover: list[int] = []
        self._seen: set[str] = set()
        self._log_offset = 0
        self._stop_watch = threading.Event()
        self._watch: threading.Thread | None = None
        self._close_gpu: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    # --- start --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return command.base_url(self.recipe, self.port)

    def start(self) -> None:
        """Spawn the engine; LaunchRefused (not allowed) or LaunchFailed (no port, no exec)."""
        self.program = resolve(self.recipe)
        if self.recipe.port is not None:
            if not port_free(self.recipe.port):
                raise LaunchFailed(f"port {self.recipe.port} is taken by another process")
            self.port = self.recipe.port
        else:
            self.port = free_port()
        self.argv, extra_env = command.build(self.recipe, self.program, self.port)
        # The store's URL may hold a password: an engine has no use for it.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "SERVESCOPE_DB") and k.lower() not in self.program.drop_env
        }
        env.update(extra_env)
        env[TOKEN_VAR] = self.token
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            self._log_offset = out.tell()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.program.cwd,
                    start_new_session=True,  # its own group: stopped as a whole
                    close_fds=True,
                )
            except OSError as exc:
                raise LaunchFailed(f"could not start {self.argv[0]}: {exc.strerror}") from None
        self.started_at = self.clock()
        gpu_reader, self._close_gpu = nvml_tree_reader()
        self.sampler = ProcessMemorySampler(self.proc.pid, self.sink, gpu_reader, self.clock)
        self.sampler.sample()  # memory from the first moment, before anything else
        self.mark(phases.STARTED, self.started_at)
        self._watch = threading.Thread(target=self._watch_loop, name="engine-watch", daemon=True)
        self._watch.start()

    def _watch_loop(self) -> None:
        while not self._stop_watch.wait(WATCH_INTERVAL_S):
            self._tick()

    def _tick(self) -> None:
        if self.sampler is not None:
            with contextlib.suppress(Exception):  # the watcher never fails the run
                self.sampler.sample()
        for phase in phases.phases_in(self.recipe.engine, self._new_log_lines(), self._seen):
            self.mark(phase)

    def _new_log_lines(self) -> list[str]:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read(1_000_000)
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._log_offset += end + 1
        return data[: end + 1].decode(errors="replace").splitlines()

    def mark(self, phase: str, t: float | None = None) -> None:
        """Stamp ``phase`` now (or at ``t``) with the memory the tree holds."""
        with self._lock:
            if phase in self._seen:
                return
            self._seen.add(phase)
            rss = self.sampler.latest_rss_bytes if self.sampler else 0
            entry = {"phase": phase, "t": t if t is not None else self.clock()}
            entry["rss_mib"] = round(rss / MIB)
            self.phases.append(entry)

    # --- readiness ----------------------------------------------------------------

    def wait_ready(self, should_stop: Callable[[], bool] = lambda: False) -> float:
        """Block until the engine serves its model; returns seconds since spawn.

        LaunchFailed when the process exits, the timeout passes or ``should_stop`` says
        so, each with the log's last lines.
        """
        assert self.proc is not None and self.started_at is not None
        deadline = time.monotonic() + float(self.recipe.ready_timeout_s)
        while True:
            code = self.proc.poll()
            if code is not None:
                self._tick()
                raise self._failure(f"the engine exited during start-up (exit code {code})")
            if self._answers() and self._listens():
                self._tick()
                self.ready_s = round(self.clock() - self.started_at, 2)
                self.mark(phases.READY)
                self._after_ready()
                return self.ready_s
            if should_stop():
                raise self._failure("the run was cancelled while the engine started")
            if time.monotonic() > deadline:
                timeout = float(self.recipe.ready_timeout_s)
                raise self._failure(f"the engine was not ready after {timeout:.0f} s")
            time.sleep(0.5)

    def _failure(self, message: str) -> LaunchFailed:
        self.error = message
        return LaunchFailed(message, log_tail(self.log_path))

    def _answers(self) -> bool:
        root = command.base_url(self.recipe, self.port).removesuffix("/v1")
        try:
            if self.recipe.engine == OLLAMA:
                return httpx.get(f"{root}/api/version", timeout=2.0).status_code == 200
            response = httpx.get(f"{root}/v1/models", timeout=2.0)
            if response.status_code != 200:
                return False
            ids = {str(m.get("id")) for m in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return self.recipe.served() in ids

    def _listens(self) -> bool:
        """True when a process of this engine's tree listens on its port (or when the
        system will not say: then the answer above stands)."""
        assert self.proc is not None
        for proc in tree(self.proc.pid):
            try:
                conns = proc.net_connections(kind="tcp")
            except psutil.AccessDenied:
                return True
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns):
                return True
        return False

    def _after_ready(self) -> None:
        if self.program is not None and self.program.sandbox and self.proc is not None:
            with contextlib.suppress(Exception):  # pinning is a speed-up, never required
                from sandbox.recipes import after_ready

                after_ready(self.recipe.engine, self.proc.pid)

    # --- stop ---------------------------------------------------------------------

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the engine and every child; record how it ended and what was left."""
        if self.proc is None:
            return
        alive = self.proc.poll() is None
        if not alive and self.exit_reason is None:
            self.exit_reason = "exited by itself"
        procs = self._ours()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not procs:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            # The group got the signal once; a second SIGTERM makes llama-server skip its
            # clean shutdown ("Received second interrupt"), so only processes that left the
            # group are signalled one by one.
            for proc in procs:
                with contextlib.suppress(psutil.Error, OSError):
                    if os.getpgid(proc.pid) != self.proc.pid:
                        proc.send_signal(sig)
            _, procs = psutil.wait_procs(procs, timeout=grace_s if sig == signal.SIGTERM else 5)
            if sig == signal.SIGTERM and procs:
                self.exit_reason = f"killed: still running {grace_s:.0f} s after SIGTERM"
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.exit_code = self.proc.returncode
        if self.exit_reason is None:
            self.exit_reason = "stopped by servescope"
        self._stop_watch.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self._tick()
        self.mark(phases.STOPPED)
        self._close_gpu()
        self.leftover = [p.pid for p in self._ours()]

    def _ours(self) -> list[psutil.Process]:
        """Every live process of this engine: the tree, and anything with its token."""
        assert self.proc is not None
        found = {p.pid: p for p in tree(self.proc.pid) if _alive(p)}
        found.update((p.pid, p) for p in carrying(self.token))
        return list(found.values())

    # --- the record ---------------------------------------------------------------

    def not_started(self, message: str) -> dict[str, Any]:
        """The record of an engine that was refused or could not be spawned."""
        self.error, self.exit_reason = message, "not started"
        return self.record()

    def record(self) -> dict[str, Any]:
        """What the run keeps of this engine (the lane's ``engine_process``)."""
        peaks = self.sampler.peaks_mib() if self.sampler else {"rss": None, "gpu": None}
        started = self.started_at or 0.0
        return {
            "ready_s": self.ready_s,
            "exit": self.exit_code,
            "exit_reason": self.exit_reason,
            "peak_memory_mib": peaks["rss"],
            "peak_gpu_memory_mib": peaks["gpu"],
            "log_tail": log_tail(self.log_path),
            "log": str(self.log_path) if self.log_path.exists() else None,
            "argv": list(self.argv),
            "port": self.port or self.recipe.port,
            "pid": self.proc.pid if self.proc else None,
            "started_at": self.started_at,
            "first_sample_t": self.sampler.first_t if self.sampler else None,
            "phases": [
                {**p, "at_s": round(p["t"] - started, 2)}
                for p in sorted(self.phases, key=lambda p: p["t"])
            ],
            "error": self.error,
            "leftover_pids": list(self.leftover),
            # Not a secret: it only finds this engine's processes if the run dies.
            "token": self.token,
        }


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def carrying(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``token``: an engine and every child it
    started, the ones that left its process group included."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            proc = psutil.Process(pid)
        except (OSError, psutil.Error):
            continue
        if _alive(proc):
            found.append(proc)
    return found


def stop_orphans(token: str, grace_s: float = 10.0) -> list[int]:
    """Stop every process carrying ``token`` (an engine whose run process died before it
    could stop it); returns the pids that were signalled."""
    procs = carrying(token)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in procs]


__all__ = [
    "EngineProcess",
    "LaunchFailed",
    "LaunchRefused",
    "log_tail",
    "stop_orphans",
]
