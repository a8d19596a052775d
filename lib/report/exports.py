"""A run's per-request rows as CSV and Parquet, and its levels as `vllm bench serve`
result JSON, so servescope's numbers line up with vLLM's own tool.

Rows come straight from the store (warm-ups included, marked `warmup`), with the lane's
name, engine and model and the prompt's text beside them. Answers are exported as the
engine wrote them: these are data files, not pages (the HTML report escapes them); only
in CSV does a text cell a spreadsheet would evaluate as a formula get a leading `'`
(lib.core.csv_safe), as spreadsheets open CSV and run what looks like a formula.

vLLM JSON (`vllm_results`): one object per lane and level, with the fields and units
`vllm bench serve --save-result --save-detailed` writes (vllm/benchmarks/serve.py):
per-request lists in seconds (`ttfts`, `itls`, `latencies`), summary statistics in ms
(`mean_ttft_ms`, `median_ttft_ms`, `std_ttft_ms`, `p99_ttft_ms`, ...). A failed request
has ttft and latency 0.0 and its message in `errors`, as vLLM writes them; warm-ups are
left out, as vLLM leaves its warm-ups out. Where servescope cannot know a value the
way vLLM computes it (`request_goodput` without SLOs, `tokenizer_id`: counts come from
the server) it is null. servescope's own facts ride along as `servescope_*` keys, the
way `vllm bench serve --metadata KEY=VALUE` adds keys.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib import store
from lib.analysis import results
from lib.core import csv_safe, metrics

FORMATS = ("csv", "parquet", "json")

# One row per request, in this order, in every table format.
ROW_COLUMNS: tuple[str, ...] = (
    "run_id",
    "lane_idx",
    "lane",
    "engine",
    "model",
    "concurrency",
    "idx",
    "warmup",
    "prompt_idx",
    "prompt",
    "t_send",
    "t_done",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "tokens_per_s",
    "itl_ms",
    "prompt_tokens",
    "output_tokens",
    "token_source",
    "output_text",
    "finish_reason",
    "error",
    "quality_flags",
    "server",
    "quality",
)

PARQUET_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("lane_idx", pa.int32()),
        ("lane", pa.string()),
        ("engine", pa.string()),
        ("model", pa.string()),
        ("concurrency", pa.int32()),
        ("idx", pa.int32()),
        ("warmup", pa.bool_()),
        ("prompt_idx", pa.int32()),
        ("prompt", pa.string()),
        ("t_send", pa.float64()),
        ("t_done", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("e2el_ms", pa.float64()),
        ("tpot_ms", pa.float64()),
        ("tokens_per_s", pa.float64()),
        ("itl_ms", pa.list_(pa.float64())),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("token_source", pa.string()),
        ("output_text", pa.string()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("quality_flags", pa.list_(pa.string())),
        ("server", pa.string()),  # JSON text: its keys differ by engine
        ("quality", pa.string()),  # JSON text: lib.quality.check_answer's result
    ]
)

STAT_METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 99)


class ExportError(ValueError):
    """An export cannot be written as asked (unknown format)."""


# --- rows ---------------------------------------------------------------------------------


def _prompt_text(config: Mapping[str, Any], prompt_idx: int) -> str:
    prompts = config.get("prompts") or []
    if not 0 <= prompt_idx < len(prompts):
        return ""
    for message in reversed(prompts[prompt_idx].get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _load(db: str | os.PathLike[str] | None, run_id: str) -> tuple[dict, list, list]:
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            raise results.RunNotFound(f"no run {run_id!r} in the store")
        lanes = store.get_lanes(conn, run_id)
        rows = store.get_requests(conn, run_id, include_warmup=True)
    return run, lanes, rows


def request_records(db: str | os.PathLike[str] | None, run_id: str) -> list[dict[str, Any]]:
    """Every request of a run (warm-ups too) as dicts keyed by ROW_COLUMNS, in the
    order they were written. `itl_ms` and `quality_flags` are lists; `server` and
    `quality` are dicts (or None). Raises results.RunNotFound."""
    return _run_and_records(db, run_id)[1]


def _run_and_records(
    db: str | os.PathLike[str] | None, run_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's row and its request_records, from one read."""
    run, lanes, rows = _load(db, run_id)
    by_idx = {lane["lane_idx"]: lane for lane in lanes}
    out = []
    for r in rows:
        lane = by_idx.get(r["lane_idx"], {})
        quality = r.get("quality")
        flags = [f.get("code") for f in (quality or {}).get("flags") or []]
        rec = {key: r.get(key) for key in ROW_COLUMNS if key in r}
        rec |= {
            "run_id": run_id,
            "lane": lane.get("name"),
            "engine": (lane.get("engine_info") or {}).get("kind") or lane.get("engine"),
            "model": lane.get("model"),
            "prompt": _prompt_text(run["config"], r["prompt_idx"]),
            "itl_ms": list(r.get("itl_ms") or []),
            "quality_flags": flags,
            "server": r.get("server"),
            "quality": quality,
        }
        out.append({key: rec.get(key) for key in ROW_COLUMNS})
    return run, out


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def request_frame(db: str | os.PathLike[str] | None, run_id: str) -> pd.DataFrame:
    """The rows as a DataFrame: nullable integers, lists and dicts as JSON text (for CSV)."""
    records = request_records(db, run_id)
    flat = [
        rec
        | {
            "itl_ms": _json_text(rec["itl_ms"]),
            "quality_flags": ";".join(rec["quality_flags"]),
            "server": _json_text(rec["server"]),
            "quality": _json_text(rec["quality"]),
        }
        for rec in records
    ]
    frame = pd.DataFrame.from_records(flat, columns=list(ROW_COLUMNS))
    for col in ("lane_idx", "concurrency", "idx", "prompt_idx", "prompt_tokens", "output_tokens"):
        frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
    for col in ("t_send", "t_done", "ttft_ms", "e2el_ms", "tpot_ms", "tokens_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["warmup"] = frame["warmup"].astype(bool)
    return frame


def csv_bytes(db: str | os.PathLike[str] | None, run_id: str) -> bytes:
    """The rows as UTF-8 CSV. Every text cell is quoted, so answers holding newlines or a
    bare carriage return stay one cell; a text cell a spreadsheet would evaluate (leading
    `=`, `+`, `-`, `@`, tab or CR) gets a leading `'` (lib.core.csv_safe); numbers stay numbers
    and floats are written to round-trip exactly."""
    frame = request_frame(db, run_id)
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):  # text: numbers stay numbers
            frame[col] = frame[col].map(csv_safe.guard)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return buffer.getvalue().encode("utf-8")


