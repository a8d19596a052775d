"""The Run page's tests share one environment: scripted Ollama and vLLM endpoints and a
fresh store, with every run child cancelled and waited for afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib import store
from lib.load import jobs


@pytest.fixture
def env(db, monkeypatch, engines) -> Iterator[Path]:
    ollama, vllm = engines
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", ollama.url)
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", vllm.base_url)
    yield db
    for run in jobs.active_runs(db):  # never leave a child process behind
        jobs.cancel(run["run_id"], db)
        _wait_ended(db, run["run_id"], 30)


def _wait_ended(db: Path, run_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.opened(db) as conn:
            run = store.get_run(conn, run_id)
        if run is None or run["status"] not in jobs.ACTIVE:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end in {timeout:g} s")
