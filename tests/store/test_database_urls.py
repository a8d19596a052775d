"""Which database `SERVESCOPE_DB` names, and what a bad one does: a `postgresql://` URL is a
server database; another kind of URL, a server that does not answer and wrong
credentials are each one line that names the database without its password, from the
store, the CLI (exit 2) and the dashboard, and nothing is created (a URL once became a
folder named after it, password included, and the CLI reported success)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lib import cli, store
from lib.store.target import passwords_of, without_password
from tests.postgres_server import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"
URL = f"postgresql://alice:{SECRET}@db.example:5432/servescope"


def test_a_postgresql_url_is_a_server_database(tmp_path, monkeypatch) -> None:
    for url in (URL, URL.replace("postgresql://", "postgres://")):
        chosen = store.target(url)
        assert (chosen.dialect, chosen.url, chosen.path) == ("postgresql", url, None)
        assert chosen.name == url.replace(SECRET, "***") == store.describe(url)
    monkeypatch.setenv("SERVESCOPE_DB", URL)
    assert store.target().dialect == "postgresql"
    monkeypatch.setenv("SERVESCOPE_DATA_DIR", str(tmp_path))
    assert store.target().local_dir == tmp_path  # a run's files: this machine's folder
    with pytest.raises(store.StoreError) as not_a_file:
        store.db_path()
    assert str(not_a_file.value) == (
        "postgresql://alice:***@db.example:5432/servescope is a server database, not a file"
    )
    # A password with URL-special characters, written percent-encoded, is masked too.
    encoded = "postgresql://bob:p%40ss%2Fw@h/db"
    assert without_password(encoded) == "postgresql://bob:***@h/db"
    assert passwords_of(encoded) == {"p%40ss%2Fw", "p@ss/w"}
    # libpq takes a password in the query too.
    query = f"postgresql://bob@h/db?sslmode=require&password={SECRET}&application_name=x"
    assert without_password(query) == (
        "postgresql://bob@h/db?sslmode=require&password=***&application_name=x"
    )
    assert passwords_of(query) == {SECRET}
    assert store.describe("data/servescope.db") == "data/servescope.db"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://alice:{SECRET}@db.example/servescope", "is a database URL servescope cannot"),
        (f"sqlite://u:{SECRET}@/x.db", "is a database URL servescope cannot use"),
        (f"mysql:alice:{SECRET}@db.example/servescope", "is a database URL servescope cannot"),
        # Mistyped: once a path of folders named after it, password included.
        (f"postgresql:/alice:{SECRET}@db.example/servescope", "is not a database URL"),
        (f"postgres:alice:{SECRET}@db.example/servescope", "is not a database URL"),
        (f"postgresql+psycopg://alice:{SECRET}@db.example/db", "is not a database URL"),
    ],
)
def test_another_kind_of_url_is_refused_in_one_line(
    url: str, reason: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for attempt in (lambda: store.target(url), lambda: store.connect(url)):
        with pytest.raises(store.StoreError) as refused:
            attempt()
        message = str(refused.value)
        assert reason in message
        assert SECRET not in message and "\n" not in message
        assert without_password(url) in message
    assert SECRET not in store.describe(url)
    assert list(tmp_path.iterdir()) == []


def test_a_url_with_a_stray_space_or_capitals_is_still_the_url() -> None:
    chosen = store.target(f"  POSTGRESQL://alice:{SECRET}@db.example:5432/servescope\n")
    assert (chosen.dialect, chosen.url) == ("postgresql", URL)


# The bad databases the CLI and the dashboard are given, each with its password and what
# the one line says about it.
def _bad_databases(postgres: PostgresServer) -> dict[str, tuple[str, str]]:
    closed = free_port()  # bound and let go: nothing listens there (refused at once)
    return {
        "another kind": (f"mysql://alice:{SECRET}@db.example/servescope", "cannot use"),
        "mistyped": (f"postgresql:/alice:{SECRET}@127.0.0.1/db", "is not a database URL"),
        "unreachable": (f"postgresql://alice:{SECRET}@127.0.0.1:{closed}/db", "refused"),
        "password in the query": (
            f"postgresql://alice@127.0.0.1:{closed}/db?connect_timeout=5&password={SECRET}",
            "refused",
        ),
        "wrong password": (
            postgres.url("postgres", password=SECRET),
            "password authentication failed",
        ),
        "no such database": (postgres.url("no_such_db"), "does not exist"),
    }


def _secrets(url: str) -> set[str]:
    """The passwords a bad URL holds (a mistyped one is no URL to parse: SECRET)."""
    found = passwords_of(url) | ({SECRET} if SECRET in url else set())
    assert found
    return found


def _page_text(node: Any) -> str:
    """Everything an AppTest page holds, as the text of its elements' messages."""
    parts = [str(getattr(node, "proto", ""))]
    parts += [_page_text(child) for child in getattr(node, "children", {}).values()]
    return "\n".join(parts)


