"""The sections of the HTML report, each a function from a loaded run to escaped HTML.

Every dynamic string goes through `esc` (html.escape, quotes included) or `cell`; the
figures come from lib/charts over lib/analysis/frames.py's frames, as on the Results page,
and travel as JSON data blocks (`charts_section`) that lib/report/__init__.py's runner
draws. Nothing here names a URL: endpoints appear as host:port/path.

The sections are short functions over one RunView in the page's order; the per-level
tables (summary, engine-side timings, checks) are lib/report/level_tables.py, the
latency targets and capacity lib/report/capacity_section.py, the escaping and table
helpers they share lib/report/html_parts.py, the packed data blocks lib/report/packing.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lib import charts
from lib.analysis import frames
from lib.analysis.lane_memory import memory_series
from lib.report.facts import (
    RunView,
    chart_text,
    engine_settings,
    fmt,
    hardware_summary,
    lane_kpis,
    run_by,
    run_date,
    run_title,
    scrub_urls,
    truncate,
)
from lib.report.html_parts import (
    cell,
    esc,
    html_table,
    lane_cell,
    missing,
    swatch,
)

# The per-level tables, re-exported: lib/report/__init__.py reads them as sections.<name>.
from lib.report.level_tables import CHECK_MARKS as CHECK_MARKS
from lib.report.level_tables import SUMMARY_HEADERS as SUMMARY_HEADERS
from lib.report.level_tables import checks_section as checks_section
from lib.report.level_tables import level_phrase
from lib.report.level_tables import summary_section as summary_section

# PACKED_TYPE stays readable here: the report's tests find the data blocks by it.
from lib.report.packing import PACKED_TYPE as PACKED_TYPE
from lib.report.packing import figures_payload, packed_block

ANSWER_PROMPTS = 5  # prompts shown with their answers side by side
ANSWER_CHARS = 3000  # per answer in the report; the full text is in the exports
PROMPT_CHARS = 1500


# The run's and levels' outcomes (lib/core/outcome.py's words) as CSS classes: a run with failed
# levels must never wear the neutral badge of a clean one.
STATUS_CLASSES = {
    "completed": "ok",
    "completed with failures": "partial",
    "failed": "failed",
    "cancelled": "cancelled",
}


def status_badge(status: str) -> str:
    """The status in a coloured badge (green, amber, red)."""
    cls = STATUS_CLASSES.get(status, "other")
    return f'<span class="status {cls}">{esc(status)}</span>'


def header(view: RunView) -> str:
    doc = view.doc
    bits = [
        status_badge(doc["status"]),
        f"run {esc(doc['run_id'])}",
        esc(run_date(doc)),
        *([esc(by)] if (by := run_by(doc)) else []),
        f"{len(doc['lanes'])} lanes",
    ]
    out = f"<h1>{esc(run_title(doc))}</h1><p class='meta'>{' · '.join(bits)}</p>"
    out += f"<p class='meta'>{esc(hardware_summary(doc.get('environment') or {}))}</p>"
    if doc.get("error") or doc["status"] != "completed":
        why = scrub_urls(doc.get("error") or "no reason recorded")
        out += f"<p class='error'>The run {esc(doc['status'])}: {esc(why)}</p>"
    return out


def failures_section(view: RunView) -> str:
    """Every troubled level and failed warm-up with its reason, and for each sandbox
    engine whose requests failed: whether it still answers, its log and the log's tail."""
    doc = view.doc
    lines = [scrub_urls(line) for line in doc.get("failures") or []]
    for lane in doc["lanes"]:
        warm = lane.get("warmup_status") or {}
        if warm.get("status") in ("failed", "completed with failures", "cancelled"):
            why = f": {warm['error']}" if warm.get("error") else ""
            lines.append(scrub_urls(f"warm-up {lane['name']}: {warm['status']}{why}"))
    logs = (doc.get("environment") or {}).get("engine_logs") or {}
    if not lines and not logs:
        return ""
    out = ["<h2>Failures</h2>"]
    if lines:
        out.append("<ul class='failures'>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>")
    names = [lane["name"] for lane in doc["lanes"]]
    for key, log in sorted(logs.items(), key=lambda kv: str(kv[0])):
        li = int(key) if str(key).isdigit() else -1
        lane = names[li] if 0 <= li < len(names) else f"lane {key}"
        alive = "still answers" if log.get("ready") else "no longer answers"
        tail = log.get("tail") or []
        text = "\n".join(str(x) for x in tail) if isinstance(tail, list) else str(tail)
        out.append(
            f"<h3>{esc(lane)}: sandbox engine {esc(log.get('name') or '?')} {alive}</h3>"
            f"<p class='note'>Last lines of its log, <code>{esc(log.get('log') or 'no log')}</code>"
            ", read when the run ended:</p>"
            f"<pre class='text log'>{esc(text or '(empty)')}</pre>"
        )
    return "".join(out)


