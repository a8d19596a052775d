"""Memory phases of an engine's life, from its log lines and from what servescope saw.

An engine's memory grows in steps (the seed's row: 3 -> 5770 MiB loading the model ->
20898 MiB reserving the KV cache). The steps are named here by the log lines each engine
writes when it finishes one; the watcher stamps a phase the moment it reads its line,
with the memory the tree held then. "started", "ready", "first request", "idle" and
"stopped" come from servescope itself (spawn, readiness, the lane's requests).
"""

from __future__ import annotations

import re

from lib.core.recipes import LLAMA_CPP, OLLAMA, VLLM

STARTED = "process started"
WEIGHTS = "weights loaded"
KV_CACHE = "KV cache reserved"
READY = "ready"
FIRST_REQUEST = "first request"
IDLE = "idle"
STOPPED = "stopped"
ORDER = (STARTED, WEIGHTS, KV_CACHE, READY, FIRST_REQUEST, IDLE, STOPPED)

# Checked against real logs: vLLM 0.32 (CPU), llama.cpp through llama-cpp-python 0.3.36
# (verbose) in the sandbox, and llama-server built from the same llama.cpp; Ollama prints
# llama.cpp's own loader lines (not checked here: no Ollama can be installed).
LOG_PATTERNS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    VLLM: (
        (WEIGHTS, re.compile(r"Loading weights took|Model loading took")),
        (KV_CACHE, re.compile(r"KV cache size:|# (CPU|GPU) blocks:|Maximum concurrency for")),
    ),
    # llama-server at its default verbosity prints no loader lines: its context is made
    # ("llama threadpool init") once the weights are in, its slots ("n_ctx_slot") once
    # the KV cache is.
    LLAMA_CPP: (
        (
            WEIGHTS,
            re.compile(
                r"load_tensors: .*buffer size|llm_load_tensors: .*buffer size|threadpool init"
            ),
        ),
        (KV_CACHE, re.compile(r"KV buffer size|KV self size|kv_cache.*size =|n_ctx_slot =")),
    ),
    OLLAMA: (
        (WEIGHTS, re.compile(r"load_tensors: .*buffer size|llama runner started")),
        (KV_CACHE, re.compile(r"KV buffer size|KV self size|kv_cache.*size =")),
    ),
}


def phases_in(engine: str, lines: list[str], seen: set[str]) -> list[str]:
    """The phases whose line is among ``lines`` and not in ``seen`` yet, in log order."""
    found: list[str] = []
    for line in lines:
        for phase, pattern in LOG_PATTERNS.get(engine, ()):
            if phase not in seen and phase not in found and pattern.search(line):
                found.append(phase)
    return found
