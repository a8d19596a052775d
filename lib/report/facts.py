"""The facts of a run that the HTML report and the PNG card both state.

Pure reads over `results.run_document` plus the store rows the charts need: the title
and date, who started the run and on which host, a one-line hardware summary, endpoints
without scheme or credentials, known engine settings, memory each lane held (from its
telemetry), and the default level a card shows. Strings here are untrusted where they
come from engines or users; the report and the card escape them.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lib import charts, store
from lib.analysis import results
from lib.analysis.history import who_where
from lib.analysis.lane_memory import engine_kind, memory_series

# vLLM engine settings worth a line in a retro (from its cache_config_info labels).
VLLM_SETTINGS = (
    "gpu_memory_utilization",
    "enable_prefix_caching",
    "block_size",
    "cache_dtype",
    "kv_cache_memory_bytes",
    "num_gpu_blocks",
)


@dataclass
class RunView:
    """Everything a report or card draws: the results document plus the store rows the
    charts need (send times), lane names safe for Plotly, colours and endpoints."""

    doc: dict[str, Any]
    run: dict[str, Any]
    levels: list[dict[str, Any]]
    colors: dict[str, str]  # by lane name, for tables
    chart_names: list[str]
    chart_colors: dict[str, str]  # by chart name
    order: list[int]
    endpoints: dict[str, str] = field(default_factory=dict)
    db: str | os.PathLike[str] | None = None

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        """Measured request rows with send times, read when a chart first needs them (the
        card never does: for a long run this read is most of its time)."""
        with store.opened(self.db) as conn:
            return store.get_requests(conn, self.doc["run_id"])


def load_view(db: str | os.PathLike[str] | None, run_id: str) -> RunView:
    """Read a run for a report. Raises results.RunNotFound."""
    doc = results.run_document(db, run_id)
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id) or {}
        levels = store.get_levels(conn, run_id)
    names = [lane["name"] for lane in doc["lanes"]]
    chart_names = [chart_text(n) for n in names]
    return RunView(
        doc=doc,
        run=run,
        levels=levels,
        colors=charts.lane_colors(names),
        chart_names=chart_names,
        chart_colors=charts.lane_colors(chart_names),
        order=list(doc["settings"].get("concurrency") or []),
        endpoints={lane["name"]: endpoint_text(lane["base_url"]) for lane in doc["lanes"]},
        db=db,
    )


def fmt(value: Any, digits: int = 0, unit: str = "") -> str:
    """A number for people: thousands separators, fixed digits, '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut."""
    text = text or ""
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def run_title(doc: Mapping[str, Any]) -> str:
    """The run's label, else its id."""
    return doc.get("label") or f"Run {doc['run_id']}"


def run_date(doc: Mapping[str, Any]) -> str:
    """When the run was created, local time with its zone."""
    when = datetime.fromtimestamp(doc["created_at"]).astimezone()
    return when.strftime("%Y-%m-%d %H:%M %Z").strip()


def run_by(doc: Mapping[str, Any], limit: int = 80) -> str:
    """ "by alice on gpu-box" beside the date ("" for a run stored before runs recorded
    who and where); cut to `limit` characters, as both are free text from the
    environment. Untrusted: the report and the card escape it."""
    return truncate(who_where(doc), limit)


def hardware_summary(env: Mapping[str, Any]) -> str:
    """One line: GPUs (grouped by name), CPU, RAM."""
    hw = env.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    parts = []
    if gpu.get("available") and gpu.get("gpus"):
        groups: dict[str, list[int]] = {}
        for g in gpu["gpus"]:
            groups.setdefault(str(g.get("name")), []).append(g.get("memory_total_bytes") or 0)
        for name, mems in groups.items():
            parts.append(f"{len(mems)}× {name} ({fmt(mems[0] / 2**30, 0, 'GiB')})")
    else:
        parts.append("no GPU")
    cores = hw.get("cpu_cores_usable") or hw.get("cpu_cores_logical")
    if hw.get("cpu_model") or cores:
        parts.append(f"{hw.get('cpu_model') or 'CPU'}, {cores or '?'} cores")
    if hw.get("ram_total_bytes"):
        parts.append(f"{fmt(hw['ram_total_bytes'] / 2**30, 0, 'GiB')} RAM")
    return " · ".join(parts)


