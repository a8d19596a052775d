"""The Ollama stand-in, allowed by the operator's list, for the launch tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.launch.executables import OPERATOR_VAR
from tests.scripted.ollama_standin import write_executable


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An executable `ollama` stand-in in its own folder, listed in the operator's
    allow-list (the way an operator allows an engine outside the PATH)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    path = write_executable(folder)
    monkeypatch.setenv(OPERATOR_VAR, str(path))
    return path
