"""Runs as child processes: start, follow, cancel, a killed process, busy endpoints."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lib import store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import jobs
from tests.scripted import OpenAIServer


@pytest.fixture
def slow_vllm(scripted):
    # 40 tokens x 50 ms: each request streams for about two seconds.
    return scripted.openai(ttft_ms=50, gap_ms=50, pattern=(1,), models=["m"])


def config_for(server: OpenAIServer, requests: int = 20) -> RunConfig:
    return RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=server.base_url, model="m")],
        prompts=[Prompt.from_text("hello")],
        concurrency=[2],
        requests=requests,
        warmup=0,
        sampling=Sampling(max_tokens=40),
        label="job",
    )


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll a condition (the child process works on its own clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_row(db, run_id):
    with store.opened(db) as conn:
        return store.get_run(conn, run_id)


def finished_requests(db, run_id) -> int:
    with store.opened(db) as conn:
        return len(store.get_requests(conn, run_id))


def test_cancel_keeps_what_finished(tmp_path, slow_vllm):
    db = tmp_path / "s.db"
    run_id = jobs.start(config_for(slow_vllm), db)
    assert run_row(db, run_id)["status"] in ("pending", "running")
    wait_until(lambda: finished_requests(db, run_id) >= 2, what="two finished requests")
    assert jobs.cancel(run_id, db)
    row = wait_until(
        lambda: (r := run_row(db, run_id))["status"] not in jobs.ACTIVE and r, what="cancel"
    )
    assert row["status"] == "cancelled" and row["finished_at"]
    with store.opened(db) as conn:
        recs = store.get_requests(conn, run_id)
        levels = store.get_levels(conn, run_id)
    assert sum(r["error"] is None for r in recs) >= 2
    # In-flight requests at cancel time are accounted for, not dropped.
    assert all(r["error"] in (None, "cancelled") for r in recs)
    assert levels[0]["status"] == "cancelled"
    # The process exits on its own once it has written the cancelled state.
    wait_until(lambda: not jobs.process_alive(row["pid"], run_id), what="process exit")


def test_killed_process_is_marked_failed(tmp_path, slow_vllm):
    db = tmp_path / "s.db"
    run_id = jobs.start(config_for(slow_vllm), db)
    wait_until(lambda: finished_requests(db, run_id) >= 1, what="one finished request")
    pid = run_row(db, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not jobs.process_alive(pid, run_id), what="process death")
    assert run_id in jobs.reconcile(db)
    row = run_row(db, run_id)
    assert row["status"] == "failed" and row["error"]
    assert finished_requests(db, run_id) >= 1  # what finished is kept
    with store.opened(db) as conn:  # its level no longer reads as running either
        assert {lv["status"] for lv in store.get_levels(conn, run_id)} == {"failed"}
    assert jobs.active_runs(db) == []


def test_one_active_run_per_endpoint(tmp_path, slow_vllm):
    db = tmp_path / "s.db"
    run_id = jobs.start(config_for(slow_vllm), db)
    try:
        with pytest.raises(jobs.EndpointBusy, match=run_id):
            jobs.start(config_for(slow_vllm), db)
    finally:
        jobs.cancel(run_id, db)
        # Cancelled within its first second: the process may die before its own
        # handler is installed; reconcile (as the dashboard does) then calls it cancelled.
        wait_until(lambda: not jobs.active_runs(db), what="cancel")
        assert run_row(db, run_id)["status"] == "cancelled"


def test_invalid_config_is_refused_before_anything_starts(tmp_path, slow_vllm):
    db = tmp_path / "s.db"
    config = config_for(slow_vllm)
    config.lanes.append(config.lanes[0])
    with pytest.raises(jobs.ConfigError, match="twice"):
        jobs.start(config, db)
    config.lanes = []
    with pytest.raises(jobs.ConfigError, match="no lanes"):
        jobs.start(config, db)
    assert not db.exists() or jobs.active_runs(db) == []


def test_preflight_failure_marks_the_precreated_run_failed(tmp_path, slow_vllm):
    db = tmp_path / "s.db"
    config = config_for(slow_vllm)
    config.lanes[0].model = "missing-model"
    run_id = jobs.start(config, db)
    row = wait_until(
        lambda: (r := run_row(db, run_id))["status"] not in jobs.ACTIVE and r, what="failure"
    )
    assert row["status"] == "failed" and "missing-model" in row["error"]


def matrix_config(tmp_path, monkeypatch) -> RunConfig:
    """A one-cell matrix (the Ollama stand-in's engine) that runs until stopped."""
    from lib.core.recipes import OLLAMA, EngineRecipe
    from lib.launch.executables import OPERATOR_VAR
    from tests.scripted.ollama_standin import write_executable

    standin = write_executable(tmp_path)
    monkeypatch.setenv(OPERATOR_VAR, str(standin))
    recipe = EngineRecipe(
        engine=OLLAMA, model="qwen2.5:7b-instruct-q4_K_M", executable=str(standin), num_parallel=1
    )
    return RunConfig(
        lanes=[LaneSpec.launched(recipe)],
        prompts=[Prompt.from_text("hello")],
        concurrency=[1],
        requests=10_000,  # runs until stopped
        warmup=0,
        sampling=Sampling(max_tokens=40),
    )


def engine_pid_once_running(db, run_id) -> int:
    def engine_running():
        with store.opened(db) as conn:
            lanes = store.get_lanes(conn, run_id)  # none until the process starts
        process = (lanes[0]["engine_process"] if lanes else None) or {}
        return process if process.get("state") == "running" else None

    pid = wait_until(engine_running, what="the engine to run")["pid"]
    wait_until(lambda: finished_requests(db, run_id) >= 2, what="requests")
    return pid


def gone(pid: int) -> bool:
    import psutil

    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_one_matrix_at_a_time_and_cancel_stops_its_engine(tmp_path, monkeypatch):
    """A matrix started like the Run page starts it: a second is refused while it runs,
    and cancelling it stops the engine it started (no process left behind)."""
    config = matrix_config(tmp_path, monkeypatch)
    db = tmp_path / "s.db"
    run_id = jobs.start(config, db)
    try:
        with pytest.raises(jobs.EndpointBusy, match=f"{jobs.LAUNCHED} is busy with run {run_id}"):
            jobs.start(config, db)
        pid = engine_pid_once_running(db, run_id)
    finally:
        jobs.cancel(run_id, db)
        wait_until(lambda: not jobs.active_runs(db), what="cancel")
    assert run_row(db, run_id)["status"] == "cancelled"
    with store.opened(db) as conn:
        (lane,) = store.get_lanes(conn, run_id)
    assert lane["engine_process"]["state"] == "stopped"
    assert lane["engine_process"]["leftover_pids"] == []
    assert gone(pid)


def test_a_killed_matrix_has_its_engine_stopped_by_reconcile(tmp_path, monkeypatch):
    """The run's process killed outright cannot stop its engine; the dashboard's
    reconcile does, by the token in the lane's record."""
    db = tmp_path / "s.db"
    run_id = jobs.start(matrix_config(tmp_path, monkeypatch), db)
    engine = engine_pid_once_running(db, run_id)
    pid = run_row(db, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not jobs.process_alive(pid, run_id), what="process death")
    assert not gone(engine)  # orphaned, in a session of its own
    assert run_id in jobs.reconcile(db)
    assert gone(engine)
    with store.opened(db) as conn:
        (lane,) = store.get_lanes(conn, run_id)
    assert lane["engine_process"]["state"] == "failed"
    assert "servescope stopped the engine" in lane["engine_process"]["error"]
