"""EngineProcess with a real program: the Ollama stand-in started, watched and stopped.

Every test ends by checking that no process of the engine is left: not the one started,
not a child, not one carrying its token.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import psutil
import pytest

from lib.core.recipes import OLLAMA, EngineRecipe
from lib.launch import phases
from lib.launch.engine_process import EngineProcess, LaunchFailed
from lib.launch.executables import LaunchRefused
from tests.scripted.ollama_standin import FAULT_VAR

MODEL = "qwen2.5:7b-instruct-q4_K_M"  # one of the scripted server's tags


def recipe(path: Path, **kw: object) -> EngineRecipe:
    return EngineRecipe(engine=OLLAMA, model=MODEL, executable=str(path), **kw)  # type: ignore[arg-type]


def assert_all_gone(proc: EngineProcess) -> None:
    assert proc.proc is not None
    assert proc.leftover == []
    assert not psutil.pid_exists(proc.proc.pid) or (
        psutil.Process(proc.proc.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert proc._ours() == []


def test_started_watched_and_stopped(standin: Path, tmp_path: Path) -> None:
    samples: list[object] = []
    proc = EngineProcess(recipe(standin, num_parallel=2), tmp_path / "lane-0.log", samples.extend)
    proc.start()
    try:
        # Memory is sampled from the spawn, before anything waits for the engine.
        assert samples and proc.sampler is not None and proc.sampler.first_t is not None
        ready_s = proc.wait_ready()
        assert 0 < ready_s < 60
        assert proc.base_url == f"http://127.0.0.1:{proc.port}"
        tags = httpx.get(f"{proc.base_url}/api/tags", timeout=5).json()
        assert MODEL in [m["name"] for m in tags["models"]]
    finally:
        proc.stop()
    record = proc.record()
    assert record["ready_s"] == ready_s and record["exit_reason"] == "stopped by servescope"
    assert record["peak_memory_mib"] > 0
    assert record["first_sample_t"] <= record["phases"][1]["t"]
    names = [p["phase"] for p in record["phases"]]
    assert names[0] == phases.STARTED and names[-1] == phases.STOPPED and phases.READY in names
    # The server setting reached the engine as Ollama reads it, on loopback only.
    environ = (tmp_path / "lane-0.log").read_text()
    assert f"OLLAMA_HOST=127.0.0.1:{proc.port}" in environ
    assert record["argv"] == [str(standin), "serve"]
    assert_all_gone(proc)


def test_an_engine_that_exits_at_once_fails_with_its_log(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_VAR, "exit")
    proc = EngineProcess(recipe(standin), tmp_path / "lane.log")
    proc.start()
    with pytest.raises(LaunchFailed) as failed:
        proc.wait_ready()
    proc.stop()
    assert "exited during start-up (exit code 1)" in str(failed.value)
    assert any("address already in use" in line for line in failed.value.log_tail)
    assert proc.record()["exit_reason"] == "exited by itself"
    assert_all_gone(proc)


def test_an_engine_that_never_gets_ready_times_out(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_VAR, "hang")
    proc = EngineProcess(recipe(standin, ready_timeout_s=1.5), tmp_path / "lane.log")
    proc.start()
    with pytest.raises(LaunchFailed, match="not ready after 2 s"):
        proc.wait_ready()
    proc.stop()
    assert proc.record()["exit_reason"] == "stopped by servescope"
    assert_all_gone(proc)


def test_a_port_another_program_holds_is_refused(standin: Path, tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = EngineProcess(recipe(standin, port=port), tmp_path / "lane.log")
        with pytest.raises(LaunchFailed, match=f"port {port} is taken by another process"):
            proc.start()
        assert proc.proc is None  # nothing was started


def test_a_child_that_ignores_sigterm_is_killed(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_VAR, "stubborn")
    proc = EngineProcess(recipe(standin), tmp_path / "lane.log")
    proc.start()
    proc.wait_ready()
    children = psutil.Process(proc.proc.pid).children(recursive=True)  # type: ignore[union-attr]
    assert children  # the stubborn child runs
    proc.stop(grace_s=1.0)
    assert proc.exit_reason is not None and proc.exit_reason.startswith("killed")
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert_all_gone(proc)


def test_an_executable_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    proc = EngineProcess(
        EngineRecipe(engine=OLLAMA, model=MODEL, executable="/bin/sh"), tmp_path / "x.log"
    )
    with pytest.raises(LaunchRefused, match="SERVESCOPE_ENGINE_EXECUTABLES"):
        proc.start()
    assert proc.proc is None