BAD = [
    "another kind",
    "mistyped",
    "unreachable",
    "password in the query",
    "wrong password",
    "no such database",
]


@pytest.mark.parametrize("case", BAD)
def test_the_cli_says_so_in_one_line_and_creates_nothing(
    case: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    url, reason = _bad_databases(postgres)[case]
    data_dir, cwd = tmp_path / "data", tmp_path / "cwd"
    data_dir.mkdir()
    cwd.mkdir()
    env = {
        **os.environ,
        "SERVESCOPE_DB": url,
        "SERVESCOPE_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "lib.cli", "list"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("servescope: error: ") and reason in line
    assert without_password(url) in line
    assert not [secret for secret in _secrets(url) if secret in result.stderr]
    assert list(cwd.iterdir()) == list(data_dir.iterdir()) == []


@pytest.mark.parametrize("case", BAD)
def test_the_dashboard_says_so_in_one_line(
    case: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    url, reason = _bad_databases(postgres)[case]
    monkeypatch.setenv("SERVESCOPE_DB", url)
    monkeypatch.setenv("SERVESCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30).run()
    assert not at.exception
    (error,) = at.error
    assert reason in error.value and without_password(url) in error.value
    assert "\n" not in error.value
    page = _page_text(at._tree)
    assert without_password(url) in page
    assert not [secret for secret in _secrets(url) if secret in page]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", BAD)
def test_a_cli_run_into_a_bad_database_sends_nothing(
    case: str, postgres: PostgresServer, scripted, monkeypatch, capsys, tmp_path: Path
) -> None:
    url, reason = _bad_databases(postgres)[case]
    vllm = scripted.openai(ttft_ms=5, gap_ms=2, models=["m"])
    monkeypatch.setenv("SERVESCOPE_DB", url)
    monkeypatch.setenv("SERVESCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "m"]
    code = cli.main([*argv, "--prompt", "hi", "--requests", "2", "--output-json", "r.json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert reason in line and without_password(url) in line
    assert not [secret for secret in _secrets(url) if secret in err]
    assert vllm.recorded("/v1/chat/completions") == []  # refused before any request
    assert list(tmp_path.iterdir()) == []


def test_a_database_not_in_utf8_is_refused_before_any_table(postgres) -> None:
    """Korean answers would fail mid-run in a LATIN1 database: refused at the first open,
    in one line, with nothing created."""
    postgres.sql(
        "CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    url = postgres.url("latin")
    with pytest.raises(store.StoreError) as refused:
        store.connect(url)
    message = str(refused.value)
    assert "encoded LATIN1" in message and "\n" not in message
    assert postgres.password not in message
    import psycopg

    with psycopg.connect(url) as raw:
        assert raw.execute("SELECT to_regclass('runs')").fetchone()[0] is None


def test_a_page_names_a_server_store_without_its_password() -> None:
    assert store.target(URL).label == "PostgreSQL alice@db.example:5432/servescope"
    assert store.target("postgresql:///servescope").label == "PostgreSQL localhost/servescope"
    assert store.target("/tmp/x.db").label == "/tmp/x.db"


def test_the_sidebar_says_the_runs_are_in_the_shared_database(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SERVESCOPE_DB", postgres_db)
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30).run()
    assert not at.exception
    captions = [re.sub(r"\\(.)", r"\1", c.value) for c in at.sidebar.caption]  # unescaped
    assert any("Runs in PostgreSQL servescope_admin@127.0.0.1:" in c for c in captions), captions
    assert not any(
        store.target(postgres_db).url.split("@")[0].split(":")[-1] in c for c in captions
    )
