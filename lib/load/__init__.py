"""Running a benchmark: the load generator and what feeds and starts it.

workloads (prompt presets and the user's prompt files), synthetic + lane_prompts
(prompts of exact token lengths per lane and level), runner (lanes × levels against the
engines, telemetry beside them, everything into the store) with run_state (lanes and
shared state), one_request (a request and its record), level_drivers (closed loop or an
open-loop schedule), arrivals (the schedule) and capacity (the capacity search),
worker_pool + load_worker (a level spread over load-generator processes: one clock, one
schedule, rows back as each request finishes) with worker_count (how many: automatic or
`--workers N`, and which counts are refused) and open_files (enough sockets for the
streams), client_probe (the client's own loop lag and counts, per level), jobs
(a run as a background `python -m lib.cli run` process the dashboard can follow and
cancel), engine_logs (a failing sandbox engine's log tail, stored with the run).
"""
