"""One PostgreSQL store for a team (issue 17, points 1 and 4): two people's CLI runs from
two machines write into it at the same time while a dashboard on a third follows them
live, re-attaches after a restart, and afterwards lists both in History and overlays
them in one chart.

The "machines" are SERVESCOPE_HOST: the CLI runs are subprocesses of this test with
hosts alice-laptop and bob-gpu-box, the dashboard (AppTest, in this process) is
team-dashboard, so both runs are another host's to it. Each person measures a scripted
engine of their own, slow (about half a second a request) while the dashboard is
checked, then fast so that the runs end soon after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import store
from lib.load import jobs
from tests.analysis.test_frames import make_seed_run
from tests.scripted.openai_server import OpenAIServer

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
RUN_PAGE = str(REPO / "app_pages" / "run.py")
HISTORY_PAGE = str(REPO / "app_pages" / "history.py")
DASHBOARD_HOST = "team-dashboard"
MODEL = "m"
REQUESTS = 100  # per level: at 0.5 s a request the runs outlast the checks on a busy machine
DEADLINE_S = 90  # for any one condition (a bound on failing); the test takes about 20 s


@dataclass
class CliRun:
    """A person's `python -m lib.cli run` on their machine, into the shared store."""

    user: str
    host: str
    label: str
    engine: OpenAIServer
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    run_id: str = ""

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")[-3000:]


def _wait(condition: Callable[[], bool], what: str, step: Callable[[], Any] | None = None):
    """Poll `condition` (running `step` between polls) until it holds; fail after
    DEADLINE_S naming `what`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        if step is not None:
            step()
        time.sleep(0.1)


def _plain(elements: Any) -> list[str]:
    """Element texts with markdown escapes undone."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _runs(url: str) -> dict[str, dict[str, Any]]:
    with store.opened(url) as conn:
        return {run["run_id"]: run for run in store.list_runs(conn)}


def _start_cli(url: str, tmp_path: Path, user: str, host: str, engine: OpenAIServer) -> CliRun:
    """Start a person's CLI run; its output goes to a file (a pipe could fill and block)."""
    env = dict(os.environ)
    env.update(
        SERVESCOPE_DB=url,
        SERVESCOPE_USER=user,
        SERVESCOPE_HOST=host,
        SERVESCOPE_DATA_DIR=str(tmp_path / host),
        SERVESCOPE_SANDBOX="off",
    )
    label = f"{user}'s run"
    command = [sys.executable, "-m", "lib.cli", "run", "--engine", "openai",
               "--base-url", engine.base_url, "--model", MODEL, "--prompt", "짧게 인사해 주세요.",
               "--requests", str(REQUESTS), "--concurrency", "1,2", "--warmup", "0",
               "--max-tokens", "16", "--label", label]  # fmt: skip
    log = (tmp_path / f"{user}.log").open("wb")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return CliRun(user, host, label, engine, proc, log)


