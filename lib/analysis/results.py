"""Read a run back from the store as the documents the CLI, pages and reports show.

`run_document` is the CLI's output JSON (the contract in issue "Benchmark core");
`summary_rows` is the flat per-lane-per-level table the CLI prints and the pages
draw from. Statistics always come from metrics.py over the stored requests, so a
run in progress and a finished one read the same way.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from lib import store
from lib.analysis import load_levels, validation
from lib.analysis.lane_memory import engine_kind
from lib.core import metrics, outcome
from lib.core.slo import Slo


class RunNotFound(LookupError):
    """No run with that id in the store."""


def _prompt_text(config: dict[str, Any], prompt_idx: int) -> str:
    synthetic = config.get("synthetic")
    if synthetic:  # built per lane and level from the run's seed, not stored
        return f"(synthetic prompt of {synthetic['input_tokens']} tokens)"
    prompts = config.get("prompts") or []
    if not 0 <= prompt_idx < len(prompts):
        return ""
    for message in reversed(prompts[prompt_idx].get("messages", [])):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def load_run(conn: Any, run_id: str) -> dict[str, Any]:
    """The run row, its lanes, levels and measured requests grouped by (lane, level)."""
    run = store.get_run(conn, run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r} in the store")
    requests = store.get_requests(conn, run_id, include_warmup=True)
    grouped: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    warmups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec in requests:
        if rec["warmup"]:
            warmups[rec["lane_idx"]].append(rec)
        else:
            grouped[(rec["lane_idx"], rec["concurrency"])].append(rec)
    return {
        "run": run,
        "lanes": store.get_lanes(conn, run_id),
        "levels": store.get_levels(conn, run_id),
        "warmup_levels": store.get_levels(conn, run_id, warmup=True),
        "requests": grouped,
        "warmups": warmups,
        "samples": store.get_samples(conn, run_id),
        "has_votes": bool(store.get_votes(conn, run_id)),
    }


def run_document(db: str | os.PathLike[str] | None, run_id: str) -> dict[str, Any]:
    """The run as the CLI's output JSON."""
    with store.opened(db) as conn:
        data = load_run(conn, run_id)
    run, config = data["run"], data["run"]["config"]
    lanes_out = []
    stored = {(lv["lane_idx"], lv["concurrency"]): lv for lv in data["levels"]}
    settings = _settings(config, run["env"])
    for lane in data["lanes"]:
        levels_out = []
        kind = engine_kind({"engine_info": _info(lane), "engine": lane["engine"]})
        telemetry = lane_telemetry(data, lane["lane_idx"])  # its client samples included
        for c in _lane_levels(data, lane["lane_idx"]):
            recs = data["requests"].get((lane["lane_idx"], c), [])
            row = stored.get((lane["lane_idx"], c))
            summary = metrics.level_summary(recs, concurrency=c)
            summary |= load_levels.load_fields(c, row.get("load") if row else None, recs)
            summary |= _level_outcome(row, summary, recs)
            # The level's own checks of its measurements (lib/analysis/validation.py).
            summary["validation"] = validation.level_checks(
                recs, c, kind, settings, telemetry, row.get("load") if row else None
            )
            summary["requests"] = [_request_out(config, r) for r in recs]
            levels_out.append(summary)
        warm = data["warmups"].get(lane["lane_idx"], [])
        lanes_out.append(
            {
                "name": lane["name"],
                "engine": lane["engine"],
                "base_url": lane["base_url"],
                "model": lane["model"],
                "engine_info": {**lane["engine_info"].get("extra", {}), **_info(lane)},
                "model_info": lane["model_info"],
                "status": outcome.combined_status(lv["status"] for lv in levels_out),
                "warmup_status": _warmup_outcome(data, lane["lane_idx"]),
                "warmup": [_request_out(config, r) for r in warm],
                "levels": levels_out,
                "telemetry": telemetry,
                # Only for a lane whose engine servescope started from a recipe.
                **engine_process_out(lane.get("engine_process")),
            }
        )
    names = [lane["name"] for lane in lanes_out]
    all_levels = [
        {"lane_idx": i, **lv} for i, lane in enumerate(lanes_out) for lv in lane["levels"]
    ]  # failure_lines picks the troubled ones
    status, error = run["status"], run["error"]
    if status == outcome.COMPLETED:
        # Runs stored before outcomes were judged: say now what their requests did.
        status = outcome.combined_status(lane["status"] for lane in lanes_out)
        error = error or outcome.run_error(all_levels, names)
    document = {
        "run_id": run["run_id"],
        "created_at": run["created_at"],
        # Who started the run and on which host (None for a run stored before either was).
        "started_by": run.get("started_by"),
        "host": run.get("host"),
        "label": run["label"],
        "status": status,
        "error": error,
        "failures": outcome.failure_lines(all_levels, names),
        "validation": validation.run_verdict(lanes_out),
        "settings": settings,
        "environment": run["env"],
        "lanes": lanes_out,
    }
    slo = Slo.from_dict(config.get("slo"))
    if slo is not None and not slo.is_empty():
        # Each level's attainment and goodput, each lane's capacity (lib/analysis/load_levels).
        search = (config.get("capacity") or {}).get("mode")
        document = load_levels.judge(document, slo, search)
    if data["has_votes"]:
        # Blind-review votes travel with the run (Compare page), with win rates' inputs.
        from lib.quality.review import votes_export

        document["votes"] = votes_export(db, run_id)
    return document