def endpoint_text(url: str) -> str:
    """host:port/path: no scheme (the report names no URL), credentials or query."""
    _, _, rest = url.partition("://") if "://" in url else ("", "", url)
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rsplit("@", 1)[-1]
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{netloc}{slash}{path}".rstrip("/")


_STOP = r"\s)\]\"'>"  # where a URL in a message ends
_URL = re.compile(rf"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^\s/@]*@)?([^?#{_STOP}]*)(?:[?#][^{_STOP}]*)?")


def scrub_urls(text: str) -> str:
    """A message with each URL cut to host:port/path: no scheme, user:password@ or query
    ("cannot connect to gpu.lan:8000/v1"). Engine errors name endpoints, and the report
    names no URL and no credential."""
    return _URL.sub(lambda m: m.group(1), text or "")


def chart_text(text: str) -> str:
    """Text that Plotly draws (trace names, hover data) with no markup left in it.

    Plotly reads <b>, <br> and <a href> in such text as markup, so angle brackets become
    look-alikes (‹ ›): a lane name or an error can neither format a chart nor put a link
    in it. URLs are cut as in `scrub_urls`.
    """
    return scrub_urls(text).replace("<", "‹").replace(">", "›")


def engine_settings(doc: Mapping[str, Any], lane: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Known engine settings of a lane: context length, Ollama num_ctx, vLLM cache config."""
    out = []
    info = lane.get("engine_info") or {}
    if info.get("context_length"):
        out.append(("context", fmt(info["context_length"])))
    if engine_kind(lane) == "ollama" and doc["settings"].get("num_ctx"):
        out.append(("num_ctx", fmt(doc["settings"]["num_ctx"])))
    for s in lane.get("telemetry") or []:
        if s["source"] == "vllm" and s["name"] == "cache_config_info":
            labels = s.get("labels") or {}
            for key in VLLM_SETTINGS:
                if key in labels:
                    value = labels[key]
                    if key.endswith("_bytes") and str(value).isdigit():
                        value = fmt(int(value) / 2**30, 1, "GiB")
                    out.append((key, str(value)))
            break
    return out


def level_window(view: RunView, lane_idx: int, concurrency: int) -> tuple[float, float] | None:
    """When a lane's level ran, in seconds since the run started (the telemetry's t)."""
    start = view.run.get("started_at") or view.doc["created_at"]
    for lv in view.levels:
        if lv["lane_idx"] == lane_idx and lv["concurrency"] == concurrency and lv["started_at"]:
            end = lv.get("finished_at") or lv["started_at"]
            return lv["started_at"] - start, end - start
    return None


def peak_memory(view: RunView, lane_idx: int, concurrency: int | None) -> tuple[float | None, str]:
    """Peak bytes while the level ran (one sampling interval of slack either side), else
    over the whole lane; and what was measured ("" when nothing was)."""
    label, points = memory_series(view.doc["lanes"][lane_idx])
    if not points:
        return None, ""
    window = level_window(view, lane_idx, concurrency) if concurrency is not None else None
    if window:
        inside = [v for t, v in points if window[0] - 1.5 <= t <= window[1] + 1.5]
        if inside:
            return max(inside), label
    return max(v for _, v in points), label


def lane_level(lane: Mapping[str, Any], concurrency: int | None) -> dict[str, Any] | None:
    """The lane's level summary at a concurrency, if it ran."""
    for level in lane.get("levels", []):
        if level["concurrency"] == concurrency:
            return level
    return None


class ConcurrencyError(ValueError):
    """The asked-for concurrency level is not in the run."""


