"""pandas DataFrames for the dashboard, built from store rows and results documents.

No Streamlit here: the pages hand these frames to lib/charts.py and to st.dataframe.
Statistics come from lib/metrics.py (the same functions the CLI and results documents
use), so the live view and a finished run's results agree to the digit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from lib import store
from lib.analysis import results
from lib.analysis.lane_memory import lane_peak_memory
from lib.analysis.telemetry_frames import hardware_rows
from lib.core import metrics, outcome

# What the live view keeps of each request: numbers only. Answers and inter-token gaps
# stay in the store (the results page reads them through results.run_document), so a
# long run's log stays small in the dashboard's memory.
SLIM_FIELDS: tuple[str, ...] = (
    "id",
    "lane_idx",
    "concurrency",
    "idx",
    "prompt_idx",
    "t_send",
    "t_done",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "tokens_per_s",
    "prompt_tokens",
    "output_tokens",
    "error",
    "lang_drift",  # from the request's quality record: drifted from the prompt's language?
    "drift_lang",  # ... and to which language
)

REQUEST_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "idx",
    "prompt_idx",
    "t_rel_s",
    "ttft_ms",
    "e2el_ms",
    "elapsed_ms",
    "tpot_ms",
    "tokens_per_s",
    "output_tokens",
    "failed",
    "error",
)

# Per lane and level: the columns of results.summary_rows plus a few more percentiles.
LEVEL_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "completed",
    "failed",
    "duration_s",
    "req_per_s",
    "out_tok_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "e2el_p50_ms",
    "e2el_p99_ms",
    "tok_per_s_p50",
)

PROGRESS_COLUMNS: tuple[str, ...] = (
    "lane",
    "lane_idx",
    "concurrency",
    "status",
    "completed",
    "failed",
    "total",
    "fraction",
    "error",
)

OLLAMA_SERVER_KEYS: tuple[str, ...] = (
    "load_ms",
    "prompt_eval_ms",
    "queue_ms",
    "eval_ms",
    "eval_tokens_per_s",
)


# --- the live request log -------------------------------------------------------------


class RequestLog:
    """A run's measured requests, read incrementally from the store (`since_id`).

    The dashboard keeps one per run in st.cache_resource, so each second's redraw reads
    only the rows written since the last one. Thread-safe: several browser sessions
    may follow the same run. Connections are the caller's and never kept.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last_id = 0
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def refresh(self, conn: sqlite3.Connection) -> int:
        """Read rows newer than the last seen; return how many arrived."""
        with self._lock:
            new = store.get_requests(conn, self.run_id, since_id=self.last_id)
            for rec in new:
                q = rec.get("quality") or {}
                rec["lang_drift"] = q.get("lang_drift") if q else None
                rec["drift_lang"] = (q.get("lang") or {}).get("detected") if q else None
                self._rows.append(tuple(rec.get(f) for f in SLIM_FIELDS))
            if new:
                self.last_id = new[-1]["id"]
            return len(new)

    def rows(self) -> list[dict[str, Any]]:
        """A copy of the slim rows, oldest first."""
        with self._lock:
            return [dict(zip(SLIM_FIELDS, row, strict=True)) for row in self._rows]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


# --- runs and lanes ---------------------------------------------------------------------


