"""The sandbox commands: up, down, status and ensure.

``up`` installs what is missing, prepares the models, starts the engines detached, waits
until each one serves its models, records them in ``state.json`` and returns. Any failure
stops what this ``up`` started, so a failed ``up`` leaves nothing running.

One module on purpose (a little over 400 lines): the four commands share the lock, the
state file and the rule that a failure stops what was started; launching one engine is
sandbox/engines.py, telling its processes apart sandbox/processes.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandbox import cpu_layout, engines, ollama_register, processes
from sandbox.engines import MAX_MODEL_LEN
from sandbox.errors import SandboxError
from sandbox.install import ensure_installed
from sandbox.models import ModelChoice, choose, prepare, venvs_needed
from sandbox.paths import REPO_ROOT, Home, home
from sandbox.state import Reporter, clear_state, now_iso, read_progress, read_state, write_state

ENGINE_NAMES = ("vllm", "llama")
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_VLLM_URL = "http://127.0.0.1:8000/v1"
HEARTBEAT_S = 10.0


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while ``up`` was working (``down`` sends SIGTERM)."""


@dataclass
class UpOptions:
    """What ``up`` was asked for."""

    engines: Sequence[str] = ENGINE_NAMES
    model_path: str | None = None
    model: str | None = None  # a name from models.MODEL_NAMES; None: the default
    vllm_port: int | None = None
    llama_port: int | None = None
    timeout_s: float = 600.0
    max_model_len: int = MAX_MODEL_LEN


@contextlib.contextmanager
def _lock(where: Home, report: Reporter, timeout_s: float) -> Iterator[None]:
    """One sandbox command that changes state at a time (``up`` may run in the background)."""
    where.ensure()
    with where.lock_file.open("a+") as fh:
        deadline = time.monotonic() + timeout_s
        said = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    report("start", "another sandbox command is running; waiting for it")
                    said = True
                if time.monotonic() > deadline:
                    raise SandboxError("another sandbox command kept the lock too long") from None
                time.sleep(1.0)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _engine_alive(where: Home, engine: dict[str, Any]) -> bool:
    try:
        pid, token, marker = int(engine["pid"]), str(engine["token"]), str(engine["marker"])
    except (KeyError, TypeError, ValueError):
        return False
    return processes.is_ours(pid, token, marker, where.root)


def status(where: Home | None = None) -> dict[str, Any]:
    """The engines ``up`` started: ``{"engines": [{name, kind, base_url, models, ready}]}``.

    ``ready`` is checked live: the process is ours and its ``/v1/models`` lists every
    model. Extra keys (pid, port, log, started_at, startup_s, cpu) help humans and tests;
    ``model`` (while engines are recorded) says what they serve and where it came from.
    """
    where = where or home()
    state = read_state(where)
    result = []
    for engine in state["engines"]:
        alive = _engine_alive(where, engine)
        models = list(engine.get("models", []))
        result.append(
            {
                "name": engine.get("name"),
                "kind": "openai",
                "base_url": engine.get("base_url"),
                "models": models,
                "ready": alive and engines.is_ready(str(engine.get("base_url")), models),
                "pid": engine.get("pid"),
                "port": engine.get("port"),
                "log": engine.get("log"),
                "started_at": engine.get("started_at"),
                "startup_s": engine.get("startup_s"),
                "cpu": engine.get("cpu"),
            }
        )
    model = state.get("model")
    return {"engines": result, "model": model} if result and model else {"engines": result}


def progress(where: Home | None = None) -> dict[str, Any] | None:
    """The latest progress record of ``up`` (see the package docstring), or None.

    Adds ``active``: True while the ``up`` that wrote it is still working.
    """
    where = where or home()
    record = read_progress(where)
    if record is None:
        return None
    pid = record.get("pid")
    running = isinstance(pid, int) and processes.is_sandbox_up(pid, where.root)
    record["active"] = bool(running) and record.get("phase") not in ("ready", "failed", "stopped")
    return record


