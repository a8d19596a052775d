"""Installs the engines, each pinned into its own virtual environment under ``.sandbox/venvs``.

vLLM (CPU build) and llama-cpp-python want different, conflicting dependency sets, so each
gets a venv of its own. A stamp file in each venv records what was installed; a venv whose
stamp matches the pins is reused as it is. pip's cache is left on: the llama-cpp-python
wheel built from its sdist (about 4 min on 2 cores) is kept there for later installs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandbox import llama_build
from sandbox.errors import SandboxError
from sandbox.paths import (
    CUDA_ONLY_EXTRAS,
    LLAMA_PIN,
    TORCH_CPU_INDEX,
    TORCH_PIN,
    TORCH_VERSION,
    VLLM_PIN,
    Home,
)

STAMP_NAME = ".servescope-stamp.json"
HEARTBEAT_S = 30.0

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class VenvSpec:
    """One engine's venv: what to install into it and what to remove afterwards."""

    name: str
    requirements: tuple[str, ...]
    remove_after: tuple[str, ...] = ()
    needs_torch: bool = False
    # Import checked after installing, so a broken venv fails here and not at start-up.
    check_import: str = ""
    # llama-cpp-python is compiled here: from a wheel built portably (sandbox.llama_build).
    portable_llama: bool = False

    def stamp(self) -> dict[str, object]:
        """What the stamp file must say for the venv to be reused."""
        stamp: dict[str, object] = {
            "requirements": list(self.requirements),
            "removed": list(self.remove_after),
            "python": ".".join(map(str, sys.version_info[:3])),
        }
        if self.portable_llama:
            stamp["llama_build"] = llama_build.build_key(llama_build.build_level())
        return stamp


# gguf writes the GGUF files (it is also a vLLM dependency); pinned beside vLLM so the
# resolver keeps the version vLLM accepts. accelerate: transformers' GGUF loader needs it
# to dequantize the real model's GGUF into the folder vLLM serves.
VLLM_SPEC = VenvSpec(
    name="vllm",
    requirements=(VLLM_PIN, TORCH_PIN, "gguf==0.19.0", "accelerate==1.16.0"),
    remove_after=CUDA_ONLY_EXTRAS,
    needs_torch=True,
    check_import="vllm.entrypoints.openai.api_server",
)
LLAMA_SPEC = VenvSpec(
    name="llama",
    requirements=(LLAMA_PIN,),
    check_import="llama_cpp.server.app",
    portable_llama=True,
)
SPECS = {spec.name: spec for spec in (VLLM_SPEC, LLAMA_SPEC)}


def is_installed(where: Home, spec: VenvSpec) -> bool:
    """True when the venv exists and its stamp matches the pins."""
    stamp_file = where.venv(spec.name) / STAMP_NAME
    if not where.python(spec.name).exists() or not stamp_file.exists():
        return False
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(stamp.get(key) == value for key, value in spec.stamp().items())


def local_torch_wheel() -> Path | None:
    """The torch CPU wheel in a ``PIP_FIND_LINKS`` directory, if one holds it."""
    for entry in os.environ.get("PIP_FIND_LINKS", "").split():
        directory = entry.removeprefix("file://")
        if not os.path.isdir(directory):
            continue
        # Wheel names keep the "+" of the local version label.
        pattern = os.path.join(glob.escape(directory), f"torch-{TORCH_VERSION}-*.whl")
        matches = sorted(glob.glob(pattern))
        if matches:
            return Path(matches[0])
    return None