def headline(view: RunView, concurrency: int | None) -> str:
    """Each lane's engine, model and headline figures at one level: the card, as a table."""
    if concurrency is None:
        return ""
    rows = []
    for k in lane_kpis(view, concurrency):
        engine = " ".join(str(x) for x in (k["engine"], k["version"]) if x)
        mem = k["peak_memory_bytes"]
        memory = f"{fmt(mem / 2**30, 1)} GiB ({k['memory_source']})" if mem is not None else "–"
        flags = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in k["flags"].items())
        rows.append(
            [
                lane_cell(k["name"], view.colors),
                cell(engine),
                cell(k["model"]),
                cell(" · ".join(str(x) for x in (k["quantization"], k["parameter_size"]) if x)),
                esc(fmt(k["ttft_p50_ms"], 1)),
                esc(fmt(k["tok_per_s_p50"], 1)),
                esc(fmt(k["out_tok_per_s"], 1)),
                esc(memory),
                cell("; ".join(x for x in (k["language"], flags) if x)),
            ]
        )
    headers = ["Lane", "Engine", "Model", "Quantization", "TTFT p50 (ms)"]
    headers += ["Tokens/s p50", "Output throughput (tok/s)", "Peak memory", "Answer checks"]
    numeric = [False, False, False, False, True, True, True, True, False]
    at = level_phrase(view.doc, concurrency)  # a rate run's level by its rate
    return f"<h2>{esc(at[:1].upper() + at[1:])}</h2>" + html_table(headers, rows, numeric)


def settings_section(view: RunView) -> str:
    settings = frames.settings_frame(view.doc)
    rows = [
        [esc(r.setting), esc(r.value)]
        for r in settings.itertuples()
        if not str(r.setting).startswith("Hardware:")
    ]
    hw = _hardware_rows(view.doc.get("environment") or {})
    return (
        "<h2>Run settings and hardware</h2><div class='cols'><div>"
        + html_table(["Setting", "Value"], rows)
        + "</div><div>"
        + html_table(["Hardware", "Value"], hw)
        + "</div></div>"
    )


def _hardware_rows(env: Mapping[str, Any]) -> list[list[str]]:
    hw = env.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    rows = []
    if gpu.get("available"):
        for g in gpu.get("gpus") or []:
            mem = fmt((g.get("memory_total_bytes") or 0) / 2**30, 0, "GiB")
            rows.append([f"GPU {esc(g.get('index'))}", esc(f"{g.get('name')} ({mem})")])
        if gpu.get("driver"):
            rows.append(["GPU driver", esc(gpu["driver"])])
    else:
        rows.append(["GPU", esc(f"none ({gpu.get('reason') or 'not recorded'})")])
    cores = hw.get("cpu_cores_usable") or hw.get("cpu_cores_logical")
    rows.append(["CPU", esc(f"{hw.get('cpu_model') or '–'}, {cores or '?'} cores usable")])
    if hw.get("ram_total_bytes"):
        rows.append(["RAM", esc(fmt(hw["ram_total_bytes"] / 2**30, 0, "GiB"))])
    for key, label in (("os", "OS"), ("python", "Python")):
        if hw.get(key):
            rows.append([label, esc(hw[key])])
    if env.get("tool_version"):
        rows.append(["servescope", esc(env["tool_version"])])
    return rows


def lanes_section(view: RunView) -> str:
    info = frames.lane_info_frame(view.doc)
    rows = []
    for lane, r in zip(view.doc["lanes"], info.itertuples(), strict=True):
        settings = "; ".join(f"{k}: {v}" for k, v in engine_settings(view.doc, lane))
        rows.append(
            [
                lane_cell(lane["name"], view.colors),
                cell(r.engine),
                cell(r.version),
                cell(r.model),
                cell(r.quantization),
                cell(r.parameter_size),
                esc(fmt(r.context_length)),
                esc(view.endpoints[lane["name"]]),
                cell(None if missing(r.digest) else truncate(str(r.digest), 24)),
                esc(settings or "–"),
            ]
        )
    headers = ["Lane", "Engine", "Version", "Model", "Quantization", "Parameters"]
    headers += ["Context", "Endpoint", "Digest / root", "Engine settings"]
    return "<h2>Engines and models</h2>" + html_table(headers, rows)


def figures(view: RunView) -> list[go.Figure]:
    rows, names, colors, order = view.rows, view.chart_names, view.chart_colors, view.order
    t0 = frames.run_start(view.run, rows)
    requests = frames.request_frame(rows, names, t0)
    # The timeline shows each failed request's error on hover: our text, but it names
    # endpoints and may hold markup from a server's error body.
    requests["error"] = [chart_text(e) if isinstance(e, str) else e for e in requests["error"]]
    levels = frames.level_frame(rows, names, order)
    spans = frames.level_spans(view.levels, names, t0, now=view.run.get("finished_at"))
    # The spans name what each level's key stands for: a rate run's charts go by rate.
    loads = frames.level_loads(spans)
    requests, levels = frames.with_loads(requests, loads), frames.with_loads(levels, loads)
    return [
        charts.throughput_vs_concurrency(levels, colors),
        charts.ttft_box(requests, colors, order),
        charts.e2el_box(requests, colors, order),
        charts.tokens_per_s_box(requests, colors, order),
        charts.tpot_box(requests, colors, order),
        charts.latency_timeline(requests, colors, spans),
        memory_figure(view),
    ]