def _pick_port(explicit: int | None, preferred: int, avoid: Sequence[int], what: str) -> int:
    if explicit is not None:
        if not 1 <= explicit <= 65535:
            raise SandboxError(f"{what} port {explicit} is not a valid port")
        if not processes.port_free(explicit):
            raise SandboxError(f"{what} port {explicit} is already in use on 127.0.0.1")
        return explicit
    return processes.free_port(preferred, avoid)


def _stop_engines(where: Home, recorded: list[dict[str, Any]]) -> list[str]:
    """Stop the recorded engines that prove to be this home's (token, marker and home);
    a record naming anyone else's process (a state.json copied from another checkout,
    say) stops nothing."""
    stopped = []
    for engine in recorded:
        try:
            pgid, token, marker = int(engine["pgid"]), str(engine["token"]), str(engine["marker"])
        except (KeyError, TypeError, ValueError):
            continue
        if processes.stop(pgid, token, marker, root=where.root):
            stopped.append(str(engine.get("name")))
    return stopped


def up(options: UpOptions, report: Reporter) -> dict[str, Any]:
    """Start the sandbox engines and return ``status()``; raises SandboxError on failure."""
    where = report.home
    unknown = set(options.engines) - set(ENGINE_NAMES)
    if unknown or not options.engines:
        raise SandboxError(f"unknown engine(s) {sorted(unknown)}; choose from vllm, llama")
    # Bad input fails here, before anything is installed or started.
    # The machine-size check reads free memory: skipped while sandbox engines already
    # hold some of it (that `up` then finds them running, or says what they serve).
    engaged = bool(read_state(where)["engines"])
    choice = choose(options.model_path, options.model, None if engaged else where)
    if "vllm" in options.engines and choice.hf_dir is None and choice.kind == "path":
        raise SandboxError(f"vLLM needs config.json and *.safetensors; {choice.name} has none")
    if "llama" in options.engines and not choice.ggufs and not choice.needs_conversion():
        raise SandboxError(f"llama.cpp needs GGUF files; {choice.name} has none")
    if options.vllm_port is not None and options.vllm_port == options.llama_port:
        raise SandboxError(f"vLLM and llama.cpp cannot share port {options.vllm_port}")

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    try:
        with _lock(where, report, options.timeout_s):
            return _up_locked(where, options, choice, report)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _up_locked(
    where: Home, options: UpOptions, choice: ModelChoice, report: Reporter
) -> dict[str, Any]:
    state = read_state(where)
    recorded = state["engines"]
    if recorded:
        current = status(where)["engines"]
        names = {e["name"] for e in current if e["ready"]}
        serving = (state.get("model") or {}).get("choice")
        if names and serving and serving != choice.name:
            raise SandboxError(
                f"the sandbox already serves {serving}; run `python -m sandbox down` first "
                f"to serve {choice.name}"
            )
        if names >= {engines.DISPLAY_NAMES[e] for e in options.engines}:
            urls = ", ".join(e["base_url"] for e in current)
            report("ready", f"already running: {urls} (run down first to change anything)")
            return status(where)
        # A half-dead earlier start: clear it so ports and state are free again.
        _stop_engines(where, recorded)
        clear_state(where)

    vllm_port = llama_port = 0
    if "vllm" in options.engines:
        vllm_port = _pick_port(options.vllm_port, engines.VLLM_DEFAULT_PORT, (), "vLLM")
    if "llama" in options.engines:
        llama_port = _pick_port(
            options.llama_port, engines.LLAMA_DEFAULT_PORT, (vllm_port,), "llama.cpp"
        )

    needed = set(options.engines) | venvs_needed(choice, where)
    ensure_installed(where, [n for n in ENGINE_NAMES if n in needed], report)
    models = prepare(where, choice, report)
    model_record = {**models.to_json(), "choice": choice.name}
    model_record["ollama"] = _register_in_ollama(models.ggufs, report)

    launches = []
    if "vllm" in options.engines:
        launches.append(engines.vllm_launch(where, models, vllm_port, options.max_model_len))
    if "llama" in options.engines:
        launches.append(engines.llama_launch(where, models, llama_port, options.max_model_len))

    started: list[tuple[engines.Launch, subprocess.Popen[bytes], dict[str, Any]]] = []
    try:
        for launch in launches:
            token = uuid.uuid4().hex
            env = {
                k: v
                for k, v in os.environ.items()
                if k != "PYTHONPATH" and k.lower() not in launch.drop_env
            }
            env.update(launch.env)
            env[processes.TOKEN_VAR] = token
            env[processes.HOME_VAR] = str(where.root)  # whose engine it is, for `down`
            launch.log.write_text("", encoding="utf-8")
            proc = processes.spawn(launch.args, launch.log, env, cwd=where.root)
            record = {
                "name": launch.name,
                "kind": "openai",
                "base_url": launch.base_url,
                "models": launch.models,
                "port": launch.port,
                "pid": proc.pid,
                "pgid": proc.pid,  # start_new_session: the pid leads its own group
                "token": token,
                "marker": launch.marker,
                "log": str(launch.log),
                "started_at": now_iso(),
                "startup_s": None,
            }
            started.append((launch, proc, record))
            # Recorded at once, so `down` can stop it even if this `up` is killed.
            write_state({"engines": [r for _, _, r in started], "model": model_record}, where)
            log = where.rel(launch.log)
            report("start", f"{launch.name}: starting on {launch.base_url} (log {log})")
        _wait_ready(started, options.timeout_s, report)
    except BaseException:
        _stop_engines(where, [r for _, _, r in started])
        for _, proc, _ in started:
            processes.reap(proc)
        clear_state(where)
        raise
    write_state({"engines": [r for _, _, r in started], "model": model_record}, where)
    summary = "; ".join(f"{r['name']} {r['base_url']}" for _, _, r in started)
    report("ready", summary)
    return status(where)


