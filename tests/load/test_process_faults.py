"""Process faults: the dashboard killed mid-run, the run's own process killed, two runs
writing one store at once (issue item 2).

The dashboard here is a real process: a child Python that drives app.py through AppTest
(the same script `streamlit run` serves), starts a run from the Run page and is then
SIGKILLed. The run must go on in its own process; a new dashboard session re-attaches
and follows it to the end. A killed run process is marked failed with what finished
kept, never left "running". Two CLI runs write one SQLite file at once: no lost rows,
no "database is locked".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import cli, store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import jobs
from tests.conftest import VLLM_MODEL
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")

# The dashboard process: the Run page through AppTest, a small two-lane run started
# with its button; then it idles (reading stdin) until the test kills it.
DASHBOARD = """
import sys
from streamlit.testing.v1 import AppTest

at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
at.radio(key="prompt_source").set_value("Write prompts").run()
at.text_area(key="prompt_text").set_value("hello")
at.number_input(key="run_requests").set_value(4)
at.number_input(key="run_max_tokens").set_value(16)
at.number_input(key="run_warmup").set_value(0)
at.multiselect(key="run_concurrency").set_value([1, 2])
at.run()
at.button(key="run_start").click().run()
if at.exception:
    print("ERROR", at.exception[0].value, flush=True)
    sys.exit(1)
print("RUN", at.session_state["active_run"], flush=True)
sys.stdin.read()
"""


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, step=None) -> Any:
    """Poll until `predicate()` is truthy (other processes work on their own clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if step is not None:
            step()
        time.sleep(0.2)


def run_row(db: Path, run_id: str) -> dict[str, Any]:
    with store.opened(db) as conn:
        row = store.get_run(conn, run_id)
    assert row is not None
    return row


def finished(db: Path, run_id: str) -> int:
    with store.opened(db) as conn:
        return len(store.get_requests(conn, run_id))


def plain(elements) -> list[str]:
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def test_dashboard_killed_mid_run_the_run_goes_on_and_a_new_one_reattaches(env):
    db = env
    dashboard = subprocess.Popen(
        [sys.executable, "-c", DASHBOARD, APP],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert dashboard.stdout is not None
        line = dashboard.stdout.readline()
        assert line.startswith("RUN "), line
        run_id = line.split()[1]
        wait_until(lambda: finished(db, run_id) >= 1, 60, "the first finished request")
        os.kill(dashboard.pid, signal.SIGKILL)  # the dashboard dies mid-run
        dashboard.wait(10)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
            dashboard.wait(10)
    pid = run_row(db, run_id)["pid"]
    assert jobs.process_alive(pid, run_id)  # the run's own process lives on
    before = finished(db, run_id)
    assert before < 16

    # A restarted dashboard: fresh caches, a new session, no ?run= in the URL.
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any(run_id in t for t in plain(at.markdown)), plain(at.markdown)
    assert any("-badge[running]" in t for t in plain(at.markdown))
    # It follows the run (AppTest cannot fire run_every: rerun by hand) to its end.
    wait_until(lambda: run_row(db, run_id)["status"] == "completed", 90, "the end", at.run)
    at.run()
    assert not at.exception
    assert any(":green-badge[completed]" in t for t in plain(at.markdown))
    captions = plain(at.caption)
    assert "c=1: 4/4 requests · completed" in captions, captions
    assert "c=2: 4/4 requests · completed" in captions, captions
    assert finished(db, run_id) == 16 > before  # two lanes x two levels x four requests


def config_for(server: OpenAIServer, requests: int = 30) -> RunConfig:
    return RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=server.base_url, model=VLLM_MODEL)],
        prompts=[Prompt.from_text("hello")],
        concurrency=[2],
        requests=requests,
        warmup=0,
        sampling=Sampling(max_tokens=16),
        label="killed",
    )