def memory_figure(view: RunView) -> go.Figure:
    """Memory each lane held over the run (GiB), from the telemetry beside it."""
    fig = charts.base_figure(
        "Memory over the run",
        charts.TIME_TITLE,
        "Memory (GiB)",
        "GPU memory of the engine's processes (NVML), else the model's size as Ollama reports it.",
    )
    drawn = 0
    for lane, name in zip(view.doc["lanes"], view.chart_names, strict=True):
        label, points = memory_series(lane)
        if not points:
            continue
        drawn += 1
        color = view.chart_colors[name]
        fig.add_trace(
            go.Scatter(
                x=[t for t, _ in points],
                y=[v / 2**30 for _, v in points],
                mode="lines+markers",
                name=f"{name} ({label})",
                line={"color": color, "width": 2.5, "shape": "hv"},
                marker={"color": color, "size": 5},
                hovertemplate="%{x:.1f} s: %{y:.2f} GiB<extra>%{fullData.name}</extra>",
            )
        )
    if not drawn:
        reason = ((view.doc.get("environment") or {}).get("telemetry") or {}).get("nvml")
        text = "No memory telemetry in this run" + (f" (NVML {reason})" if reason else "")
        charts.no_data(fig, truncate(text, 90))
    return fig


def charts_section(figures: Sequence[go.Figure], also: Sequence[go.Figure] = ()) -> str:
    """The chart cells and the figures' packed data (drawn by lib/report/__init__.py's
    runner). `also`: figures packed after them whose cells another section placed
    (fig<N> from N = len(figures) on: capacity_section)."""
    cells = "".join(f'<div class="chart" id="fig{i}"></div>' for i in range(len(figures)))
    note = (
        "<p class='note'>Interactive charts (hover, zoom, legend toggles); "
        "they need JavaScript, the tables above do not.</p>"
    )
    data = packed_block("fig-data", figures_payload([*figures, *also]))
    return "<h2>Charts</h2>" + note + f'<div class="charts">{cells}</div>' + data


def quality_section(view: RunView) -> str:
    quality = frames.quality_frame(view.doc)
    if quality.empty:
        return "<h2>Answer quality</h2><p class='note'>No answer checks recorded.</p>"
    codes = [c for c in quality.columns if c not in ("lane", "checked", "language")]
    rows = []
    for rec in quality.to_dict("records"):
        cells = [lane_cell(rec["lane"], view.colors), esc(rec["checked"]), esc(rec["language"])]
        for code in codes:
            n = int(rec.get(code) or 0)
            cells.append("<span class='zero'>0</span>" if n == 0 else f"<b>{n}</b>")
        rows.append(cells)
    headers = ["Lane", "Answers checked", "Language", *(c.replace("_", " ") for c in codes)]
    return "<h2>Answer quality flags</h2>" + html_table(
        headers, rows, [False, True, False, *([True] * len(codes))]
    )


def answers_section(view: RunView) -> str:
    levels = frames.levels_of(view.doc)
    if not levels:
        return ""
    level = levels[0]
    items = frames.answers_by_prompt(view.doc, level, limit=ANSWER_PROMPTS)
    out = [
        "<h2>Sample answers side by side</h2>",
        f"<p class='note'>First {len(items)} prompts {esc(level_phrase(view.doc, level))}, "
        "the first answer of each lane. Model output is shown as plain text.</p>",
    ]
    for n, item in enumerate(items, start=1):
        out.append(f"<h3>Prompt {n}</h3>")
        out.append(f'<div class="prompt">{esc(truncate(item["prompt"], PROMPT_CHARS))}</div>')
        out.append('<div class="answers">')
        for lane in view.doc["lanes"]:
            answers = item["answers"].get(lane["name"], [])
            out.append(_answer_html(lane["name"], answers, view.colors))
        out.append("</div>")
    return "".join(out)


def _answer_html(name: str, answers: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    head = f'<div class="lane">{swatch(colors.get(name, "#555555"))}{esc(name)}</div>'
    if not answers:
        return f'<div class="answer">{head}<p class="note">no answer at this level</p></div>'
    req = answers[0]
    if req.get("error"):
        body = f'<p class="error">failed: {esc(scrub_urls(req["error"]))}</p>'
    else:
        text = req.get("output_text") or ""
        shown = truncate(text, ANSWER_CHARS)
        more = len(text) - ANSWER_CHARS
        body = f'<pre class="text">{esc(shown)}</pre>'
        if more > 0:
            body += f'<p class="note">… {more:,} more characters in the exports.</p>'
        bits = [
            f"{fmt(req.get('e2el_ms'), 0, 'ms')} E2E",
            f"{req.get('output_tokens') or '?'} tokens",
            f"finish: {req.get('finish_reason') or '?'}",
        ]
        body += f'<p class="note">{esc(" · ".join(bits))}</p>'
    for flag in (req.get("quality") or {}).get("flags") or []:
        body += f'<p class="flag">⚑ {esc(flag.get("code"))}: {esc(flag.get("reason"))}</p>'
    return f'<div class="answer">{head}{body}</div>'
