"""The report's per-level tables: the summary per lane and level, Ollama's engine-side
timings beside it, and the checks of the numbers; each level named by its load.

A rate run's level keys (`concurrency` in the store) only number its levels, so its
tables name a level by its load label ("2 req/s", "all at once") in a "Load" column;
closed-loop runs keep their "Concurrency" column of numbers. sections.py re-exports
the sections for lib/report/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lib.analysis import frames, validation
from lib.core.load_pattern import RATE, level_label
from lib.report.facts import RunView, fmt
from lib.report.html_parts import esc, html_table, lane_cell

SUMMARY_HEADERS = {
    "concurrency": ("Concurrency", 0),
    "completed": ("Completed", 0),
    "failed": ("Failed", 0),
    "duration_s": ("Duration (s)", 2),
    "req_per_s": ("Requests/s", 2),
    "out_tok_per_s": ("Output throughput (tok/s)", 1),
    "ttft_p50_ms": ("TTFT p50 (ms)", 1),
    "ttft_p99_ms": ("TTFT p99 (ms)", 1),
    "tpot_p50_ms": ("TPOT p50 (ms)", 2),
    "e2el_p50_ms": ("E2E p50 (ms)", 0),
    "e2el_p99_ms": ("E2E p99 (ms)", 0),
    "tok_per_s_p50": ("Tokens/s p50 (per request)", 1),
}
LOAD_HEADER = "Load"  # a rate run's level column, in place of "Concurrency"


def rate_run(doc: Mapping[str, Any]) -> bool:
    """Whether any level of the run was open loop (its key then only numbers it)."""
    return any(lv.get("load_mode") == RATE for lane in doc["lanes"] for lv in lane["levels"])


def level_labels(doc: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """Each level's load label by (lane name, level key): "2 req/s", "c=4"."""
    return {
        (lane["name"], lv["concurrency"]): str(
            lv.get("load_label") or level_label(None, lv["concurrency"])
        )
        for lane in doc["lanes"]
        for lv in lane["levels"]
    }


def summary_section(view: RunView) -> str:
    summary = frames.summary_frame(view.doc)
    rate = rate_run(view.doc)
    rows = []
    for rec in summary.to_dict("records"):
        cells = [lane_cell(rec["lane"], view.colors)]
        for k, (_, digits) in SUMMARY_HEADERS.items():
            if k == "concurrency" and rate:
                cells.append(esc(rec["load_label"]))
            else:
                cells.append(esc(fmt(rec[k], digits)))
        rows.append(cells)
    heads = [h for _, (h, _) in SUMMARY_HEADERS.items()]
    if rate:
        heads[0] = LOAD_HEADER
    note = (
        "<p class='note'>Per level: output throughput = all output tokens ÷ the level's "
        "duration; tokens/s per request = output tokens ÷ its E2E latency (one user's view). "
        "Warm-up requests are left out. Definitions as vLLM's <code>bench serve</code>.</p>"
    )
    numeric = [False, not rate, *([True] * (len(SUMMARY_HEADERS) - 1))]  # a label is text
    table = html_table(["Lane", *heads], rows, numeric)
    title = f"Summary per lane and {'request rate' if rate else 'concurrency'}"
    return f"<h2>{title}</h2>" + table + note + _server_table(view)


SERVER_HEADERS = {
    "concurrency": "Concurrency",
    "client_ttft_p50_ms": "Client TTFT (ms)",
    "client_e2el_p50_ms": "Client E2E (ms)",
    "client_tok_per_s_p50": "Client tokens/s",
    "server_load_ms": "Load (ms)",
    "server_prompt_eval_ms": "Prompt eval (ms)",
    "server_queue_ms": "Queue (ms)",
    "server_eval_ms": "Eval (ms)",
    "server_eval_tokens_per_s": "Eval rate (tok/s)",
}