def resolve_concurrency(doc: Mapping[str, Any], concurrency: int | None) -> int | None:
    """The level to headline: the one asked for (ConcurrencyError if the run lacks it),
    else `default_concurrency`."""
    if concurrency is None:
        return default_concurrency(doc)
    levels = sorted({lv["concurrency"] for lane in doc["lanes"] for lv in lane["levels"]})
    if concurrency not in levels:
        have = ", ".join(map(str, levels)) or "none"
        raise ConcurrencyError(f"concurrency {concurrency} is not in this run (levels: {have})")
    return concurrency


def default_concurrency(doc: Mapping[str, Any]) -> int | None:
    """The highest level every lane completed a request at (else the highest any did,
    else the highest that ran): where the engines differ most, and a fair comparison."""
    measured = [
        {lv["concurrency"] for lv in lane.get("levels", []) if lv.get("completed")}
        for lane in doc.get("lanes", [])
    ]
    common = set.intersection(*measured) if measured else set()
    pool = common or (set().union(*measured) if measured else set())
    # A run whose every request failed still has levels: headline the highest.
    pool = pool or {lv["concurrency"] for lane in doc.get("lanes", []) for lv in lane["levels"]}
    return max(pool) if pool else None


# Answer flags that make an answer unusable as asked: a lane whose answers carry them is
# never called "best" on speed without them beside it. "truncated" is left out on purpose:
# a throughput benchmark stops every answer at max tokens by design (JSON cut off that
# way already reads json_invalid), and "reasoning_leak" is shown but is still an answer.
UNUSABLE_FLAGS = (
    "lang_drift",
    "json_invalid",
    "json_missing_keys",
    "json_empty_value",
    "empty",
    "repetition",
)
FLAG_WORDS = {
    "json_invalid": "invalid JSON",
    "json_missing_keys": "JSON missing keys",
    "json_empty_value": "JSON with empty values",
    "empty": "empty",
    "repetition": "looping",
}
TROUBLED_LEVELS = ("completed with failures", "failed", "cancelled")  # lib/core/outcome.py's


def level_figures(level: Mapping[str, Any]) -> dict[str, Any]:
    """One level's headline figures and outcome, flat (the card's table rows)."""
    return {
        "concurrency": level["concurrency"],
        "status": level.get("status"),
        "error": level.get("error"),
        "completed": level.get("completed"),
        "failed": level.get("failed"),
        "ttft_p50_ms": (level.get("ttft_ms") or {}).get("p50"),
        "tok_per_s_p50": (level.get("tokens_per_s") or {}).get("p50"),
        "out_tok_per_s": level.get("output_throughput"),
    }


def level_trouble(level: Mapping[str, Any]) -> str | None:
    """'c=4: 4 of 4 failed: timed out after 60 s' for a level that did not complete
    cleanly (URLs cut as in scrub_urls); None for a clean one. A level that gives its
    `load_label` is named by it ("8 req/s: …"): a rate level's key only numbers it."""
    status = level.get("status")
    failed = level.get("failed") or 0
    if status not in TROUBLED_LEVELS and not failed:
        return None
    why = level.get("error")
    if not why:
        total = failed + (level.get("completed") or 0)
        why = f"{failed} of {total} failed" if failed else str(status)
    if status == "cancelled":
        why = f"cancelled ({why})" if why != "cancelled" else why
    label = level.get("load_label") or f"c={level['concurrency']}"
    return f"{label}: {scrub_urls(str(why))}"


def lane_troubles(lane: Mapping[str, Any]) -> list[str]:
    """Every troubled level of a lane, and a failed warm-up, one line each."""
    out = [t for lv in lane.get("levels", []) if (t := level_trouble(lv))]
    warm = lane.get("warmup_status") or {}
    if warm.get("status") in TROUBLED_LEVELS:
        why = warm.get("error") or warm["status"]
        out.append(f"warm-up: {scrub_urls(str(why))}")
    return out


