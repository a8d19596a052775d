"""Load worker processes (`--workers N`) against scripted servers: the same level as one
process (requests, schedule, metrics), a worker killed mid-level, cancelling, the count.

Workers are real spawned processes talking to a real scripted server over TCP; each test
starts its own pool (~1 s per worker here).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lib import store
from lib.analysis.results import run_document
from lib.core.load_pattern import CapacitySearch, LoadPattern
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import open_files, worker_count
from lib.load.arrivals import arrival_offsets
from lib.load.config_check import ConfigError, validate_config
from lib.load.runner import execute_run, prepare_lanes
from tests.scripted import OpenAIScript, OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
TTFT_MS, GAP_MS, TOKENS = 40.0, 5.0, 8


def _config(server: OpenAIServer, **kw) -> RunConfig:
    base = {
        "lanes": [LaneSpec(engine="openai", base_url=server.base_url, model="m")],
        "prompts": [Prompt.from_text("one"), Prompt.from_text("two"), Prompt.from_text("three")],
        "concurrency": [4],
        "requests": 24,
        "warmup": 1,
        "sampling": Sampling(max_tokens=TOKENS, ignore_eos=True),
    }
    base.update(kw)
    return RunConfig(**base)


async def _run(config: RunConfig, db: Path, **kw) -> str:
    lanes = await prepare_lanes(config)
    return await execute_run(config, lanes, db=db, **kw)


def _measured(db: Path, run_id: str) -> list[dict]:
    with store.opened(db) as conn:
        return [r for r in store.get_requests(conn, run_id, include_warmup=True) if not r["warmup"]]


def _max_in_flight(recs: list[dict]) -> int:
    edges = sorted([(r["t_send"], 1) for r in recs] + [(r["t_done"], -1) for r in recs])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def _check(document: dict, name: str) -> dict:
    level = document["lanes"][0]["levels"][0]
    return next(c for c in level["validation"] if c["check"] == name)


def test_two_workers_measure_what_one_process_measures(tmp_path):
    """The done-when test: the same level with 1 and 2 workers gives the same metrics
    within the accuracy goals, every request once, the users kept in flight."""
    script = OpenAIScript(ttft_ms=TTFT_MS, gap_ms=GAP_MS, pattern=(1,), models=["m"])
    db = tmp_path / "s.db"
    with OpenAIServer(script) as server:
        one = asyncio.run(_run(_config(server, workers=1), db))
        two = asyncio.run(_run(_config(server, workers=2), db))
    runs = {n: _measured(db, run_id) for n, run_id in ((1, one), (2, two))}
    for n, recs in runs.items():
        assert sorted(r["idx"] for r in recs) == list(range(24)), n
        assert all(r["error"] is None and r["output_tokens"] == TOKENS for r in recs), n
        # Requests cycle through the prompts the same way.
        assert sorted(r["prompt_idx"] for r in recs) == sorted(i % 3 for i in range(24)), n
        assert _max_in_flight(recs) == 4, n  # the 4 users, shared out 2 + 2
    ttft = {n: statistics.median(r["ttft_ms"] for r in recs) for n, recs in runs.items()}
    tpot = {n: statistics.median(r["tpot_ms"] for r in recs) for n, recs in runs.items()}
    # Both within 5 ms of the scripted first token, and of each other.
    assert all(TTFT_MS - 1 <= v <= TTFT_MS + 5 for v in ttft.values()), ttft
    assert abs(ttft[2] - ttft[1]) <= 5, ttft
    assert abs(tpot[2] - tpot[1]) <= 1, tpot
    document = run_document(db, two)
    assert document["settings"]["workers"] == 2
    assert run_document(db, one)["settings"]["workers"] == 1
    kept_up = _check(document, "client_kept_up")
    assert kept_up["status"] != "fail" and "over 2 load processes" in kept_up["detail"]
    consistency = _check(document, "consistency")
    assert consistency["status"] == "pass", consistency
    assert "all 24 recorded requests" in consistency["detail"]


def test_open_loop_keeps_one_schedule_across_workers(tmp_path):
    """Every request goes at its offset in the level's one schedule, whichever worker
    sends it: the schedule is the seed's, as with one process."""
    script = OpenAIScript(ttft_ms=TTFT_MS, gap_ms=GAP_MS, pattern=(1,), models=["m"])
    db = tmp_path / "s.db"
    load = LoadPattern(mode="rate", rates=[40.0], seed=7)
    with OpenAIServer(script) as server:
        run_id = asyncio.run(_run(_config(server, workers=2, load=load, requests=20, warmup=0), db))
    recs = sorted(_measured(db, run_id), key=lambda r: r["idx"])
    assert [r["idx"] for r in recs] == list(range(20))
    offsets = arrival_offsets(20, {"rate": 40.0}, 7, 1)
    t0 = recs[0]["t_scheduled"]
    # Scheduled times are the schedule's offsets from one start, to the microsecond.
    assert [round(r["t_scheduled"] - t0, 4) for r in recs] == [round(o, 4) for o in offsets]
    late_ms = sorted((r["t_send"] - r["t_scheduled"]) * 1000 for r in recs)
    assert late_ms[0] >= -0.5 and statistics.median(late_ms) < 5, late_ms