def _register_in_ollama(ggufs: dict[str, Path], report: Reporter) -> dict[str, Any] | None:
    """Where a local Ollama runs (an ``ollama`` executable on the PATH and a server that
    answers), the same GGUF variants are registered into it, so Ollama, vLLM and llama.cpp
    answer from one model. A failure is reported, not fatal: the sandbox engines still run.
    """
    if not ggufs or ollama_register.ollama_on_path() is None:
        return None
    url = engine_urls()["ollama"]
    if not url or not _answers("ollama", url):
        report("models", f"ollama: on the PATH but no server answers at {url or '(disabled)'}")
        return {"url": url, "tags": [], "error": "no server answered"}
    try:
        tags = ollama_register.register(ggufs, url, report)
    except SandboxError as exc:
        report("models", exc.message)
        return {"url": url, "tags": [], "error": exc.message}
    return {"url": url, "tags": tags, "error": None}


def _wait_ready(
    started: list[tuple[engines.Launch, subprocess.Popen[bytes], dict[str, Any]]],
    timeout_s: float,
    report: Reporter,
) -> None:
    began = time.monotonic()
    pending = {launch.name for launch, _, _ in started}
    next_beat = began + HEARTBEAT_S
    while pending:
        for launch, proc, record in started:
            if launch.name not in pending:
                continue
            rc = proc.poll()
            if rc is not None:
                detail = engines.last_error_line(launch.log)
                detail = f": {detail}" if detail else ""
                raise SandboxError(
                    f"{launch.name} exited during start-up (exit code {rc}){detail}", launch.log
                )
            if engines.is_ready(launch.base_url, launch.models):
                record["startup_s"] = round(time.monotonic() - began, 1)
                if launch.venv == "vllm":
                    # Once its engine process exists: see sandbox.cpu_layout for why.
                    record["cpu"] = cpu_layout.pin_vllm(proc.pid)
                pending.discard(launch.name)
                report("start", f"{launch.name}: ready in {record['startup_s']:.0f} s")
        elapsed = time.monotonic() - began
        if pending and elapsed > timeout_s:
            launch = next(la for la, _, _ in started if la.name in pending)
            raise SandboxError(f"{launch.name} was not ready after {timeout_s:.0f} s", launch.log)
        if pending and time.monotonic() >= next_beat:
            report("start", f"waiting for {', '.join(sorted(pending))} ({elapsed:.0f} s)")
            next_beat += HEARTBEAT_S
        if pending:
            time.sleep(0.5)


