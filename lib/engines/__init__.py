"""Engine adapters: one module per API dialect, and `make_engine` to pick one."""

from __future__ import annotations

from lib.engines.base import Engine, EngineError, EngineUnreachable, ModelNotFound

__all__ = ["Engine", "EngineError", "EngineUnreachable", "ModelNotFound", "make_engine"]

# Flavours of the OpenAI dialect that can be named directly (skips detection).
OPENAI_FLAVORS = ("openai", "vllm", "llama.cpp")


def make_engine(kind: str, base_url: str, api_key: str | None = None) -> Engine:
    """An adapter for `kind` at `base_url`.

    kind: "ollama" (native API), or "openai" for any OpenAI-compatible server — its
    flavour (vLLM, llama.cpp, generic) is detected on first use; "vllm" and
    "llama.cpp" name it directly. A bare `http://host:port` gets `/v1` for the
    OpenAI dialect. Raises EngineError for an unknown kind or an invalid URL.
    """
    # Imported here so that importing lib.engines stays cheap (no openai import).
    if kind == "ollama":
        from lib.engines.ollama import OllamaEngine

        return OllamaEngine(base_url, api_key)
    if kind in OPENAI_FLAVORS:
        from lib.engines.openai_compat import OpenAICompatEngine

        flavor = None if kind == "openai" else kind
        return OpenAICompatEngine(base_url, api_key, flavor=flavor)
    raise EngineError(f"unknown engine kind {kind!r}; expected ollama, {', '.join(OPENAI_FLAVORS)}")