def parquet_bytes(db: str | os.PathLike[str] | None, run_id: str) -> bytes:
    """The rows as Parquet (PARQUET_SCHEMA): `itl_ms` a list of doubles, `quality_flags` a
    list of strings, `server` and `quality` JSON text."""
    run, records = _run_and_records(db, run_id)
    for rec in records:
        rec["server"], rec["quality"] = _json_text(rec["server"]), _json_text(rec["quality"])
    meta = {"servescope.run_id": run_id, "servescope.rows": "requests/1"}
    # Who started the run and where ride in the file's metadata, not in every row.
    meta |= {f"servescope.{k}": str(run[k]) for k in ("started_by", "host") if run.get(k)}
    schema = PARQUET_SCHEMA.with_metadata(meta)
    table = pa.Table.from_pylist(records, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


# --- vLLM bench serve JSON ---------------------------------------------------------------


def _stats(values: Sequence[float], name: str) -> dict[str, float | None]:
    """mean/median/std/pXX of one metric in ms, as vLLM names them (population std)."""
    out: dict[str, float | None] = {}
    arr = np.asarray(values, dtype=float)
    empty = arr.size == 0
    out[f"mean_{name}_ms"] = None if empty else float(arr.mean())
    out[f"median_{name}_ms"] = None if empty else float(np.median(arr))
    out[f"std_{name}_ms"] = None if empty else float(arr.std())
    for p in PERCENTILES:
        out[f"p{p}_{name}_ms"] = None if empty else float(np.percentile(arr, p))
    return out


def _max_concurrent(rows: Sequence[Mapping[str, Any]]) -> int:
    """Most requests in flight at once (a sweep over send and finish times)."""
    events = sorted([(r["t_send"], 1) for r in rows] + [(r["t_done"], -1) for r in rows])
    peak = now = 0
    for _, step in events:  # at equal times a finish (-1) sorts before a send
        now += step
        peak = max(peak, now)
    return peak


def vllm_result(
    run: Mapping[str, Any],
    lane: Mapping[str, Any],
    concurrency: int,
    rows: Sequence[dict],
    checks: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """One lane's level as `vllm bench serve --save-result --save-detailed` writes it,
    with the level's `checks` (its validation list) under "validation"."""
    summary = metrics.level_summary(rows, concurrency=concurrency)
    done = [r for r in rows if not r.get("error")]
    duration = summary["duration_s"]
    total_in, total_out = summary["total_input_tokens"], summary["total_output_tokens"]
    info = lane.get("engine_info") or {}
    result: dict[str, Any] = {
        "date": datetime.fromtimestamp(run["created_at"]).strftime("%Y%m%d-%H%M%S"),
        # vLLM's backend for a chat endpoint is "openai-chat"; Ollama's native API has no
        # vLLM backend name, so it says what it is.
        "endpoint_type": "ollama" if lane["engine"] == "ollama" else "openai-chat",
        "backend": "ollama" if lane["engine"] == "ollama" else "openai-chat",
        "label": run.get("label") or None,
        "model_id": lane["model"],
        "tokenizer_id": None,  # token counts come from the server, not a tokenizer
        "num_prompts": len(rows),
        "servescope_run_id": run["run_id"],
        # Who started the run and on which host (null for a run stored before either was).
        "servescope_started_by": run.get("started_by"),
        "servescope_host": run.get("host"),
        "servescope_lane": lane["name"],
        "servescope_engine": info.get("kind") or lane["engine"],
        "servescope_engine_version": info.get("version"),
        "servescope_quantization": (lane.get("model_info") or {}).get("quantization"),
        "request_rate": "inf",  # closed loop: every request queued at once, capped below
        "burstiness": 1.0,
        "max_concurrency": concurrency,
        "duration": duration,
        "completed": summary["completed"],
        "failed": summary["failed"],
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": summary["request_throughput"],
        "request_goodput": None,  # no SLOs given
        "output_throughput": summary["output_throughput"],
        "total_token_throughput": (total_in + total_out) / duration if duration else None,
        "input_lens": [r.get("prompt_tokens") for r in rows],
        "output_lens": [0 if r.get("error") else r.get("output_tokens") for r in rows],
        "ttfts": [r["ttft_ms"] / 1000.0 if r.get("ttft_ms") is not None else 0.0 for r in rows],
        "itls": [[v / 1000.0 for v in r.get("itl_ms") or []] for r in rows],
        "latencies": [
            r["e2el_ms"] / 1000.0 if not r.get("error") and r.get("e2el_ms") else 0.0 for r in rows
        ],
        "start_times": [r["t_send"] for r in rows],
        "generated_texts": [r.get("output_text") or "" for r in rows],
        "errors": [r.get("error") or "" for r in rows],
        "max_concurrent_requests": _max_concurrent(rows),
    }
    pooled_itl = [v for r in done for v in r.get("itl_ms") or []]
    values = {
        "ttft": [r["ttft_ms"] for r in done if r.get("ttft_ms") is not None],
        "tpot": [r["tpot_ms"] for r in done if r.get("tpot_ms") is not None],
        "itl": pooled_itl,
        "e2el": [r["e2el_ms"] for r in done if r.get("e2el_ms") is not None],
    }
    for name in STAT_METRICS:
        result |= _stats(values[name], name)
    result["validation"] = [dict(c) for c in checks]
    return result


def vllm_results(db: str | os.PathLike[str] | None, run_id: str) -> list[dict[str, Any]]:
    """Every lane and level of a run (measured requests only), lanes in order, levels in
    the configured order. Raises results.RunNotFound."""
    run, lanes, rows = _load(db, run_id)
    order = {c: i for i, c in enumerate(run["config"].get("concurrency") or [])}
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        if not r["warmup"]:
            groups.setdefault((r["lane_idx"], r["concurrency"]), []).append(r)
    by_idx = {lane["lane_idx"]: lane for lane in lanes}
    keys = sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    # The checks as the results document makes them (same rows, client samples and
    # settings), so the JSON says what the Results page and the report say.
    doc = results.run_document(db, run_id)
    checks = {
        (lane["lane_idx"], lv["concurrency"]): lv.get("validation") or []
        for lane, out in zip(lanes, doc["lanes"], strict=True)
        for lv in out["levels"]
    }
    return [
        vllm_result(run, by_idx[li], c, groups[(li, c)], checks.get((li, c), ()))
        for li, c in keys
        if li in by_idx
    ]


def json_bytes(db: str | os.PathLike[str] | None, run_id: str, lines: bool = False) -> bytes:
    """vllm_results as a JSON list, or with `lines` one object per line (the layout of
    `vllm bench serve --append-result`)."""
    found = vllm_results(db, run_id)
    if lines:
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in found) + "\n"
    else:
        text = json.dumps(found, ensure_ascii=False, indent=1) + "\n"
    return text.encode("utf-8")


# --- files --------------------------------------------------------------------------------


def export_bytes(
    db: str | os.PathLike[str] | None, run_id: str, fmt: str, lines: bool = False
) -> bytes:
    """The run in one of FORMATS ("csv", "parquet", "json"), as bytes for a download."""
    if fmt == "csv":
        return csv_bytes(db, run_id)
    if fmt == "parquet":
        return parquet_bytes(db, run_id)
    if fmt == "json":
        return json_bytes(db, run_id, lines=lines)
    raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def write_export(
    db: str | os.PathLike[str] | None, run_id: str, fmt: str, path: str | os.PathLike[str]
) -> Path:
    """Write the run to `path` in `fmt`; a .jsonl path gets one JSON object per line."""
    out = Path(path)
    data = export_bytes(db, run_id, fmt, lines=out.suffix.lower() == ".jsonl")
    out.write_bytes(data)
    return out
