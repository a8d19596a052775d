"""Scripted engine servers for tests and benchmarks: exact timing, faults, recording."""

from tests.scripted.core import FAULTS, Recorded, ScriptedServer
from tests.scripted.ollama_server import OllamaScript, OllamaServer
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

__all__ = [
    "FAULTS",
    "OllamaScript",
    "OllamaServer",
    "OpenAIScript",
    "OpenAIServer",
    "Recorded",
    "ScriptedServer",
]