def lane_telemetry(data: dict[str, Any], lane_idx: int) -> list[dict[str, Any]]:
    """A lane's samples, plus machine-wide ones (GPU) taken while the lane ran.

    `t` is seconds since the run started; names are as the engine gives them.
    """
    start = data["run"]["started_at"] or data["run"]["created_at"]
    window = [
        (lv["started_at"], lv["finished_at"])
        for lv in data["levels"]
        if lv["lane_idx"] == lane_idx and lv["started_at"] is not None
    ]
    first = min((a for a, _ in window), default=None)
    last = max((b or float("inf") for _, b in window), default=None)
    out = []
    for s in data["samples"]:
        mine = s["lane_idx"] == lane_idx
        during = s["lane_idx"] is None and first is not None and first - 1.0 <= s["t"] <= last + 1.0
        if mine or during:
            item = {"t": s["t"] - start, "source": s["source"], "name": s["name"]}
            item["value"] = s["value"]
            if s["labels"]:
                item["labels"] = s["labels"]
            out.append(item)
    return out


def engine_process_out(record: dict[str, Any] | None) -> dict[str, Any]:
    """{"engine_process": ...} for a started engine's lane, {} for a plain endpoint."""
    return {"engine_process": record} if record else {}


def _info(lane: dict[str, Any]) -> dict[str, Any]:
    info, model = lane["engine_info"], lane["model_info"]
    return {
        "kind": info.get("kind"),
        "version": info.get("version"),
        "quantization": model.get("quantization"),
        "context_length": model.get("context_length"),
        "parameter_size": model.get("parameter_size"),
        "digest": model.get("digest"),
    }