def _kill_workers_when_sending(count: int):
    """A progress callback that SIGKILLs `count` load workers once the measured level
    has requests in flight (after the warm-up), and the pids it killed."""
    killed: list[int] = []

    def progress(event: dict) -> None:
        if event["event"] == "level_start" and not killed:
            loop = asyncio.get_running_loop()

            def kill() -> None:
                for child in multiprocessing.active_children()[:count]:
                    killed.append(child.pid)
                    os.kill(child.pid, signal.SIGKILL)

            loop.call_later(0.4, kill)  # after "go": every worker has users in flight

    return progress, killed


def test_a_killed_worker_fails_its_requests_with_the_reason_and_the_rest_stand(tmp_path):
    # Requests of ~0.7 s: a kill 0.4 s into the level finds every user's request open.
    script = OpenAIScript(ttft_ms=TTFT_MS, gap_ms=40, pattern=(1,), models=["m"])
    db = tmp_path / "s.db"
    progress, killed = _kill_workers_when_sending(1)
    with OpenAIServer(script) as server:
        config = _config(server, workers=2, concurrency=[4, 2], requests=12, warmup=0)
        config.sampling = Sampling(max_tokens=16, ignore_eos=True)
        run_id = asyncio.run(_run(config, db, progress=progress))
    assert len(killed) == 1
    recs = _measured(db, run_id)
    first = [r for r in recs if r["concurrency"] == 4]
    assert sorted(r["idx"] for r in first) == list(range(12))  # every request, once
    failed = [r for r in first if r["error"]]
    # The killed worker's 2 users each had a request open.
    assert len(failed) == 2
    assert all(
        re.fullmatch(rf"load worker [12] \(pid {killed[0]}\) died: killed by SIGKILL", r["error"])
        for r in failed
    ), failed
    assert all(r["t_done"] >= r["t_send"] for r in failed)
    # The live worker sent the rest; the next level has a replacement and is whole.
    second = [r for r in recs if r["concurrency"] == 2]
    assert len(second) == 12 and all(r["error"] is None for r in second)
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
    assert run["status"] == "completed with failures"
    assert "died: killed by SIGKILL" in run["error"]
    assert any("killed by SIGKILL" in d for d in run["env"]["load_worker_deaths"])


def test_when_every_worker_dies_the_level_still_holds_all_its_requests(tmp_path):
    script = OpenAIScript(ttft_ms=TTFT_MS, gap_ms=40, pattern=(1,), models=["m"])
    db = tmp_path / "s.db"
    progress, killed = _kill_workers_when_sending(2)
    with OpenAIServer(script) as server:
        config = _config(server, workers=2, concurrency=[4], requests=12, warmup=0)
        config.sampling = Sampling(max_tokens=16, ignore_eos=True)
        run_id = asyncio.run(_run(config, db, progress=progress))
    assert len(killed) == 2
    recs = _measured(db, run_id)
    assert sorted(r["idx"] for r in recs) == list(range(12))
    # The 4 in flight and the 8 never sent: all failed, each with a worker's reason.
    assert all("died: killed by SIGKILL" in (r["error"] or "") for r in recs)
    with store.opened(db) as conn:
        assert store.get_run(conn, run_id)["status"] == "failed"