@pytest.fixture
def dashboard(postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The dashboard's environment: the shared store, a host of its own, no endpoints of
    its own, empty Streamlit caches. Returns the store's URL."""
    monkeypatch.setenv("SERVESCOPE_DB", postgres_db)
    monkeypatch.setenv("SERVESCOPE_HOST", DASHBOARD_HOST)
    monkeypatch.setenv("SERVESCOPE_USER", "carol")
    monkeypatch.setenv("SERVESCOPE_DATA_DIR", str(tmp_path / DASHBOARD_HOST))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    _restart_dashboard()
    return postgres_db


def _restart_dashboard() -> None:
    """What a restarted dashboard process starts from: nothing cached."""
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def two_runs(dashboard: str, scripted: Any, tmp_path: Path) -> Iterator[list[CliRun]]:
    """Alice's and Bob's CLI runs, both running (seen in the store) when the test starts;
    afterwards none is left running."""
    runs = []
    for user, host in (("alice", "alice-laptop"), ("bob", "bob-gpu-box")):
        engine = scripted.openai(models=[MODEL], ttft_ms=100, gap_ms=40, tokens=16)
        runs.append(_start_cli(dashboard, tmp_path, user, host, engine))
    try:

        def both_running() -> bool:
            for cli in runs:
                assert cli.proc.poll() is None, f"{cli.user}'s run ended early:\n{cli.output()}"
            mine = {r["started_by"]: r for r in _runs(dashboard).values()}
            for cli in runs:
                cli.run_id = mine.get(cli.user, {}).get("run_id", "")
            return all(mine.get(c.user, {}).get("status") == "running" for c in runs)

        _wait(both_running, "both CLI runs running in the shared store")
        yield runs
    finally:
        for cli in runs:
            if cli.proc.poll() is None:
                cli.proc.terminate()
            cli.proc.wait(timeout=30)
            cli.log.close()


def _still_running(url: str, runs: list[CliRun]) -> None:
    """While its process lives, each run's row says running: nobody judged it dead."""
    rows = _runs(url)
    for cli in runs:
        if cli.proc.poll() is None:
            status = rows[cli.run_id]["status"]
            assert status in jobs.ACTIVE, (cli.user, status, rows[cli.run_id].get("error"))


_COUNT = re.compile(r"c=\d+: (\d+)/\d+ requests")


def _done(at: AppTest) -> int:
    """Requests the live view's lane tiles count as done (progress bars and captions)."""
    texts = [str(p.text) for p in at.get("progress")] + _plain(at.caption)
    return sum(int(m.group(1)) for t in texts for m in _COUNT.finditer(t))


def _follow(url: str, runs: list[CliRun], cli: CliRun) -> None:
    """The Run page opened on a colleague's run (?run=): live, with who and where in its
    header, no cancel button but where to cancel it, its counts growing across reruns."""
    at = AppTest.from_file(RUN_PAGE, default_timeout=30)
    at.query_params["run"] = cli.run_id

    def rerun() -> None:
        at.run()
        assert not at.exception, at.exception
        _still_running(url, runs)

    rerun()
    header = " ".join(_plain(at.markdown))
    assert cli.run_id in header and f"by {cli.user} on {cli.host}" in header, header
    assert f"Running on {cli.host}, started by {cli.user}: cancel it there" in _plain(at.caption)
    assert f"run-cancel-{cli.run_id}" not in [b.key for b in at.button]
    assert at.get("progress"), "an active run's levels show progress bars"
    seen = [_done(at)]
    # Two increases one after the other: the view follows the requests as they are written.
    for _ in range(2):
        _wait(lambda: _done(at) > seen[-1], f"{cli.user}'s request count grows", rerun)
        seen.append(_done(at))
    assert jobs.cancel(cli.run_id) is False  # not this machine's process to signal


def _restarted_run_page(url: str, runs: list[CliRun]) -> None:
    """A dashboard restart (fresh session, nothing cached, no ?run=) re-attaches to an
    active run, live."""
    _restart_dashboard()
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    header = " ".join(_plain(at.markdown))
    attached = [c for c in runs if c.run_id in header]
    assert len(attached) == 1, header
    (cli,) = attached
    assert f"by {cli.user} on {cli.host}" in header
    assert at.query_params["run"] == cli.run_id  # the URL now names it: a reload stays
    assert at.get("progress")
    _still_running(url, runs)


def _history(url: str) -> AppTest:
    at = AppTest.from_file(HISTORY_PAGE, default_timeout=30).run()
    assert not at.exception, at.exception
    return at


def _history_rows(at: AppTest) -> dict[str, dict[str, Any]]:
    (table,) = [el for el in at.dataframe if "run_id" in el.value.columns]
    return {row["run_id"]: row for row in table.value.to_dict("records")}


def test_two_people_run_into_one_postgres_while_a_dashboard_follows(two_runs, dashboard):
    url, (alice, bob) = dashboard, two_runs

    # The dashboard, on a third host, sees both as active and judges neither.
    active = {run["run_id"] for run in jobs.active_runs(url)}
    assert {alice.run_id, bob.run_id} <= active
    assert not jobs.active_runs(url, local_only=True)
    rows = _history_rows(_history(url))
    for cli in (alice, bob):
        assert rows[cli.run_id]["status"] == "running"

    for cli in two_runs:  # the dashboard follows each of them live
        _follow(url, two_runs, cli)
    _restarted_run_page(url, two_runs)
    _still_running(url, two_runs)

    # Checked: the engines answer at once now, so the runs end soon.
    for cli in two_runs:
        cli.engine.script.ttft_ms, cli.engine.script.gap_ms = 1, 0
    for cli in two_runs:
        _wait(lambda c=cli: c.proc.poll() is not None, f"{cli.user}'s run ends")
        assert cli.proc.returncode == 0, cli.output()
        assert f"run {cli.run_id} (completed)" in cli.output()

    # History: both runs, with their people and machines.
    _restart_dashboard()
    at = _history(url)
    rows = _history_rows(at)
    for cli in (alice, bob):
        row = rows[cli.run_id]
        assert (row["started_by"], row["host"], row["status"]) == (
            cli.user,
            cli.host,
            "completed",
        )
        assert row["completed"] == 2 * REQUESTS
    # ... and overlaid in one chart: one trace per run, each labelled with its run.
    at.multiselect(key="history_pick").set_value([alice.run_id, bob.run_id]).run()
    assert not at.exception, at.exception
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "history_throughput"]
    names = [trace["name"] for trace in json.loads(chart.proto.spec)["data"]]
    assert sorted(names) == [f"{alice.label} · vllm:{MODEL}", f"{bob.label} · vllm:{MODEL}"]


def _dead_pid() -> int:
    """The pid of a process that has ended (what another machine's pid looks like here)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_another_hosts_run_is_followed_never_judged_or_cancelled(dashboard, monkeypatch):
    """Bob's run on his GPU box, whose pid is no process of this machine: the dashboard
    shows it live and where to cancel it, never marks it failed, and cannot cancel it."""
    url = dashboard
    # A run the dashboard itself is starting (no pid yet), older than Bob's.
    local = "20250609-100000-carol1"
    with store.opened(url) as conn:
        store.create_run(conn, local, {"lanes": []}, "carol's run")
    monkeypatch.setenv("SERVESCOPE_USER", "bob")
    monkeypatch.setenv("SERVESCOPE_HOST", "bob-gpu-box")
    remote = make_seed_run(url, run_id="20250609-100000-bob001", status="running")
    monkeypatch.setenv("SERVESCOPE_USER", "carol")
    monkeypatch.setenv("SERVESCOPE_HOST", DASHBOARD_HOST)
    with store.opened(url) as conn:
        store.update_run(conn, remote, pid=_dead_pid(), started_at=time.time())

    at = AppTest.from_file(RUN_PAGE, default_timeout=30)
    at.query_params["run"] = remote
    at.run()
    at.run()
    assert not at.exception, at.exception
    assert "Running on bob-gpu-box, started by bob: cancel it there" in _plain(at.caption)
    assert f"run-cancel-{remote}" not in [b.key for b in at.button]
    assert "by bob on bob-gpu-box" in " ".join(_plain(at.markdown))
    assert jobs.cancel(remote) is False
    assert jobs.reconcile() == []
    assert _runs(url)[remote]["status"] == "running"

    # A restarted dashboard re-attaches to its own host's active run before a colleague's.
    _restart_dashboard()
    fresh = AppTest.from_file(RUN_PAGE, default_timeout=30).run()
    assert not fresh.exception, fresh.exception
    assert fresh.query_params["run"] == local