def _server_table(view: RunView) -> str:
    server = frames.server_timings_frame(view.doc)
    if server.empty:
        return ""
    cols = [c for c in SERVER_HEADERS if c in server.columns]
    rate = rate_run(view.doc)
    labels = level_labels(view.doc)

    def value(rec: Mapping[str, Any], col: str) -> str:
        if col == "concurrency" and rate:
            return esc(labels.get((rec["lane"], rec["concurrency"]), ""))
        return esc(fmt(rec[col], 0 if col == "concurrency" else 1))

    rows = [
        [lane_cell(rec["lane"], view.colors), *(value(rec, c) for c in cols)]
        for rec in server.to_dict("records")
    ]
    heads = [LOAD_HEADER if c == "concurrency" and rate else SERVER_HEADERS[c] for c in cols]
    return (
        "<h3>Engine-side timings (Ollama), medians, beside the client's view</h3>"
        + html_table(
            ["Lane", *heads], rows, [False, *(not (rate and c == "concurrency") for c in cols)]
        )
        + "<p class='note'>Queue ≈ total − load − prompt eval − eval.</p>"
    )


# A check's status as a symbol and a word, and the verdict's colour: the outcome badge's
# classes (green, amber, red), so a run whose numbers failed a check never reads as clean.
CHECK_MARKS = {
    validation.PASS: "✓ pass",
    validation.WARN: "⚠ warn",
    validation.FAIL: "✗ fail",
    validation.UNMEASURABLE: "– not measurable",
}


def checks_section(view: RunView) -> str:
    """The run's checks of its own numbers (lib/analysis/validation.py): the verdict in a
    green, amber or red badge, one line per check that did not pass, and every check of
    every level in a table that opens on click."""
    verdict = view.doc.get("validation") or {}
    if not verdict.get("checks"):
        return ""
    problems = verdict.get("problems") or []
    statuses = {p["status"] for p in problems}
    cls = "failed" if validation.FAIL in statuses else "partial" if statuses else "ok"
    out = [
        "<h2>Checks of the numbers</h2>",
        f'<p><span class="status {cls}">{esc(validation.verdict_line(verdict))}</span></p>',
    ]
    lines = validation.problem_lines(verdict, view.doc["lanes"])
    if lines:
        items = "".join(
            f'<li class="{esc(p["status"])}">{esc(line)}</li>'
            for p, line in zip(problems, lines, strict=True)
        )
        out.append(f'<ul class="checks">{items}</ul>')
    rate = rate_run(view.doc)
    rows = [
        [
            lane_cell(lane["name"], view.colors),
            esc(level.get("load_label") if rate else level.get("concurrency")),
            esc(item["check"]),
            f'<td class="check {esc(item["status"])}">'
            f"{esc(CHECK_MARKS.get(item['status'], item['status']))}</td>",
            esc(item["detail"]),
        ]
        for lane in view.doc["lanes"]
        for level in lane["levels"]
        for item in level.get("validation") or []
    ]
    heads = ["Lane", LOAD_HEADER if rate else "Concurrency", "Check", "Status", "Detail"]
    table = html_table(heads, rows, [False, not rate])
    out.append(
        f"<details><summary>All {len(rows)} checks, per lane and level</summary>{table}"
        "<p class='note'>Each level checks its own stored numbers: whether answers streamed "
        "token by token, whether the client kept up, token counts against chunks, E2E "
        "against TTFT + ITL and the client's own count, and on Ollama lanes the client's "
        "generation time against Ollama's eval_duration.</p></details>"
    )
    return "".join(out)


def level_phrase(doc: Mapping[str, Any], key: int) -> str:
    """One level key across lanes as a phrase: "at concurrency 4"; a rate run's "at 2 req/s"
    or "all at once", or each lane's own load where they differ (a capacity search by
    rate: "at level 2 (A: 2 req/s; B: 4 req/s)")."""
    if not rate_run(doc):
        return f"at concurrency {key}"
    mine = {
        lane["name"]: str(lv.get("load_label"))
        for lane in doc["lanes"]
        for lv in lane["levels"]
        if lv["concurrency"] == key
    }
    if len(set(mine.values())) != 1:
        return f"at level {key} (" + "; ".join(f"{n}: {t}" for n, t in mine.items()) + ")"
    label = next(iter(mine.values()))
    return label if label.startswith("all at once") else f"at {label}"