def _settings(config: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    load = dict(config.get("load") or {"mode": "concurrency"})
    if load.get("seed") is None and env.get("load_seed") is not None:
        load["seed"] = env["load_seed"]  # drawn by the runner after the config was stored
    synthetic = dict(config["synthetic"]) if config.get("synthetic") else None
    if synthetic is not None and synthetic.get("seed") is None:
        synthetic["seed"] = env.get("synthetic_seed")
    return {
        **config.get("sampling", {}),
        "concurrency": config.get("concurrency"),
        "requests": config.get("requests"),
        "warmup": config.get("warmup"),
        "timeout_s": config.get("timeout_s"),
        "lanes_parallel": config.get("lanes_parallel"),
        "num_ctx": config.get("num_ctx"),
        "prompts": len(config.get("prompts") or []),
        "load": load,
        "slo": config.get("slo"),
        "capacity": config.get("capacity"),
        "synthetic": synthetic,
        # Load-generator processes used (lib/load/worker_pool.py); runs before them used one.
        "workers": env.get("load_workers", 1),
    }


def _level_outcome(
    row: dict[str, Any] | None, summary: dict[str, Any], recs: list[dict[str, Any]]
) -> dict[str, Any]:
    """A level's status and reason as the runner stored them; for runs stored before
    levels had outcomes, judged from the requests now (same rule)."""
    status = row["status"] if row else None
    error = row.get("error") if row else None
    if status in (None, outcome.COMPLETED) and summary["failed"]:
        # Older runs called a level "completed" whatever its requests did.
        status = outcome.level_status(summary["completed"], summary["failed"])
        errors = [r["error"] for r in recs if r.get("error")]
        error = error or outcome.error_reason(errors, summary["completed"] + summary["failed"])
    return {"status": status or outcome.WAITING, "error": error}


def _warmup_outcome(data: dict[str, Any], lane_idx: int) -> dict[str, Any] | None:
    row = next((w for w in data["warmup_levels"] if w["lane_idx"] == lane_idx), None)
    if row is None:
        return None
    return {
        "status": row["status"],
        "error": row.get("error"),
        "started_at": row.get("started_at"),
        "finished_at": row.get("finished_at"),
    }


def _lane_levels(data: dict[str, Any], lane_idx: int) -> list[int]:
    """Levels of a lane in configured order, including ones with no request yet."""
    configured = data["run"]["config"].get("concurrency") or []
    seen = {lv["concurrency"] for lv in data["levels"] if lv["lane_idx"] == lane_idx}
    seen |= {c for (li, c) in data["requests"] if li == lane_idx}
    return [c for c in configured if c in seen] + sorted(seen - set(configured))


def _request_out(config: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    out = {
        "index": rec["idx"],
        "prompt": _prompt_text(config, rec["prompt_idx"]),
        "ttft_ms": rec["ttft_ms"],
        "ttfat_ms": rec.get("ttfat_ms"),
        "reasoning_ms": rec.get("reasoning_ms"),
        "tpot_ms": rec["tpot_ms"],
        "e2el_ms": rec["e2el_ms"],
        "itl_ms": rec["itl_ms"],
        "prompt_tokens": rec["prompt_tokens"],
        "output_tokens": rec["output_tokens"],
        "token_source": rec["token_source"],
        "output_text": rec["output_text"],
        "finish_reason": rec["finish_reason"],
        "error": rec["error"],
        "server": rec["server"],
    }
    if rec.get("quality") is not None:
        out["quality"] = rec["quality"]
    return out


def level_headline(lane: str, level: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one lane at one level, flat (tables, CLI, pages).

    Open-loop levels name their rate and the rate achieved; with an SLO, each level's
    attainment and goodput follow the figures."""
    row = {
        "lane": lane,
        "concurrency": level["concurrency"],
        "completed": level["completed"],
        "failed": level["failed"],
        "duration_s": level["duration_s"],
        "req_per_s": level["request_throughput"],
        "out_tok_per_s": level["output_throughput"],
        "ttft_p50_ms": level["ttft_ms"]["p50"],
        "ttft_p99_ms": level["ttft_ms"]["p99"],
        "tpot_p50_ms": level["tpot_ms"]["p50"],
        "e2el_p50_ms": level["e2el_ms"]["p50"],
        "e2el_p99_ms": level["e2el_ms"]["p99"],
        "tok_per_s_p50": level["tokens_per_s"]["p50"],
    }
    if level.get("load_mode") == "rate":
        row = {"lane": lane, "rate": level.get("load_label"), **row}
        row.pop("concurrency")
        row["achieved_req_per_s"] = level.get("achieved_rate")
    if level.get("slo"):
        attainment = level["slo"]["attainment"]
        row["slo_met_pct"] = None if attainment is None else 100.0 * attainment
        row["goodput_req_per_s"] = level["slo"]["goodput"]
    return row


def summary_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per lane and level: the headline figures."""
    return [
        level_headline(lane["name"], level)
        for lane in document["lanes"]
        for level in lane["levels"]
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal."""
    if not rows:
        return "(no measured requests)"
    headers = list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    table = [headers, *[[cell(r[h]) for h in headers] for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
