"""Real engines for the integration tests: the sandbox's vLLM (CPU) and llama.cpp.

The package fixture runs ``python -m sandbox up`` (installing on first use: about 5 min
on 2 cores from a fresh clone) in a home of the tests' own under ``.sandbox/test-homes/``
and ``python -m sandbox down`` at the end. This folder's tests use the tiny generated
model; ``tests/integration_real/`` uses the real one through ``running_engines``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 1500  # fresh install (~5 min) + model generation + vLLM start, with margin
CLI_TIMEOUT_S = 600


def sandbox_home() -> Path:
    """The sandbox home the fixture uses (the real one unless the environment moves it)."""
    override = os.environ.get("SERVESCOPE_SANDBOX_HOME")
    return Path(override) if override else REPO / ".sandbox"


def run_sandbox(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sandbox ARGS`` from the repository root and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sandbox_status(env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m sandbox status --json``, parsed."""
    result = run_sandbox("status", "--json", env=env, timeout=60)
    return json.loads(result.stdout)


def home_for(model: str) -> Path:
    """The sandbox home the tests run ``model`` in: its own state, ports and logs, the real
    home's venvs and models (so nothing is installed or converted twice, and engines a
    user started in the real home, e.g. for the dashboard, are never touched)."""
    real = sandbox_home()
    home = real / "test-homes" / model
    home.mkdir(parents=True, exist_ok=True)
    for name in ("venvs", "models"):
        (real / name).mkdir(parents=True, exist_ok=True)
        link = home / name
        if not link.is_symlink():
            link.symlink_to(real / name)
    return home


def home_env(home: Path, model: str) -> dict[str, str]:
    """The environment of a sandbox command in ``home`` serving ``model``."""
    env = dict(os.environ)
    env["SERVESCOPE_SANDBOX_HOME"] = str(home)
    env["SERVESCOPE_SANDBOX_MODEL"] = model
    env.pop("SERVESCOPE_SANDBOX", None)
    env.pop("SERVESCOPE_SANDBOX_ENGINES", None)
    return env


@contextlib.contextmanager
def _leases(home: Path) -> Iterator[Path]:
    directory = home / "test-leases"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_leases(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.isdigit() and Path(f"/proc/{p.name}").exists()]


@contextlib.contextmanager
def running_engines(model: str) -> Iterator[dict[str, dict[str, Any]]]:
    """The sandbox's vLLM and llama.cpp serving ``model`` in its test home, keyed "vllm"
    and "llama" (status --json entries); stopped when the last session using them ends.

    Sessions that run at the same time on one machine share the engines: each holds a
    lease file, and the last one out stops them if a test session started them.
    """
    home = home_for(model)
    env = home_env(home, model)
    with _leases(home) as leases:
        (leases / str(os.getpid())).touch()
        already = [e for e in sandbox_status(env)["engines"] if e["ready"]]
        result = run_sandbox("up", env=env, timeout=UP_TIMEOUT_S)
        # Kept for the figures of a fresh install (install, model and start-up times).
        log = sandbox_home() / "logs" / f"pytest-up-{model}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr, encoding="utf-8")
        if not already and result.returncode == 0:
            (leases / "started-by-tests").touch()
    try:
        assert result.returncode == 0, (
            f"python -m sandbox up failed (exit {result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        found = sandbox_status(env)
        by_kind = {}
        for entry in found["engines"]:
            key = "vllm" if entry["name"].startswith("vllm") else "llama"
            by_kind[key] = entry
        assert set(by_kind) == {"vllm", "llama"}, found
        by_kind["model"] = found.get("model") or {}
        yield by_kind
    finally:
        with _leases(home) as leases:
            (leases / str(os.getpid())).unlink(missing_ok=True)
            marker = leases / "started-by-tests"
            if not _live_leases(leases) and marker.exists():
                down = run_sandbox("down", env=env, timeout=120)
                marker.unlink(missing_ok=True)
                assert down.returncode == 0, down.stderr


# Package scope: the engines stop when this folder's tests are done, so an idle vLLM
# does not take CPU from the timing-sensitive tests that run after it. The tiny random
# model: fast, with exact output lengths, for the timing and contract tests.
@pytest.fixture(scope="package")
def engines() -> Iterator[dict[str, dict[str, Any]]]:
    """The sandbox engines serving the tiny generated model."""
    with running_engines("tiny") as found:
        yield found


def run_cli(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``python -m lib.cli run ARGS`` and return (exit code, output JSON, stderr)."""
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*.json')))}.json"
    command = [sys.executable, "-m", "lib.cli", "run", *args]
    command += ["--db", str(tmp_path / "servescope.db"), "--output-json", str(out)]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    data = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
    return result.returncode, data, result.stderr + result.stdout


@pytest.fixture
def cli(tmp_path: Path):
    """``cli(*args)`` runs the benchmark CLI into this test's temporary directory."""

    def call(*args: str) -> tuple[int, dict[str, Any] | None, str]:
        return run_cli(tmp_path, *args)

    return call
