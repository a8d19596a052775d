"""`python -m lib.cli copy`: a person's SQLite history into the team's PostgreSQL
($SERVESCOPE_DB), a line per run and a summary, then `list` there; bad input in one
line with exit 2 (unknown run, the same store twice, a store that cannot be opened,
never a password), exit 1 when a run could not be copied."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lib import cli, store
from tests.store.test_copying import EARLIER, FULL, OLD, RUNNING, seed_full, seed_small, seed_source

ROOT = Path(__file__).resolve().parents[2]


def servescope(*argv: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point, with $SERVESCOPE_DB set to `db` (the team's store)."""
    env = {k: v for k, v in os.environ.items() if k != "SERVESCOPE_DB"}
    if db:
        env["SERVESCOPE_DB"] = db
    return subprocess.run(
        [sys.executable, "-m", "lib.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def run_ids(db: str) -> set[str]:
    with store.opened(db, read_only=True) as conn:
        return {run["run_id"] for run in store.list_runs(conn)}


def test_a_history_goes_into_the_teams_store_and_list_shows_it(
    tmp_path, postgres, postgres_db, capsys
):
    src = str(tmp_path / "servescope.db")
    seed_source(src)

    proc = servescope("copy", "--from", src, db=postgres_db)  # --to: $SERVESCOPE_DB

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    *lines, summary = proc.stdout.splitlines()
    assert lines == [
        f"copied {EARLIER} (small, 2 requests, 0 samples)",
        f"copied {OLD} (small, 2 requests, 0 samples)",
        f"copied {FULL} (vLLM bf16, 16 requests, 6 samples, 3 votes)",
        f"skipped {RUNNING}: still running (copy it once it has ended)",
    ]
    team = store.describe(postgres_db)
    assert summary.startswith(f"3 runs copied into {team} (20 requests, 6 samples) in ")
    assert summary.endswith(" s; 1 still running")
    assert postgres.password not in proc.stdout

    assert cli.main(["list", "--db", postgres_db]) == 0
    # Columns: run, status, by, host, label, lanes; two spaces or more apart.
    rows = [re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines()]
    listed = {row[0]: row[1:] for row in rows[1:]}
    assert listed[FULL][:4] == ["completed with failures", "alice", "gpu-1", "vLLM bf16"]
    assert listed[OLD][:3] == ["completed", "-", "-"]  # stored before either was: blank
    assert RUNNING not in listed

    # Again, naming runs: both are there already; nothing changes, exit 0.
    assert cli.main(["copy", FULL, OLD, "--from", src, "--to", postgres_db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"skipped {FULL}: already there", f"skipped {OLD}: already there"]
    assert out[2] == f"nothing copied into {team}; 2 already there"
    assert run_ids(postgres_db) == {EARLIER, OLD, FULL}


def test_an_unknown_run_is_one_line_exit_2_and_nothing_is_copied(tmp_path):
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "team.db")
    seed_source(src)
    proc = servescope("copy", FULL, "no-such-run", "--from", src, "--to", dst)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert one_line(proc.stderr) == f"servescope: error: run no-such-run is not in {src}"
    assert run_ids(dst) == set()


def test_as_user_and_host_name_older_runs(tmp_path, capsys):
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "team.db")
    seed_source(src)
    argv = ["copy", OLD, FULL, "--from", src, "--to", dst, "--as-user", "carol"]
    assert cli.main([*argv, "--as-host", "old-box"]) == 0
    with store.opened(dst, read_only=True) as conn:
        old, full = store.get_run(conn, OLD), store.get_run(conn, FULL)
    assert (old["started_by"], old["host"]) == ("carol", "old-box")
    assert (full["started_by"], full["host"]) == ("alice", "gpu-1")


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, postgres):
    src = str(tmp_path / "src.db")
    with store.opened(src) as conn:
        seed_small(conn, EARLIER)
    wrong = postgres.url("postgres", password="not-the-password-xyz")
    cases = {
        "same store": (["--from", src], {"SERVESCOPE_DB": src}, "name the same store"),
        "same file twice": (["--from", src, "--to", f"{tmp_path}/../{tmp_path.name}/src.db"], {},
                            "name the same store"),
        "no --from": (["--to", src], {}, "the following arguments are required: --from"),
        "empty --from": (["--from", " ", "--to", src], {}, "--from is empty"),
        "a folder": (["--from", str(tmp_path), "--to", src], {}, "it is a folder"),
        "no such file": (["--from", f"{tmp_path}/none.db", "--to", src], {}, "does not exist"),
        "wrong password": (["--from", src, "--to", wrong], {}, "password authentication failed"),
        "a viewer": (["--from", src, "--to", f"{tmp_path}/team.db"],
                     {"SERVESCOPE_ROLE": "viewer"}, "SERVESCOPE_ROLE=viewer is read-only"),
    }  # fmt: skip
    for name, (argv, env, reason) in cases.items():
        with monkeypatch.context() as patch:
            patch.delenv("SERVESCOPE_DB", raising=False)
            for key, value in env.items():
                patch.setenv(key, value)
            code = cli.main(["copy", *argv])
        out, err = capsys.readouterr()
        assert code == 2, name
        line = one_line(err)
        assert line.startswith("servescope: error: ") and reason in line, (name, line)
        assert "not-the-password-xyz" not in line and out == "", name
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "team.db").exists()


@pytest.mark.parametrize("order", ["failing first", "failing last"])
def test_a_run_that_cannot_be_copied_fails_alone_exit_1(tmp_path, capsys, postgres_db, order):
    """A row PostgreSQL refuses (a text in a REAL column, which SQLite keeps): that run's
    line says why, nothing of it is written, the others are copied; exit 1."""
    src = str(tmp_path / "src.db")
    with store.opened(src) as conn:
        seed_full(conn, created_at=1.0 if order == "failing first" else 2e9)
        seed_small(conn, EARLIER, created_at=1_759_000_000.0)
        conn.execute("UPDATE samples SET value = 'n/a' WHERE source = 'vllm'")

    assert cli.main(["copy", "--from", src, "--to", postgres_db]) == 1

    lines = capsys.readouterr().out.splitlines()
    failed = next(line for line in lines if line.startswith("failed "))
    assert failed.startswith(f"failed {FULL}: invalid input syntax for type double precision")
    assert f"copied {EARLIER} (small, 2 requests, 0 samples)" in lines
    assert lines[-1].endswith("; 1 failed") and lines[-1].startswith("1 run copied into ")
    assert run_ids(postgres_db) == {EARLIER}