def quality_caveats(checks: list[dict[str, Any]]) -> list[str]:
    """'4/4 answers drifted to Chinese', '2/4 answers invalid JSON': the unusable-answer
    flags of a lane, for anything that ranks it."""
    from lib import quality

    if not checks:
        return []
    n = len(checks)
    flags = quality.summarize_flags(checks)
    out = []
    if flags.get("lang_drift"):
        out.append(quality.drift_summary(checks).replace(" drifted", " answers drifted", 1))
    for code in UNUSABLE_FLAGS[1:]:
        if flags.get(code):
            out.append(f"{flags[code]}/{n} answers {FLAG_WORDS[code]}")
    return out


def lane_kpis(view: RunView, concurrency: int | None) -> list[dict[str, Any]]:
    """Per lane, what the card shows: who it is, its level's headline figures, every
    level's figures and outcome, peak memory, its answer checks over the whole run, and
    `caveats`: what must stand beside any "best" given to it (its failed levels and
    unusable answers; empty for a clean lane)."""
    from lib import quality  # another area's module, imported where used (as frames does)

    out = []
    for idx, lane in enumerate(view.doc["lanes"]):
        info = lane.get("engine_info") or {}
        level = lane_level(lane, concurrency) or {}
        peak, label = peak_memory(view, idx, concurrency)
        checks = [r["quality"] for lv in lane["levels"] for r in lv["requests"] if r.get("quality")]
        flags = quality.summarize_flags(checks) if checks else {}
        troubles = lane_troubles(lane)
        out.append(
            {
                "name": lane["name"],
                "color": view.colors[lane["name"]],
                "engine": engine_kind(lane),
                "version": info.get("version"),
                "model": lane["model"],
                "quantization": info.get("quantization"),
                "parameter_size": info.get("parameter_size"),
                "completed": level.get("completed"),
                "failed": level.get("failed"),
                "ttft_p50_ms": (level.get("ttft_ms") or {}).get("p50"),
                "tok_per_s_p50": (level.get("tokens_per_s") or {}).get("p50"),
                "out_tok_per_s": level.get("output_throughput"),
                "peak_memory_bytes": peak,
                "memory_source": label,
                "checked": len(checks),
                "language": quality.drift_summary(checks) if checks else None,
                "flags": {code: n for code, n in flags.items() if n and code != "lang_drift"},
                "drifted": flags.get("lang_drift", 0),
                "status": lane.get("status"),
                "levels": [level_figures(lv) for lv in lane.get("levels", [])],
                "troubles": troubles,
                "caveats": [*troubles, *quality_caveats(checks)],
            }
        )
    return out


def answer_pair(doc: Mapping[str, Any], concurrency: int | None) -> dict[str, Any] | None:
    """One prompt with each lane's first answer: preferably one where the lanes' answer
    checks disagree (one drifted, one did not), then the shortest. Texts are untrusted.

    Returns {"prompt", "answers": [{"lane", "text", "error", "flags"}]} or None.
    """
    from lib.analysis import frames

    items = frames.answers_by_prompt(doc, concurrency, limit=200)
    if not items and concurrency is not None:
        items = frames.answers_by_prompt(doc, None, limit=200)
    best, best_key = None, None
    for item in items:
        answers = []
        for lane in doc["lanes"]:
            reqs = item["answers"].get(lane["name"]) or [{}]
            req = reqs[0]
            codes = sorted({f["code"] for f in (req.get("quality") or {}).get("flags") or []})
            answers.append(
                {
                    "lane": lane["name"],
                    "text": req.get("output_text") or "",
                    "error": req.get("error"),
                    "flags": codes,
                }
            )
        differ = len({tuple(a["flags"]) for a in answers}) > 1
        length = sum(len(a["text"]) for a in answers) + len(item["prompt"])
        key = (not differ, length)
        if best_key is None or key < best_key:
            best, best_key = {"prompt": item["prompt"], "answers": answers}, key
    return best
