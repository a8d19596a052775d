"""Fixtures shared by the test packages: scripted engine servers and the dashboard's store.

Scripted servers (tests/scripted/) replay Ollama and vLLM-shaped responses with exact
timing and faults. Three ways to get one:

- `ollama_server`, `openai_server`: one server with the default script, shared by a test
  module (a test that changes `server.script` sets what it needs first);
- `scripted`: servers with a test's own script, `scripted.ollama(ttft_ms=40)` or
  `scripted.openai(models=["m"])` (the keywords are OllamaScript's or OpenAIScript's),
  stopped when the test ends;
- `engines`: an Ollama and a vLLM lane for the dashboard's run tests, about half a second
  a request so that a run is still going over a few page reruns.

The store on both backends: `postgres` is a real PostgreSQL server (Debian's, started in
a temporary folder on a free port, once per test session); `any_db` is a fresh store of
each kind in turn, a SQLite file and a new PostgreSQL database, so a test taking it runs
twice.

A test module's own fixture of the same name overrides these.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.postgres_server import PostgresServer
from tests.scripted.core import ScriptedServer
from tests.scripted.ollama_server import OllamaScript, OllamaServer, model_entry
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"
S = TypeVar("S", bound=ScriptedServer)


class Scripted:
    """Starts scripted servers on demand; `stop` stops them all, the last started first."""

    def __init__(self) -> None:
        self.started: list[ScriptedServer] = []

    def ollama(self, **script: Any) -> OllamaServer:
        return self._start(OllamaServer(OllamaScript(**script)))

    def openai(self, **script: Any) -> OpenAIServer:
        return self._start(OpenAIServer(OpenAIScript(**script)))

    def _start(self, server: S) -> S:
        server.start()
        self.started.append(server)
        return server

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """Scripted servers with this test's scripts, stopped when it ends."""
    servers = Scripted()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[OllamaServer]:
    """A scripted Ollama with the default script, shared by the module's tests."""
    with OllamaServer() as server:
        yield server


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIServer]:
    """A scripted vLLM with the default script, shared by the module's tests."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def engines(scripted: Scripted) -> tuple[OllamaServer, OpenAIServer]:
    """An Ollama serving OLLAMA_MODEL and a vLLM serving VLLM_MODEL, 16 tokens a request
    at 100 ms to the first and 40 ms between: about half a second a request."""
    timing: dict[str, Any] = {"ttft_ms": 100, "gap_ms": 40, "tokens": 16}
    ollama = scripted.ollama(models=[model_entry(OLLAMA_MODEL)], **timing)
    vllm = scripted.openai(models=[VLLM_MODEL], root=VLLM_MODEL, **timing)
    return ollama, vllm


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, removed afterwards."""
    with PostgresServer() as server:
        yield server


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_db(postgres: PostgresServer) -> str:
    """The URL of a new empty PostgreSQL database (password included)."""
    return postgres.create_database(f"t{next(_databases)}")


@pytest.fixture(autouse=True)
def _no_kept_connections() -> Iterator[None]:
    """A dashboard run in-process (AppTest on app.py) keeps PostgreSQL connections in
    pools; each test ends with none, so the next starts as a command line would and no
    test database is held open."""
    yield
    from lib import store

    store.keep_connections(False)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind in turn: a SQLite file's path, a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("postgres_db")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store for the dashboard: SERVESCOPE_DB names it, the sandbox is off, no
    default engines (the sidebar must not wait on ports of this machine), and Streamlit's
    caches are empty."""
    import streamlit as st  # only the dashboard's tests pay for the import

    path = tmp_path / "store.db"
    monkeypatch.setenv("SERVESCOPE_DB", str(path))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    st.cache_data.clear()
    st.cache_resource.clear()
    return path


@pytest.fixture
def env(db: Path, monkeypatch: pytest.MonkeyPatch, engines: Any) -> Iterator[Path]:
    """The dashboard's store (`db`) with the scripted Ollama and vLLM as its default
    endpoints. Afterwards no run process is left behind (end_dashboard_runs)."""
    ollama, vllm = engines
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", ollama.url)
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", vllm.base_url)
    yield db
    end_dashboard_runs(db)


def end_dashboard_runs(db: Path) -> None:
    """Cancel every active run of ``db`` and wait until its process has ended (a dead one
    is reconciled as failed), then empty Streamlit's caches: a dashboard test's teardown."""
    import time

    import streamlit as st

    from lib.load import jobs

    for run in jobs.active_runs(db):
        jobs.cancel(run["run_id"], db)
    deadline = time.monotonic() + 30
    while jobs.active_runs(db):
        if time.monotonic() > deadline:
            raise AssertionError("a run process did not end within 30 s of its cancel")
        time.sleep(0.2)
    st.cache_data.clear()
    st.cache_resource.clear()
