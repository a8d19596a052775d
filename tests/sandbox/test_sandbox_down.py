"""`python -m sandbox down` stops only what this home's `up` started.

No real engines: harmless stand-ins (a sleeping Python) started the way `up` starts its
engines (sandbox.processes.spawn: own session, the up's token in the environment, the
engine's marker in the command line, the home as working directory), and stand-ins for
`python -m sandbox up` (a fake checkout whose `sandbox` package only sleeps), for two
homes. Every process spawned here is stopped in a finally block.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import lifecycle, processes
from sandbox.paths import Home
from sandbox.state import Reporter, read_state, write_state

SLEEP = "import time; time.sleep(60)"
MARKER = "servescope_stand_in_engine"
HOME_VAR = "SERVESCOPE_SANDBOX_HOME"  # what sandbox.paths.home() reads


class Spawned:
    """Every stand-in of one test, stopped (and reaped) at the end whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def engine(self, where: Home, name: str, *, home_var: bool = True) -> dict:
        """An engine stand-in of `where`, and its state.json record as `up` writes it.
        Without `home_var` it looks like an engine started before `up` named the home
        in the environment (only its working directory says whose it is)."""
        token = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != HOME_VAR}
        env[processes.TOKEN_VAR] = token
        if home_var:
            env[HOME_VAR] = str(where.root)
        args = [sys.executable, "-c", SLEEP, MARKER]
        proc = processes.spawn(args, where.logs / f"{name}.log", env, cwd=where.root)
        self.procs.append(proc)
        return {
            "name": name,
            "kind": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["stand-in"],
            "port": 9,
            "pid": proc.pid,
            "pgid": proc.pid,
            "token": token,
            "marker": MARKER,
        }

    def up(self, checkout: Path, home_var: Path | None) -> subprocess.Popen[bytes]:
        """`python -m sandbox up` run from `checkout` (a fake one: its `sandbox` only
        sleeps), with $SERVESCOPE_SANDBOX_HOME set to `home_var` or unset."""
        package = checkout / "sandbox"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("", encoding="utf-8")
        (package / "__main__.py").write_text(SLEEP + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in (HOME_VAR, "PYTHONPATH")}
        if home_var is not None:
            env[HOME_VAR] = str(home_var)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "up"],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        wait_for(lambda: processes.cmdline(proc.pid)[-3:] == ["-m", "sandbox", "up"])
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def spawned() -> Iterator[Spawned]:
    found = Spawned()
    try:
        yield found
    finally:
        found.close()


def wait_for(check, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def gone(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> bool:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def make_home(root: Path) -> Home:
    where = Home(root.resolve())
    where.ensure()
    return where


def test_down_leaves_another_homes_up_and_engines_alone(tmp_path, spawned):
    """Home A's files name home B's `up` (a non-final progress record) and B's engines
    (a state.json copied from B, tokens and markers included): A's `down` stops A's
    engines only; B's `up` and engines keep running."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "checkout-b" / ".sandbox")
    a_engine = spawned.engine(a, "vllm")
    a_old_engine = spawned.engine(a, "llama.cpp", home_var=False)  # from before HOME_VAR
    b_engine = spawned.engine(b, "vllm")
    b_up = spawned.up(tmp_path / "checkout-b", None)  # B's home: its checkout's .sandbox
    write_state({"engines": [b_engine]}, b)
    write_state({"engines": [a_engine, a_old_engine, b_engine]}, a)
    Reporter(a, quiet=True).record("start", "copied from B", pid=b_up.pid)
    procs = {p.pid: p for p in spawned.procs}
    assert lifecycle.progress(a)["active"] is False  # nor is B's `up`
    assert lifecycle.progress(b) is None

    stopped = lifecycle.down(Reporter(a, quiet=True))

    assert stopped == ["vllm", "llama.cpp"]
    assert gone(procs[a_engine["pid"]]) and gone(procs[a_old_engine["pid"]])
    assert alive(b_up) and alive(procs[b_engine["pid"]])
    assert read_state(b)["engines"] == [b_engine] and read_state(a)["engines"] == []


def test_down_stops_this_homes_background_up_not_a_same_looking_one(tmp_path, spawned):
    """Two `python -m sandbox up` alike but for their home: `down` in A signals A's `up`
    (named by A's progress record) and leaves B's running."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    a_up = spawned.up(tmp_path / "checkout", a.root)
    b_up = spawned.up(tmp_path / "checkout", b.root)
    Reporter(a, quiet=True).record("queued", "starting", pid=a_up.pid)
    Reporter(b, quiet=True).record("queued", "starting", pid=b_up.pid)
    assert lifecycle.progress(a)["active"] and lifecycle.progress(b)["active"]

    stopped = lifecycle.down(Reporter(a, quiet=True))

    assert stopped == [f"up (pid {a_up.pid})"]
    assert gone(a_up) and a_up.returncode == -signal.SIGTERM
    assert alive(b_up) and lifecycle.progress(b)["active"]


def test_is_sandbox_up_reads_the_home_of_the_process(tmp_path, spawned):
    """A relative $SERVESCOPE_SANDBOX_HOME is the process's own (from its working
    directory); without it, the home is `.sandbox` of the checkout it runs from."""
    checkout = tmp_path / "checkout"
    for folder in (checkout / "rel-home", tmp_path / "rel-home", checkout / ".sandbox"):
        folder.mkdir(parents=True)
    relative = spawned.up(checkout, Path("rel-home"))
    unset = spawned.up(checkout, None)
    assert processes.is_sandbox_up(relative.pid, checkout / "rel-home")
    assert not processes.is_sandbox_up(relative.pid, tmp_path / "rel-home")
    assert processes.is_sandbox_up(unset.pid, checkout / ".sandbox")
    assert not processes.is_sandbox_up(unset.pid, checkout / "rel-home")
    assert not processes.is_sandbox_up(os.getpid(), checkout / ".sandbox")  # not an `up`


def test_background_up_is_told_its_home(tmp_path, monkeypatch):
    """`ensure --background` starts `up` from the repository root with this home named
    absolutely, so that `up` works on this home and `down` can tell it is this home's
    (a relative $SERVESCOPE_SANDBOX_HOME would mean another folder from there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HOME_VAR, "rel-home")
    monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
    monkeypatch.setattr(lifecycle, "_answers", lambda kind, url: False)
    started: list[dict] = []

    class FakePopen:
        pid = 4242

        def __init__(self, args, **kwargs) -> None:
            started.append({"args": args, **kwargs})

    monkeypatch.setattr(lifecycle.subprocess, "Popen", FakePopen)
    where = lifecycle.home()
    assert lifecycle.ensure(True, Reporter(where, quiet=True), ["llama"]) == "starting"
    (call,) = started
    assert call["args"][1:] == ["-m", "sandbox", "up", "--engines", "llama"]
    assert call["cwd"] == lifecycle.REPO_ROOT
    assert call["env"][HOME_VAR] == str(tmp_path / "rel-home") == str(where.root)