def down(report: Reporter) -> list[str]:
    """Stop what this home's ``up`` started (and a background ``up`` still working);
    returns names.

    Only processes that prove they are this home's are signalled: the ``up`` named in
    ``progress.json`` only while its command line is ``python -m sandbox up`` and its
    environment or working directory gives this home (``processes.is_sandbox_up``); the
    engines in ``state.json`` only while they carry their ``up``'s token, their marker
    and this home (``processes.in_home``). A stale or copied record naming another
    checkout's or home's ``up`` or engines, or a recycled pid, is left alone.
    """
    where = report.home
    stopped: list[str] = []
    record = read_progress(where)
    if record and record.get("phase") not in ("ready", "failed", "stopped"):
        pid = record.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and processes.is_sandbox_up(pid, where.root):
            # The background `up` cleans up after itself on SIGTERM; wait for it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while processes.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            stopped.append(f"up (pid {pid})")
    with _lock(where, report, 60):
        stopped += _stop_engines(where, read_state(where)["engines"])
        clear_state(where)
    report("stopped", "stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return stopped


def engine_urls() -> dict[str, str]:
    """The engine URLs the dashboard uses by default (overridable by environment)."""
    return {
        "ollama": os.environ.get("SERVESCOPE_OLLAMA_URL", DEFAULT_OLLAMA_URL).rstrip("/"),
        "vllm": os.environ.get("SERVESCOPE_VLLM_URL", DEFAULT_VLLM_URL).rstrip("/"),
    }


def _answers(kind: str, url: str) -> bool:
    probe = f"{url}/api/version" if kind == "ollama" else f"{url}/models"
    try:
        return httpx.get(probe, timeout=1.5).status_code == 200
    except httpx.HTTPError:
        return False


def ensure(background: bool, report: Reporter, names: Sequence[str] = ENGINE_NAMES) -> str:
    """Start the sandbox when no engine answers at the configured URLs.

    Returns what happened: "off", "found", "running", "starting" or "started".
    """
    where = report.home
    if os.environ.get("SERVESCOPE_SANDBOX", "").lower() == "off":
        print("sandbox: SERVESCOPE_SANDBOX=off; not starting sandbox engines", flush=True)
        return "off"
    for kind, url in engine_urls().items():
        if _answers(kind, url):
            print(f"sandbox: {kind} answers at {url}; not starting sandbox engines", flush=True)
            return "found"
    if any(e["ready"] for e in status(where)["engines"]):
        print("sandbox: sandbox engines are already running", flush=True)
        return "running"
    current = progress(where)
    if current and current.get("active"):
        print(f"sandbox: sandbox engines are starting (pid {current.get('pid')})", flush=True)
        return "starting"
    if not background:
        up(UpOptions(engines=names), report)
        return "started"
    where.ensure()
    log = where.logs / "up.log"
    # The child runs from REPO_ROOT: name the home absolutely, so it works on this home
    # (a relative $SERVESCOPE_SANDBOX_HOME would point elsewhere from there) and `down`
    # can tell it is this home's.
    env = {**os.environ, processes.HOME_VAR: str(where.root)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "up", "--engines", ",".join(names)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # keeps going after `make run`'s shell moves on
        )
    reporter = Reporter(where, quiet=True)
    reporter("queued", "starting sandbox engines in the background", pid=proc.pid)
    print(
        f"sandbox: starting engines in the background (pid {proc.pid}); progress in "
        f"{where.rel(where.progress_file)}, log {where.rel(log)}",
        flush=True,
    )
    return "starting"
