"""Scripted engine servers for tests and benchmarks: exact timing, faults, recording.

Names are imported lazily so that `python -m tests.scripted.openai_server` does not
import its own module twice (runpy warns when the package already did).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FAULTS": "core",
    "Recorded": "core",
    "ScriptedServer": "core",
    "OllamaScript": "ollama_server",
    "OllamaServer": "ollama_server",
    "OpenAIScript": "openai_server",
    "OpenAIServer": "openai_server",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
