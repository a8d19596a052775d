"""Running a benchmark: the load generator and what feeds and starts it.

workloads (prompt presets and the user's prompt files), runner (lanes × concurrency
levels against the engines, telemetry beside them, everything into the store), jobs
(a run as a background `python -m lib.cli run` process the dashboard can follow and
cancel), engine_logs (a failing sandbox engine's log tail, stored with the run).
"""