def test_cancelling_a_run_with_workers_records_its_requests_in_flight(tmp_path):
    script = OpenAIScript(ttft_ms=TTFT_MS, gap_ms=40, pattern=(1,), models=["m"])
    db = tmp_path / "s.db"

    async def main() -> str:
        cancel = asyncio.Event()

        def progress(event: dict) -> None:
            if event["event"] == "level_start":
                asyncio.get_running_loop().call_later(0.4, cancel.set)

        config = _config(server, workers=2, concurrency=[4], requests=40, warmup=0)
        config.sampling = Sampling(max_tokens=16, ignore_eos=True)
        return await _run(config, db, progress=progress, cancel=cancel)

    with OpenAIServer(script) as server:
        run_id = asyncio.run(main())
    recs = _measured(db, run_id)
    cancelled = [r for r in recs if r["error"] == "cancelled"]
    assert len(cancelled) == 4 and len(recs) < 40
    with store.opened(db) as conn:
        assert store.get_run(conn, run_id)["status"] == "cancelled"
    assert not multiprocessing.active_children()  # the pool is gone with the run


# --- how many, and which counts are refused ------------------------------------------


def test_more_workers_than_cores_is_one_line():
    with OpenAIServer(OpenAIScript(models=["m"])) as server:
        config = _config(server, workers=worker_count.cores() + 1)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    text = str(err.value)
    assert "\n" not in text and f"--workers {worker_count.cores() + 1}" in text
    assert f"at most {worker_count.cores()}" in text
    for bad in (0, -2, 1.5, True, "2"):
        assert "whole number" in (worker_count.problem(bad, 8) or "")
    assert worker_count.problem(None, 8) is None and worker_count.problem(8, 8) is None


def test_cli_refuses_more_workers_than_cores_in_one_line(tmp_path):
    cmd = [
        sys.executable, "-m", "lib.cli", "run", "--engine", "openai", "--base-url",
        "http://127.0.0.1:9/v1", "--model", "m", "--prompt", "x",
        "--workers", str(worker_count.cores() + 3), "--db", str(tmp_path / "s.db"),
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cores" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "s.db").exists()


def test_automatic_count_is_one_where_one_is_enough():
    lane = [LaneSpec(engine="openai", base_url="http://127.0.0.1:1", model="m")]
    prompts = [Prompt.from_text("x")]

    def auto(cores: int, **kw) -> int:
        return worker_count.automatic(RunConfig(lanes=lane, prompts=prompts, **kw), cores)

    assert auto(16, concurrency=[1, 4, 32, 64]) == 1
    assert auto(16, concurrency=[1, 512]) == 8  # 64 streams a worker
    assert auto(16, concurrency=[1, 1024]) == 15  # at most the cores less one
    assert auto(4, concurrency=[1024]) == 3
    assert auto(2, concurrency=[1024]) == 1
    # Open loop: the cap bounds the streams; uncapped, rate × 2 s up to the requests.
    assert auto(16, load=LoadPattern(mode="rate", rates=[500.0], max_concurrency=64)) == 1
    assert auto(16, load=LoadPattern(mode="rate", rates=[200.0]), requests=1000) == 7
    assert auto(16, load=LoadPattern(mode="rate", rates=[float("inf")]), requests=300) == 5
    # A capacity search goes up to its ceiling.
    assert auto(16, capacity=CapacitySearch(max=256)) == 4
    # Parallel lanes add up.
    two = [*lane, LaneSpec(engine="openai", base_url="http://127.0.0.1:2", model="m")]
    config = RunConfig(lanes=two, prompts=prompts, concurrency=[64], lanes_parallel=True)
    assert worker_count.automatic(config, 16) == 2
    assert worker_count.resolve(RunConfig(lanes=lane, prompts=prompts, workers=3), 16) == 3


def test_the_open_file_limit_is_raised_for_the_streams_within_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
        assert open_files.ensure_open_files(1024) == min(1024 + open_files.SPARE_FILES, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(1280, hard)
        # Never lowered: a limit already above the need stays.
        assert open_files.ensure_open_files(10) == min(1280, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
