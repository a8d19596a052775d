"""A database URL is not a file name: `SERVESCOPE_DB=postgresql://user:pw@host/db` is
refused in one line without its password, and nothing is created (it once became a
folder named after the URL, password included, and the CLI reported success)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib import store
from lib.store.target import without_password

REPO = Path(__file__).resolve().parents[2]
URL = "postgresql://alice:s3cret-pw@db.example:5432/servescope"


def test_a_url_is_refused_without_its_password() -> None:
    with pytest.raises(store.StoreError) as refused:
        store.db_path(URL)
    message = str(refused.value)
    assert "s3cret-pw" not in message and "\n" not in message
    assert "postgresql://alice:***@db.example:5432/servescope is a database URL" in message
    assert without_password("sqlite:///x.db") == "sqlite:///x.db"


def test_the_cli_says_so_and_creates_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "SERVESCOPE_DB": URL}
    result = subprocess.run(
        [sys.executable, str(REPO / "lib" / "cli" / "__main__.py"), "list"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "s3cret-pw" not in result.stderr
    assert "is a database URL" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_dashboard_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SERVESCOPE_DB", URL)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30).run()
    assert not at.exception
    (error,) = at.error
    assert "is a database URL" in error.value and "s3cret-pw" not in error.value
