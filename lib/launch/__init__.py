"""Starting engine variants from recipes, watching them from their first second, stopping them.

- ``executables``: which program a recipe may start (the allow-list) and whether the
  dashboard may launch engines at all.
- ``command``: a recipe's argument list and environment (never a shell string), on
  loopback.
- ``phases``: memory phases from an engine's log lines (weights loaded, KV cache
  reserved, ...).
- ``engine_process``: ``EngineProcess``: spawn with its log beside the run, a watcher
  thread (memory of the process tree, log phases), readiness with a timeout, stop with
  every child, and the ``engine_process`` record a run's lane keeps.

Imports core and telemetry only; the sandbox lazily, for ``executable="sandbox"``.
"""
