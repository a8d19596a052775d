"""The words of the verdict (lib/analysis/verdict.py): numbers rounded for people, and the
engine setting that decides how many requests an engine serves at once.

Numbers keep two significant figures (3.2 s, 92%, ×6.9, 520 tok/s) and always carry their
unit: a sentence is read once, by someone deciding, not compared digit by digit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENGINE_NAMES = {
    "vllm": "vLLM",
    "ollama": "Ollama",
    "llama.cpp": "llama.cpp",
    "openai": "OpenAI API",
}

# What to change when a lane queues, by engine kind (lib/engines/detect's kinds).
SETTINGS = {
    "ollama": (
        "raise OLLAMA_NUM_PARALLEL on the Ollama server (requests it runs at once per model, "
        "each with its own context memory); OLLAMA_MAX_QUEUE caps how many wait (default 512)"
    ),
    "vllm": (
        "vLLM runs up to --max-num-seqs requests at once and --max-num-batched-tokens per "
        "step; a KV cache too small for them (raise --gpu-memory-utilization, or lower "
        "--max-model-len) also makes requests wait"
    ),
    "llama.cpp": (
        "llama-server serves --parallel (-np) slots at once and splits --ctx-size among them: "
        "raise -np, and --ctx-size with it so each slot keeps its context"
    ),
}
# The sandbox's llama.cpp: its Python server holds a lock around the model (llama_cpp/server
# app.py, llama_outer_lock), so no setting of its own makes it serve two requests at once.
LLAMA_CPP_PYTHON = (
    "llama-cpp-python's server answers one request at a time whatever its settings; for "
    "concurrent users serve the model with llama.cpp's llama-server --parallel N "
    "(and --ctx-size N × the context one request needs)"
)
GENERIC = "the server's batch/parallel setting (how many requests it runs at once) decides this"


def engine_setting(kind: str, engine_info: Mapping[str, Any] | None) -> str:
    """The setting that changes how many requests this engine serves at once."""
    if kind == "llama.cpp" and (engine_info or {}).get("server") == "llama-cpp-python":
        return LLAMA_CPP_PYTHON
    return SETTINGS.get(kind, GENERIC)


def engine_name(kind: str) -> str:
    return ENGINE_NAMES.get(kind, kind or "engine")


def sig2(x: float) -> str:
    """Two significant figures, never in exponent form: 0.15, 3.2, 12, 520, 1200."""
    text = f"{x:.2g}"
    if "e" in text:
        value = float(text)
        text = f"{value:.0f}" if abs(value) >= 1 else f"{value:f}".rstrip("0")
    return text


def dur(ms: float, seconds: bool | None = None) -> str:
    """A duration: ms under a second, else s (`seconds` forces one or the other)."""
    if seconds is None:
        seconds = abs(ms) >= 1000.0
    return f"{sig2(ms / 1000.0)} s" if seconds else f"{sig2(ms)} ms"


def dur_pair(a_ms: float, b_ms: float) -> tuple[str, str]:
    """Two durations in one unit, the larger's ("from 0.1 s to 12 s")."""
    seconds = max(abs(a_ms), abs(b_ms)) >= 1000.0
    return dur(a_ms, seconds), dur(b_ms, seconds)


def pct(share: float) -> str:
    return f"{sig2(100.0 * share)}%"


def times(ratio: float) -> str:
    return f"×{sig2(ratio)}"


def tok_s(value: float) -> str:
    return f"{sig2(value)} tok/s"


def req_s(value: float) -> str:
    return f"{sig2(value)} req/s"


def users(n: float) -> str:
    n_text = sig2(n)
    return f"{n_text} user" if n_text == "1" else f"{n_text} users"
