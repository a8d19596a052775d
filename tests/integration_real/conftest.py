"""The sandbox engines serving the real Qwen2.5-Coder-0.5B-Instruct (PyPI parts, checked).

Package scope, after ``tests/integration/`` (whose tiny-model engines are stopped by
then): the real model's vLLM takes about 1.5 min to start on 2 cores, and its first
preparation (download, sha256, requantizing, the bf16 copy) about another minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.pypi_models import DEFAULT
from tests.integration.conftest import cli, running_engines  # noqa: F401  (fixture)


@pytest.fixture(scope="package")
def real_engines() -> Iterator[dict[str, dict[str, Any]]]:
    """vLLM and llama.cpp serving the real model (status --json entries, and "model")."""
    with running_engines(DEFAULT) as found:
        yield found