def lane_names(run: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Display names by lane index: the stored lanes, else the config's (a pending run).

    The dashboard names lanes when it starts a run, so both agree and a lane keeps its
    colour from the first second.
    """
    if lanes:
        ordered = sorted(lanes, key=lambda lane: lane["lane_idx"])
        return [str(lane["name"]) for lane in ordered]
    out = []
    for lane in (run.get("config") or {}).get("lanes", []):
        out.append(lane.get("name") or f"{lane.get('engine')}:{lane.get('model')}")
    return out


def run_start(run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Time zero of the run's time axis (epoch seconds)."""
    sends = [r["t_send"] for r in rows if r.get("t_send") is not None]
    candidates = [*sends, *([run["started_at"]] if run.get("started_at") else [])]
    return min(candidates) if candidates else None


def _name(names: Sequence[str], idx: int) -> str:
    return names[idx] if 0 <= idx < len(names) else f"lane {idx + 1}"


def request_frame(
    rows: Iterable[Mapping[str, Any]], names: Sequence[str], t0: float | None
) -> pd.DataFrame:
    """One row per measured request, times relative to `t0` (seconds) and in ms.

    `elapsed_ms` is send to finish for every request, failed ones included (they have no
    E2E latency), so a timeout still shows on the timeline where it happened.
    """
    records = []
    for r in rows:
        t_send, t_done = r.get("t_send"), r.get("t_done")
        elapsed = (t_done - t_send) * 1000.0 if t_send is not None and t_done is not None else None
        records.append(
            {
                "lane": _name(names, r["lane_idx"]),
                "lane_idx": r["lane_idx"],
                "concurrency": r["concurrency"],
                "idx": r.get("idx"),
                "prompt_idx": r.get("prompt_idx"),
                "t_rel_s": (t_send - t0) if t_send is not None and t0 is not None else None,
                "ttft_ms": r.get("ttft_ms"),
                "e2el_ms": r.get("e2el_ms"),
                "elapsed_ms": elapsed,
                "tpot_ms": r.get("tpot_ms"),
                "tokens_per_s": r.get("tokens_per_s"),
                "output_tokens": r.get("output_tokens"),
                "failed": bool(r.get("error")),
                "error": r.get("error"),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=list(REQUEST_COLUMNS))
    for col in ("t_rel_s", "ttft_ms", "e2el_ms", "elapsed_ms", "tpot_ms", "tokens_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["failed"] = frame["failed"].astype(bool)
    return frame


def _level_row(lane: str, lane_idx: int, level: Mapping[str, Any]) -> dict[str, Any]:
    row = results.level_headline(lane, dict(level))
    return {"lane": row.pop("lane"), "lane_idx": lane_idx, **row}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in frame.columns:
        if col.endswith(("_ms", "_s")) or col in ("out_tok_per_s", "req_per_s"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def level_frame(
    rows: Iterable[Mapping[str, Any]],
    names: Sequence[str],
    concurrency_order: Sequence[int] = (),
) -> pd.DataFrame:
    """Per lane and level, the headline figures (metrics.level_summary over the rows).

    Levels come in the configured order, then any others, per lane in lane order.
    """
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["lane_idx"], r["concurrency"]), []).append(r)
    order = {c: i for i, c in enumerate(concurrency_order)}
    keys = sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    out = [
        _level_row(_name(names, li), li, metrics.level_summary(groups[(li, c)], concurrency=c))
        for li, c in keys
    ]
    return _typed(pd.DataFrame.from_records(out, columns=list(LEVEL_COLUMNS)))


def summary_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """The results document's per lane-and-level figures, as level_frame lays them out."""
    out = []
    for lane_idx, lane in enumerate(document.get("lanes", [])):
        for level in lane.get("levels", []):
            out.append(_level_row(lane["name"], lane_idx, level))
    return _typed(pd.DataFrame.from_records(out, columns=list(LEVEL_COLUMNS)))


def with_peak_memory(summary: pd.DataFrame, document: Mapping[str, Any]) -> pd.DataFrame:
    """summary_frame plus each lane's peak GPU memory (GiB) and what measured it.

    `peak_gpu_mem_gib` is the lane's own (every row of a lane shows the same value): its
    engine processes' NVML memory, else Ollama's VRAM, else the whole GPU while the lane
    ran (lane_memory.lane_peak_memory); NaN with an empty source when there was none.
    """

    peaks = [lane_peak_memory(lane) for lane in document.get("lanes", [])]
    out = summary.copy()
    by_lane = out["lane_idx"].map(lambda li: peaks[li] if 0 <= li < len(peaks) else (None, ""))
    out["peak_gpu_mem_gib"] = pd.to_numeric(
        by_lane.map(lambda p: p[0] / 2**30 if p[0] is not None else None), errors="coerce"
    ).astype("float64")
    out["peak_gpu_mem_source"] = by_lane.map(lambda p: p[1]).astype(object)
    return out


def progress_frame(
    names: Sequence[str],
    concurrency: Sequence[int],
    total: int,
    counts: Mapping[tuple[int, int], Mapping[str, int]],
    levels: Sequence[Mapping[str, Any]],
    rows: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
) -> pd.DataFrame:
    """Requests done and failed of N per lane and configured level.

    `counts` is store.count_requests; `levels` store.get_levels (its status and error
    say how it ended; a level with no row yet is waiting). `rows` gives the request
    rows, read only for a troubled level stored without a reason (older runs).
    """
    status = {(lv["lane_idx"], lv["concurrency"]): lv["status"] for lv in levels}
    errors = {(lv["lane_idx"], lv["concurrency"]): lv.get("error") for lv in levels}
    out = []
    for li, name in enumerate(names):
        for c in concurrency:
            got = counts.get((li, c), {})
            ok, bad = int(got.get("completed") or 0), int(got.get("failed") or 0)
            state = status.get((li, c), outcome.WAITING)
            reason = errors.get((li, c))
            if state == outcome.COMPLETED and bad:
                state = outcome.level_status(ok, bad)  # stored before outcomes were judged
            if state in outcome.TROUBLED and not reason and rows is not None:
                reason = _reason(rows(), li, c, ok + bad)  # read only when needed
            out.append(
                {
                    "lane": name,
                    "lane_idx": li,
                    "concurrency": c,
                    "status": state,
                    "completed": ok,
                    "failed": bad,
                    "total": total,
                    "fraction": min((ok + bad) / total, 1.0) if total else 0.0,
                    "error": reason,
                }
            )
    return pd.DataFrame.from_records(out, columns=list(PROGRESS_COLUMNS))


def _reason(rows: Sequence[Mapping[str, Any]], lane_idx: int, c: int, total: int) -> str | None:
    """Why a level's requests failed, from its rows (for levels stored without one)."""
    errors = [
        str(r["error"])
        for r in rows
        if r["lane_idx"] == lane_idx and r["concurrency"] == c and r.get("error")
    ]
    return outcome.error_reason(errors, total)


def kpis(
    levels: pd.DataFrame, names: Sequence[str], pick: int | None = None
) -> list[dict[str, Any]]:
    """Headline figures per lane at one level, with that level's done and failed counts.

    The level is `pick` where the lane has data for it; otherwise its latest level with
    answers: while a run goes on, the level being measured; for a finished run, the last
    (usually the highest) concurrency level that answered. `concurrency` says which.
    """
    out = []
    for li, name in enumerate(names):
        mine = levels[levels["lane_idx"] == li]
        row: dict[str, Any] = {"lane": name, "lane_idx": li, "concurrency": None}
        row |= dict.fromkeys(("ttft_p50_ms", "tok_per_s_p50", "out_tok_per_s"))
        row |= {"completed": int(mine["completed"].sum()), "failed": int(mine["failed"].sum())}
        picked = mine[mine["concurrency"] == pick] if pick is not None else mine.iloc[0:0]
        answered = mine[mine["completed"] > 0]
        # The picked level; else the latest that answered at all (a level that failed
        # outright has no figures to show: its failure is listed beside them).
        shown = picked if not picked.empty else answered if not answered.empty else mine
        if not shown.empty:
            last = shown.iloc[-1]
            row |= {"completed": int(last["completed"]), "failed": int(last["failed"])}
            row["concurrency"] = int(last["concurrency"])
            for key in ("ttft_p50_ms", "tok_per_s_p50", "out_tok_per_s"):
                value = last[key]
                row[key] = None if pd.isna(value) else float(value)
        out.append(row)
    return out


def drift_lines(rows: Iterable[Mapping[str, Any]], names: Sequence[str]) -> dict[str, str]:
    """Per lane with checked answers: "4/5 drifted to Chinese" (lib.quality's wording)."""
    from lib import quality  # optional module of another area: imported where used

    checks: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("lang_drift") is None:
            continue
        checks.setdefault(r["lane_idx"], []).append(
            {"lang_drift": r["lang_drift"], "lang": {"detected": r.get("drift_lang")}}
        )
    return {_name(names, li): quality.drift_summary(found) for li, found in checks.items()}


def level_spans(
    levels: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    t0: float | None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Where each lane's level ran on the run's time axis (seconds since `t0`)."""
    if t0 is None:
        return []
    now = time.time() if now is None else now
    spans = []
    for lv in levels:
        if lv.get("started_at") is None:
            continue
        end = lv.get("finished_at") or now
        spans.append(
            {
                "lane": _name(names, lv["lane_idx"]),
                "lane_idx": lv["lane_idx"],
                "concurrency": lv["concurrency"],
                "start_s": lv["started_at"] - t0,
                "end_s": end - t0,
            }
        )
    return sorted(spans, key=lambda s: s["start_s"])


# --- results documents ------------------------------------------------------------------


def lane_info_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Each lane's engine and model as the endpoint reported them."""
    out = []
    for lane in document.get("lanes", []):
        info, model = lane.get("engine_info") or {}, lane.get("model_info") or {}
        out.append(
            {
                "lane": lane["name"],
                "engine": info.get("kind") or lane.get("engine"),
                "version": info.get("version"),
                "api": lane.get("engine"),
                "base_url": lane.get("base_url"),
                "model": lane.get("model"),
                "quantization": model.get("quantization"),
                "parameter_size": model.get("parameter_size"),
                "context_length": model.get("context_length"),
                "digest": model.get("digest"),
            }
        )
    return pd.DataFrame.from_records(
        out,
        columns=[
            "lane",
            "engine",
            "version",
            "api",
            "base_url",
            "model",
            "quantization",
            "parameter_size",
            "context_length",
            "digest",
        ],
    )


def settings_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """The run's settings, its hardware and the tool version, as setting/value rows."""
    settings = dict(document.get("settings") or {})
    env = document.get("environment") or {}
    rows: list[tuple[str, str]] = []
    labels = {
        "max_tokens": "Max tokens",
        "temperature": "Temperature",
        "top_p": "Top-p",
        "seed": "Seed",
        "ignore_eos": "Ignore EOS",
        "concurrency": "Concurrency levels",
        "requests": "Requests per level",
        "warmup": "Warm-up requests per lane",
        "timeout_s": "Timeout per request (s)",
        "lanes_parallel": "Lanes at the same time",
        "num_ctx": "Ollama num_ctx",
        "prompts": "Prompts",
    }
    for key, label in labels.items():
        if key in settings:
            rows.append((label, _text(settings.pop(key))))
    for key, value in settings.items():
        rows.append((key, _text(value)))
    hardware = env.get("hardware") or {}
    for key, value in hardware.items() if isinstance(hardware, dict) else []:
        if key == "gpu":  # a dict of GPUs: model and memory per GPU, the driver
            rows.extend(hardware_rows(hardware))
            continue
        if key.endswith("_bytes") and isinstance(value, int | float):
            key, value = key.removesuffix("_bytes") + " (GB)", f"{value / 1e9:.1f}"
        rows.append((f"Hardware: {key}", _text(value)))
    if env.get("tool_version"):
        rows.append(("servescope version", str(env["tool_version"])))
    return pd.DataFrame(rows, columns=["setting", "value"])


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def quality_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Per lane: answers checked, the drift line ("4/5 drifted to Chinese"), flag counts.

    Lanes whose requests carry no `quality` record are left out.
    """
    from lib import quality  # optional module of another area: imported where used

    out = []
    for lane in document.get("lanes", []):
        checks = [
            r["quality"]
            for level in lane.get("levels", [])
            for r in level.get("requests", [])
            if r.get("quality")
        ]
        if not checks:
            continue
        row: dict[str, Any] = {
            "lane": lane["name"],
            "checked": len(checks),
            "language": quality.drift_summary(checks),
        }
        row |= quality.summarize_flags(checks)
        out.append(row)
    return pd.DataFrame.from_records(out)


def server_timings_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Engine-side timings (Ollama) beside the client's view, medians per lane and level."""
    out = []
    for lane in document.get("lanes", []):
        for level in lane.get("levels", []):
            servers = [
                r["server"]
                for r in level.get("requests", [])
                if isinstance(r.get("server"), dict) and not r.get("error")
            ]
            if not any(k in s for s in servers for k in OLLAMA_SERVER_KEYS):
                continue
            row: dict[str, Any] = {
                "lane": lane["name"],
                "concurrency": level["concurrency"],
                "client_ttft_p50_ms": level["ttft_ms"]["p50"],
                "client_e2el_p50_ms": level["e2el_ms"]["p50"],
                "client_tok_per_s_p50": level["tokens_per_s"]["p50"],
            }
            for key in OLLAMA_SERVER_KEYS:
                row[f"server_{key}"] = metrics.distribution(s.get(key) for s in servers)["p50"]
            out.append(row)
    return pd.DataFrame.from_records(out)


def answers_by_prompt(
    document: Mapping[str, Any], concurrency: int | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Answers grouped per prompt, lanes side by side, at one level (default: lowest).

    Returns [{"prompt": text, "answers": {lane: [request, ...]}}] in first-seen prompt
    order, at most `limit` prompts. Texts are returned as they are: untrusted, for
    display as plain text only.
    """
    lanes = document.get("lanes", [])
    if concurrency is None:
        levels = sorted({lv["concurrency"] for lane in lanes for lv in lane.get("levels", [])})
        concurrency = levels[0] if levels else None
    prompts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for lane in lanes:
        for level in lane.get("levels", []):
            if level["concurrency"] != concurrency:
                continue
            for req in level.get("requests", []):
                slot = prompts.setdefault(req.get("prompt") or "", {})
                slot.setdefault(lane["name"], []).append(req)
    out = []
    for text, answers in list(prompts.items())[:limit]:
        out.append({"prompt": text, "answers": answers})
    return out


def levels_of(document: Mapping[str, Any]) -> list[int]:
    """Every concurrency level present in the document, ascending."""
    return sorted(
        {lv["concurrency"] for lane in document.get("lanes", []) for lv in lane.get("levels", [])}
    )