def test_run_process_killed_is_failed_with_what_finished_kept(env, engines):
    """SIGKILL the run's process while the dashboard follows it: the page says failed
    (not running forever), the finished requests stay, the CLI lists it as failed."""
    db = env
    _, vllm = engines
    run_id = jobs.start(config_for(vllm), db)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    wait_until(lambda: finished(db, run_id) >= 3, 60, "three finished requests", at.run)
    pid = run_row(db, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not jobs.process_alive(pid, run_id), 30, "the process to go")
    kept = finished(db, run_id)
    at.run()  # the live view reconciles before it draws
    assert not at.exception
    assert any(":red-badge[failed]" in t for t in plain(at.markdown)), plain(at.markdown)
    assert not at.get("progress")  # no bars of a run that is over
    row = run_row(db, run_id)
    assert row["status"] == "failed" and row["finished_at"] and row["error"]
    assert finished(db, run_id) == kept >= 3  # what finished is kept
    # The level the dead process left unfinished reads failed, with what it kept.
    lines = plain(at.markdown)
    assert any(f"c=2: {kept}/30 requests · failed" in t for t in lines), lines


def test_cli_list_never_shows_a_dead_run_as_running(tmp_path, capsys, engines):
    """No dashboard open: the CLI's own listing notices the dead process."""
    db = tmp_path / "s.db"
    _, vllm = engines
    run_id = jobs.start(config_for(vllm), db)
    wait_until(lambda: finished(db, run_id) >= 1, 60, "a finished request")
    pid = run_row(db, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not jobs.process_alive(pid, run_id), 30, "the process to go")
    assert cli.main(["list", "--db", str(db)]) == 0
    out, _ = capsys.readouterr()
    assert f"{run_id}  failed" in out
    assert cli.main(["show", run_id, "--db", str(db)]) == 0
    assert f"run {run_id} (failed)" in capsys.readouterr()[0]


def cli_run(server: OpenAIServer, db: Path, label: str, requests: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "lib.cli", "run", "--engine", "openai",
            "--base-url", server.base_url, "--model", "m", "--prompt", "hi",
            "--concurrency", "32", "--requests", str(requests), "--warmup", "1",
            "--max-tokens", "3", "--label", label, "--db", str(db), "--quiet",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_two_cli_runs_write_one_store_at_once(tmp_path):
    """Two run processes commit hundreds of small batches into one SQLite file while a
    reader (the dashboard's reconcile and queries) polls it: no row is lost, neither
    sees "database is locked", and neither run is taken for dead while it runs."""
    db = tmp_path / "s.db"
    requests = 400
    fast = OpenAIScript(ttft_ms=1, gap_ms=1, models=["m"])
    with OpenAIServer(fast) as a, OpenAIServer(OpenAIScript(**vars(fast))) as b:
        a.record_paths = b.record_paths = set()
        procs = [cli_run(a, db, "A", requests), cli_run(b, db, "B", requests)]
        reads = 0
        seen: dict[str, set[str]] = {}  # statuses the reader saw, per run
        try:
            while any(p.poll() is None for p in procs):
                jobs.reconcile(db)  # as the dashboard does before each redraw
                with store.opened(db) as conn:
                    for run in store.list_runs(conn):
                        store.count_requests(conn, run["run_id"])
                        seen.setdefault(run["label"], set()).add(run["status"])
                reads += 1
                time.sleep(0.05)
            outputs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower() and "Traceback" not in err
    assert reads > 0
    with store.opened(db) as conn:
        runs = {r["label"]: r for r in store.list_runs(conn)}
        assert set(runs) == {"A", "B"}
        for run in runs.values():
            assert run["status"] == "completed", run
            assert run["error"] is None  # never marked failed by the reader meanwhile
            rows = store.get_requests(conn, run["run_id"], include_warmup=True)
            assert len(rows) == requests + 1
            assert sorted(r["idx"] for r in rows if not r["warmup"]) == list(range(requests))
            assert all(r["error"] is None for r in rows)
    # The reader looked while the runs went on, and never took a live run for dead.
    assert {"running"} <= seen["A"] | seen["B"], seen
    assert "failed" not in seen["A"] | seen["B"], seen
