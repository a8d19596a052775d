"""A PostgreSQL store's password never shows: runs into it from the CLI and from the
dashboard's run process, then every command that reads it back (list, show, export,
report), leave the password out of their output, their files, the store's rows and the
run process's command line. The password has URL-special characters, so it is written
percent-encoded in the URL; its random part is what is looked for, in either form."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from lib import cli, store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import jobs
from tests.postgres_server import PostgresServer
from tests.store.schemas import raw_sql

REPO = Path(__file__).resolve().parents[2]
TABLES = ("runs", "lanes", "levels", "requests", "samples", "endpoints", "votes")


@dataclass(frozen=True)
class TeamStore:
    """A database of its own role, as a team's would be: its URL and the password's
    random part, which appears nowhere else."""

    url: str
    secret: str


@pytest.fixture
def team_store(postgres: PostgresServer, tmp_path: Path, monkeypatch) -> TeamStore:
    """A role with a password and a database it owns; SERVESCOPE_DB names it (no --db
    on a command line) and this machine's run files go to tmp_path/data."""
    secret = secrets.token_hex(8)
    name = f"team_{secret[:6]}"
    password = f"p@ss/w:rd {secret}"
    postgres.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    postgres.sql(f'CREATE DATABASE "{name}" OWNER {name}')
    url = postgres.url(name, user=name, password=password)
    assert quote(password, safe="") in url
    monkeypatch.setenv("SERVESCOPE_DB", url)
    monkeypatch.setenv("SERVESCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return TeamStore(url, secret)


def _files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _stored_text(url: str) -> str:
    """Every row of every table, as text (config and env JSON included)."""
    return "\n".join(repr(raw_sql(url, f"SELECT * FROM {table}")) for table in TABLES)


def test_a_cli_run_and_its_reports_never_show_the_password(
    team_store: TeamStore, tmp_path: Path, capsys, scripted
) -> None:
    vllm = scripted.openai(ttft_ms=5, gap_ms=2, models=["m"])
    argv = ["run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "m"]
    argv += ["--prompt", "hi", "--requests", "3", "--max-tokens", "4", "--label", "team"]
    argv += ["--output-json", "run.json"]
    done = subprocess.run(
        [sys.executable, "-m", "lib.cli", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["run_id"]
    assert f"run {run_id} (completed)" in done.stdout
    shown = [done.stdout, done.stderr]
    reads = [
        ["list"],
        ["list", "--json"],
        ["show", run_id],
        ["show", run_id, "--json"],
        ["export", run_id, "--json", "r.json"],
        ["export", run_id, "--csv", "r.csv"],
        ["report", run_id, "--html", "r.html"],
        ["show", "no-such-run"],  # an error message too
    ]
    for read in reads:
        code = cli.main(read)
        out, err = capsys.readouterr()
        assert code == (2 if "no-such-run" in read else 0), err
        shown += [out, err]
    assert "no run 'no-such-run'" in shown[-1]
    for name in ("r.json", "r.csv", "r.html"):
        assert (tmp_path / name).stat().st_size > 0
    assert "team" in _stored_text(team_store.url)  # the rows are there
    assert team_store.secret not in _stored_text(team_store.url)
    assert not [text for text in shown if team_store.secret in text]
    assert _files_holding(tmp_path, team_store.secret) == []


def test_a_dashboard_run_keeps_the_password_off_its_command_line_files_and_rows(
    team_store: TeamStore, tmp_path: Path, capsys, scripted
) -> None:
    vllm = scripted.openai(ttft_ms=5, gap_ms=2, models=["m"])
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=vllm.base_url, model="m")],
        prompts=[Prompt.from_text("hi")],
        requests=3,
        warmup=0,
        sampling=Sampling(max_tokens=4),
        label="dashboard",
    )
    run_id = jobs.start(config, team_store.url, started_by="alice")
    with store.opened(team_store.url) as conn:
        pid = store.get_run(conn, run_id)["pid"]
    # Popen returns once the child has exec'd; its Python start-up alone outlasts this.
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"lib.cli" in arg for arg in argv) and b"--db" not in argv
    assert not [arg for arg in argv if team_store.secret.encode() in arg]
    deadline = time.monotonic() + 60
    while jobs.active_runs(team_store.url):
        assert time.monotonic() < deadline, "the run did not end within 60 s"
        time.sleep(0.1)
    with store.opened(team_store.url) as conn:
        run = store.get_run(conn, run_id)
        assert (run["status"], run["started_by"]) == ("completed", "alice")
        assert len(store.get_requests(conn, run_id)) == 3
    jobs_files = sorted(p.name for p in (tmp_path / "data" / "jobs").iterdir())
    assert jobs_files == [f"{run_id}.json", f"{run_id}.log"]
    out, err = capsys.readouterr()
    assert team_store.secret not in out + err
    assert team_store.secret not in json.dumps(run)
    assert team_store.secret not in _stored_text(team_store.url)
    assert _files_holding(tmp_path, team_store.secret) == []
