"""The Results page's run header says who started the run and on which host, beside its
date, escaped; a run stored before runs recorded either says nothing of it."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import store
from tests.app.test_app_history import VLLM, make_run

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "results.py")


def header_line(run_id: str) -> str:
    """The header's line of facts (badge · run id · date · …) as the page wrote it."""
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    return next(m.value for m in at.markdown if f"run {run_id}" in unescape(m.value))


def unescape(markdown: str) -> str:
    """What a reader sees of markdown escaped by formatting.esc_md."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_header_says_by_whom_and_where_beside_the_date(db):
    make_run(db, "r-bob", [VLLM], {(0, 1): (50.0, 500.0, 2)}, started_by="bob*", host="gpu-2")
    line = header_line("r-bob")
    with store.opened(db) as conn:
        created = store.get_run(conn, "r-bob")["created_at"]
    date = datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
    assert "by bob\\* on " in line  # markdown escaped: the name cannot format the header
    assert f"run r-bob · {date} · by bob* on gpu-2 · " in unescape(line)


def test_an_old_run_says_nothing_of_who(db):
    make_run(db, "r-old", [VLLM], {(0, 1): (50.0, 500.0, 2)})
    with store.opened(db) as conn:
        conn.execute("UPDATE runs SET started_by = NULL, host = NULL WHERE run_id = 'r-old'")
    line = header_line("r-old")
    assert " by " not in line and " on " not in line