def torch_source_args() -> list[str]:
    """pip arguments that let it find torch 2.13.0+cpu, or a clear error.

    A local wheel directory is preferred; otherwise PyTorch's CPU index is added, but only
    after a short probe, so an unreachable index fails at once instead of stalling pip.
    """
    if local_torch_wheel() is not None:
        return []  # pip reads PIP_FIND_LINKS from the environment itself
    try:
        httpx.head(f"{TORCH_CPU_INDEX}/torch/", timeout=10.0, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise SandboxError(
            f"{TORCH_PIN} is in no PIP_FIND_LINKS directory and {TORCH_CPU_INDEX} "
            f"is unreachable ({type(exc).__name__}); put the wheel in a directory and set "
            "PIP_FIND_LINKS to it"
        ) from None
    return ["--extra-index-url", TORCH_CPU_INDEX]


_RUNNING: set[subprocess.Popen[bytes]] = set()
_RUNNING_LOCK = threading.Lock()


def run_logged(args: Sequence[str], log: Path, env: dict[str, str]) -> int:
    """Run ``args`` with the command line and all output appended to ``log``; the exit code."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        # Own process group, so a failed sibling or Ctrl-C can stop pip's build children too.
        proc = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        with _RUNNING_LOCK:
            _RUNNING.add(proc)
        try:
            return proc.wait()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)


def install_one(where: Home, spec: VenvSpec, extra: Sequence[str] = ()) -> None:
    """Create ``spec``'s venv and pip-install its pins (``extra``: more pip arguments, e.g.
    where torch comes from); raises SandboxError naming the log on failure."""
    log = where.logs / f"install-{spec.name}.log"
    log.write_text("", encoding="utf-8")
    venv = where.venv(spec.name)
    python = where.python(spec.name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # the project's path must not leak into the engine venv
    (venv / STAMP_NAME).unlink(missing_ok=True)

    def step(args: list[str], what: str) -> None:
        rc = run_logged(args, log, env)
        if rc != 0:
            raise SandboxError(f"{what} failed (exit code {rc})", log)

    if not python.exists():
        step([sys.executable, "-m", "venv", str(venv)], f"creating the {spec.name} venv")
    # The pip that ships with Python 3.11 resolves vLLM's large dependency set slowly.
    step([str(python), "-m", "pip", "install", "--upgrade", "pip"], "upgrading pip")
    requirements = list(spec.requirements)
    if spec.portable_llama:
        wheel = _portable_llama_wheel(python, log, env)
        requirements = [f"{wheel}[server]" if r == LLAMA_PIN else r for r in requirements]
    pins = " ".join(spec.requirements)
    step(
        [str(python), "-m", "pip", "install", "--progress-bar", "off", *extra, *requirements],
        f"installing {pins}",
    )
    if spec.remove_after:
        step(
            [str(python), "-m", "pip", "uninstall", "--yes", *spec.remove_after],
            f"removing {' '.join(spec.remove_after)}",
        )
    if spec.check_import:
        step([str(python), "-c", f"import {spec.check_import}"], f"importing {spec.check_import}")
    stamp = {**spec.stamp(), "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (venv / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def _portable_llama_wheel(python: Path, log: Path, env: dict[str, str]) -> Path:
    """The llama-cpp-python wheel built for this machine's portable level (built on a miss).

    Built with pip's own cache off: that cache keys on the sdist, not on CMAKE_ARGS, and
    would return a wheel compiled natively by an earlier install.
    """
    level = llama_build.build_level()
    cached = llama_build.cached_wheel(level)
    if cached is not None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\nreusing {cached} (portable build {level})\n")
        return cached
    target = llama_build.wheel_cache() / llama_build.build_key(level)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary"]
    args += ["llama-cpp-python", "--progress-bar", "off", "--wheel-dir", str(tmp)]
    args.append(f"llama-cpp-python=={llama_build.LLAMA_VERSION}")
    started = time.monotonic()
    try:
        rc = run_logged(args, log, {**env, **llama_build.build_env(level)})
        if rc != 0:
            raise SandboxError(f"building llama-cpp-python ({level}) failed (exit code {rc})", log)
        llama_build.record_build(tmp, level, time.monotonic() - started)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wheel = llama_build.cached_wheel(level)
    if wheel is None:
        raise SandboxError(f"llama-cpp-python ({level}) built no wheel", log)
    return wheel


def ensure_installed(where: Home, names: Sequence[str], report: Report) -> dict[str, float]:
    """Install every venv in ``names`` that is missing or stale, in parallel.

    Returns the seconds each install took (0 for a reused venv). Raises SandboxError naming
    the log of the first install that failed.
    """
    where.ensure()
    todo = [SPECS[name] for name in names if not is_installed(where, SPECS[name])]
    timings = {name: 0.0 for name in names}
    for name in names:
        if SPECS[name] not in todo:
            report("install", f"{name}: reusing {where.rel(where.venv(name))} ({_pins(name)})")
    if not todo:
        return timings
    # Where torch comes from is settled first, so an unreachable source fails at once.
    torch_args = torch_source_args() if any(s.needs_torch for s in todo) else []
    for spec in todo:
        log = where.rel(where.logs / f"install-{spec.name}.log")
        report("install", f"{spec.name}: installing {_pins(spec.name)} (log {log})")

    errors: dict[str, BaseException] = {}
    done: dict[str, float] = {}
    started = time.monotonic()

    def worker(spec: VenvSpec) -> None:
        try:
            install_one(where, spec, torch_args if spec.needs_torch else ())
            done[spec.name] = time.monotonic() - started
        except BaseException as exc:  # handed to the main thread, which raises it
            errors[spec.name] = exc

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in todo]
    for thread in threads:
        thread.start()
    next_beat = started + HEARTBEAT_S
    reported: set[str] = set()
    try:
        while any(t.is_alive() for t in threads) and not errors:
            for thread in threads:
                thread.join(timeout=1.0)
            for name, seconds in list(done.items()):
                if name not in reported:
                    reported.add(name)
                    report("install", f"{name}: installed in {seconds:.0f} s")
            if time.monotonic() >= next_beat:
                waiting = [s.name for s in todo if s.name not in done]
                elapsed = time.monotonic() - started
                report("install", f"still installing {', '.join(waiting)} ({elapsed:.0f} s)")
                next_beat += HEARTBEAT_S
    except BaseException:
        _stop_running_installs()
        raise
    if errors:
        # A failed install stops its sibling too: nothing may be left running.
        _stop_running_installs()
        for thread in threads:
            thread.join(timeout=30)
        exc = next(iter(errors.values()))
        if isinstance(exc, SandboxError):
            raise exc
        raise SandboxError(f"install failed: {exc}") from exc
    for name, seconds in done.items():
        if name not in reported:
            report("install", f"{name}: installed in {seconds:.0f} s")
        timings[name] = seconds
    return timings


def _pins(name: str) -> str:
    return " ".join(r for r in SPECS[name].requirements if "==" in r)


def _stop_running_installs() -> None:
    """Stop every pip process group this process started and is still waiting on."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
