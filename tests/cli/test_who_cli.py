"""`list` and `show` say who started each run and on which host, on SQLite and on
PostgreSQL; a run stored before runs recorded either shows "-" (null in JSON)."""

from __future__ import annotations

import json
import re

from lib import cli
from tests.report.test_report_who import seed


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_list_and_show_say_who_and_where(any_db, capsys):
    db = str(any_db)
    seed(any_db, "run-alice", "alice", "gpu-1")
    seed(any_db, "run-old", None, None)
    seed(any_db, "run-long", "x" * 40, "a-very-long-host-name.example.internal")

    code, out = run_cli(capsys, "list", "--db", db)
    assert code == 0
    head, *rows = out.splitlines()
    assert head.split() == ["run", "status", "by", "host", "label", "lanes"]
    by_id = {row.split()[0]: row for row in rows}
    assert by_id["run-alice"].split()[:4] == ["run-alice", "completed", "alice", "gpu-1"]
    assert by_id["run-old"].split()[:4] == ["run-old", "completed", "-", "-"]
    # A long name or host is cut to 24 characters, so label and lanes stay in view.
    cut = ["x" * 23 + "…", "a-very-long-host-name.e…"]
    assert by_id["run-long"].split()[2:] == [*cut, "who", "vllm:m"]
    # Columns line up: every row's "by" starts where the header's does.
    column = head.index(" by ") + 1
    assert {row[column:].split()[0] for row in rows} == {"alice", "-", "x" * 23 + "…"}

    code, out = run_cli(capsys, "list", "--db", db, "--json")
    who = {x["run_id"]: (x["started_by"], x["host"]) for x in json.loads(out)}
    assert who["run-alice"] == ("alice", "gpu-1") and who["run-old"] == (None, None)

    code, out = run_cli(capsys, "show", "run-alice", "--db", db)
    assert code == 0
    first, second = out.splitlines()[:2]
    assert first == "run run-alice (completed) who"
    assert re.fullmatch(r"started \d{4}-\d\d-\d\d \d\d:\d\d by alice on gpu-1", second)
    code, out = run_cli(capsys, "show", "run-old", "--db", db)
    assert re.fullmatch(r"started \d{4}-\d\d-\d\d \d\d:\d\d", out.splitlines()[1])
    code, out = run_cli(capsys, "show", "run-alice", "--db", db, "--json")
    doc = json.loads(out)
    assert (doc["started_by"], doc["host"]) == ("alice", "gpu-1")
