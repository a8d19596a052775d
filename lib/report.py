"""Self-contained HTML report of a run: one file that opens anywhere, offline.

Plotly's JavaScript is inlined and the figures travel as JSON data blocks, so the file
asks nothing of the network; a Content-Security-Policy (default-src 'none', scripts
allowed only by hash) makes the browser refuse any fetch and any script that is not
ours, as a second line behind escaping. Model output, prompts, lane names and errors
are untrusted text: every dynamic string goes through `_e` (html.escape). Endpoint
URLs are shown without scheme, credentials or query (`endpoint_text`).

The run's facts (hardware line, memory, default level) come from lib/report_facts.py,
shared with the PNG card (lib/report_card.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from lib import charts, frames
from lib.report_facts import (
    RunView,
    default_concurrency,
    engine_settings,
    fmt,
    hardware_summary,
    load_view,
    memory_series,
    run_date,
    run_title,
    truncate,
)

__all__ = ["html_bytes", "html_report", "png_bytes", "write_html"]

ANSWER_PROMPTS = 5  # prompts shown with their answers side by side
ANSWER_CHARS = 3000  # per answer in the report; the full text is in the exports
PROMPT_CHARS = 1500

# Runs the figures; constant text, so its CSP hash is constant too.
_RUNNER_JS = """(function () {
  var config = {displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["sendDataToCloud"],
    toImageButtonOptions: {format: "png", scale: 2}};
  document.querySelectorAll("script.fig").forEach(function (el) {
    var fig = JSON.parse(el.textContent);
    Plotly.newPlot(document.getElementById(el.dataset.target), fig.data, fig.layout, config);
  });
})();"""

_CSS = """
:root { --ink:#222; --muted:#5f6368; --line:#dfe1e5; --soft:#f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 Inter, "Source Sans Pro", "Segoe UI", Helvetica, Arial,
  "Noto Sans CJK KR", "Noto Sans CJK JP", "Noto Sans CJK SC", sans-serif; color: var(--ink); }
main { max-width: 1440px; margin: 0 auto; padding: 28px 32px 60px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
.meta { color: var(--muted); margin: 0 0 2px; }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; background: var(--soft);
  border: 1px solid var(--line); font-size: 13px; }
.status.failed, .status.cancelled { background: #fdecea; border-color: #f5c2bd; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.wide { overflow-x: auto; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 0 28px; }
.lane { font-weight: 600; white-space: nowrap; }
.sw { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
.chart { border: 1px solid var(--line); border-radius: 6px; min-height: 402px;
  break-inside: avoid; }
.note { color: var(--muted); font-size: 13px; }
.zero { color: #aaa; }
.prompt { background: var(--soft); border-left: 3px solid #999; padding: 8px 12px; margin: 6px 0;
  white-space: pre-wrap; word-break: break-word; }
.answers { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
.answer { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
pre.text { white-space: pre-wrap; word-break: break-word; margin: 6px 0; font: 13px/1.45
  ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono CJK KR", monospace; }
.flag { color: #8a4b00; font-size: 13px; margin: 2px 0; }
.error { color: #b3261e; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
@media print { .chart { page-break-inside: avoid; } main { padding: 0; } }
"""


def _e(value: Any) -> str:
    """Escaped text for HTML (quotes too: some of it lands in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _json_for_script(text: str) -> str:
    # Inside <script> only "</script" and "<!--" matter; escaping every <, > and & keeps
    # the JSON valid and leaves no markup at all. U+2028/9 end lines in old JS parsers.
    for raw, safe in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, safe)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@functools.lru_cache(maxsize=1)
def _plotly_js() -> tuple[str, str]:
    """The plotly.js bundle and its CSP hash (computed once per process)."""
    js = get_plotlyjs()
    return js, _csp_hash(js)


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _csp(script_hashes: Sequence[str]) -> str:
    # style-src needs 'unsafe-inline': plotly.js adds <style> rules at run time.
    return (
        "default-src 'none'; "
        f"script-src {' '.join(script_hashes)}; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
        "connect-src 'none'; base-uri 'none'; form-action 'none'"
    )


# --- sections ---------------------------------------------------------------------------


def _swatch(color: str) -> str:
    return f'<span class="sw" style="background:{_e(color)}"></span>'


def _lane_cell(name: str, colors: Mapping[str, str]) -> str:
    return f'<td class="lane">{_swatch(colors.get(name, "#555555"))}{_e(name)}</td>'


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()
) -> str:
    """Rows of cells that are already HTML (escaped by the caller)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if cell.startswith("<td"):
                cells.append(cell)
            else:
                cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
                cells.append(f"<td{cls}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _header(view: RunView) -> str:
    doc = view.doc
    status = _e(doc["status"])
    bits = [
        f'<span class="status {status}">{status}</span>',
        f"run {_e(doc['run_id'])}",
        _e(run_date(doc)),
        f"{len(doc['lanes'])} lanes",
    ]
    out = f"<h1>{_e(run_title(doc))}</h1><p class='meta'>{' · '.join(bits)}</p>"
    out += f"<p class='meta'>{_e(hardware_summary(doc.get('environment') or {}))}</p>"
    if doc.get("error"):
        out += f"<p class='error'>The run failed: {_e(doc['error'])}</p>"
    return out


def _settings_section(view: RunView) -> str:
    settings = frames.settings_frame(view.doc)
    rows = [
        [_e(r.setting), _e(r.value)]
        for r in settings.itertuples()
        if not str(r.setting).startswith("Hardware:")
    ]
    hw = _hardware_rows(view.doc.get("environment") or {})
    return (
        "<h2>Run settings and hardware</h2><div class='cols'><div>"
        + _table(["Setting", "Value"], rows)
        + "</div><div>"
        + _table(["Hardware", "Value"], hw)
        + "</div></div>"
    )


def _hardware_rows(env: Mapping[str, Any]) -> list[list[str]]:
    hw = env.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    rows = []
    if gpu.get("available"):
        for g in gpu.get("gpus") or []:
            mem = fmt((g.get("memory_total_bytes") or 0) / 2**30, 0, "GiB")
            rows.append([f"GPU {_e(g.get('index'))}", _e(f"{g.get('name')} ({mem})")])
        if gpu.get("driver"):
            rows.append(["GPU driver", _e(gpu["driver"])])
    else:
        rows.append(["GPU", _e(f"none ({gpu.get('reason') or 'not recorded'})")])
    cores = hw.get("cpu_cores_usable") or hw.get("cpu_cores_logical")
    rows.append(["CPU", _e(f"{hw.get('cpu_model') or '–'}, {cores or '?'} cores usable")])
    if hw.get("ram_total_bytes"):
        rows.append(["RAM", _e(fmt(hw["ram_total_bytes"] / 2**30, 0, "GiB"))])
    for key, label in (("os", "OS"), ("python", "Python")):
        if hw.get(key):
            rows.append([label, _e(hw[key])])
    if env.get("tool_version"):
        rows.append(["servescope", _e(env["tool_version"])])
    return rows


def _lanes_section(view: RunView) -> str:
    info = frames.lane_info_frame(view.doc)
    rows = []
    for lane, r in zip(view.doc["lanes"], info.itertuples(), strict=True):
        settings = "; ".join(f"{k}: {v}" for k, v in engine_settings(view.doc, lane))
        rows.append(
            [
                _lane_cell(lane["name"], view.colors),
                _e(r.engine),
                _e(r.version or "–"),
                _e(r.model),
                _e(r.quantization or "–"),
                _e(r.parameter_size or "–"),
                _e(fmt(r.context_length)),
                _e(view.endpoints[lane["name"]]),
                _e(truncate(str(r.digest or "–"), 24)),
                _e(settings or "–"),
            ]
        )
    headers = ["Lane", "Engine", "Version", "Model", "Quantization", "Parameters"]
    headers += ["Context", "Endpoint", "Digest / root", "Engine settings"]
    return "<h2>Engines and models</h2>" + _table(headers, rows)


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


def _summary_section(view: RunView) -> str:
    summary = frames.summary_frame(view.doc)
    rows = []
    for rec in summary.to_dict("records"):
        cells = [_lane_cell(rec["lane"], view.colors)]
        cells += [_e(fmt(rec[k], digits)) for k, (_, digits) in SUMMARY_HEADERS.items()]
        rows.append(cells)
    headers = ["Lane", *(h for h, _ in SUMMARY_HEADERS.values())]
    note = (
        "<p class='note'>Per level: output throughput = all output tokens ÷ the level's "
        "duration; tokens/s per request = output tokens ÷ its E2E latency (one user's view). "
        "Warm-up requests are left out. Definitions as vLLM's <code>bench serve</code>.</p>"
    )
    table = _table(headers, rows, [False, *([True] * len(SUMMARY_HEADERS))])
    return "<h2>Summary per lane and concurrency</h2>" + table + note + _server_table(view)


def _server_table(view: RunView) -> str:
    server = frames.server_timings_frame(view.doc)
    if server.empty:
        return ""
    cols = [c for c in server.columns if c != "lane"]
    rows = [
        [_lane_cell(rec["lane"], view.colors), *(_e(fmt(rec[c], 1)) for c in cols)]
        for rec in server.to_dict("records")
    ]
    headers = ["Lane", *(c.replace("_", " ") for c in cols)]
    return (
        "<h3>Engine-side timings (Ollama), medians, beside the client's view</h3>"
        + _table(headers, rows, [False, *([True] * len(cols))])
        + "<p class='note'>Queue ≈ total − load − prompt eval − eval.</p>"
    )


def _figures(view: RunView) -> list[go.Figure]:
    rows, names, colors, order = view.rows, view.chart_names, view.chart_colors, view.order
    t0 = frames.run_start(view.run, rows)
    requests = frames.request_frame(rows, names, t0)
    levels = frames.level_frame(rows, names, order)
    spans = frames.level_spans(view.levels, names, t0, now=view.run.get("finished_at"))
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
        charts._no_data(fig, truncate(text, 90))
    return fig


def _charts_section(figures: Sequence[go.Figure]) -> str:
    cells, data = [], []
    for i, fig in enumerate(figures):
        cells.append(f'<div class="chart" id="fig{i}"></div>')
        payload = _json_for_script(fig.to_json())
        data.append(
            f'<script type="application/json" class="fig" data-target="fig{i}">{payload}</script>'
        )
    note = (
        "<p class='note'>Interactive charts (hover, zoom, legend toggles); "
        "they need JavaScript, the tables above do not.</p>"
    )
    return "<h2>Charts</h2>" + note + f'<div class="charts">{"".join(cells)}</div>' + "".join(data)


def _quality_section(view: RunView) -> str:
    quality = frames.quality_frame(view.doc)
    if quality.empty:
        return "<h2>Answer quality</h2><p class='note'>No answer checks recorded.</p>"
    codes = [c for c in quality.columns if c not in ("lane", "checked", "language")]
    rows = []
    for rec in quality.to_dict("records"):
        cells = [_lane_cell(rec["lane"], view.colors), _e(rec["checked"]), _e(rec["language"])]
        for code in codes:
            n = int(rec.get(code) or 0)
            cells.append("<span class='zero'>0</span>" if n == 0 else f"<b>{n}</b>")
        rows.append(cells)
    headers = ["Lane", "Answers checked", "Language", *(c.replace("_", " ") for c in codes)]
    return "<h2>Answer quality flags</h2>" + _table(
        headers, rows, [False, True, False, *([True] * len(codes))]
    )


def _answers_section(view: RunView) -> str:
    levels = frames.levels_of(view.doc)
    if not levels:
        return ""
    level = levels[0]
    items = frames.answers_by_prompt(view.doc, level, limit=ANSWER_PROMPTS)
    out = [
        "<h2>Sample answers side by side</h2>",
        f"<p class='note'>First {len(items)} prompts at concurrency {level}, the first answer "
        "of each lane. Model output is shown as plain text.</p>",
    ]
    for n, item in enumerate(items, start=1):
        out.append(f"<h3>Prompt {n}</h3>")
        out.append(f'<div class="prompt">{_e(truncate(item["prompt"], PROMPT_CHARS))}</div>')
        out.append('<div class="answers">')
        for lane in view.doc["lanes"]:
            answers = item["answers"].get(lane["name"], [])
            out.append(_answer_html(lane["name"], answers, view.colors))
        out.append("</div>")
    return "".join(out)


def _answer_html(name: str, answers: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    head = f'<div class="lane">{_swatch(colors.get(name, "#555555"))}{_e(name)}</div>'
    if not answers:
        return f'<div class="answer">{head}<p class="note">no answer at this level</p></div>'
    req = answers[0]
    if req.get("error"):
        body = f'<p class="error">failed: {_e(req["error"])}</p>'
    else:
        text = req.get("output_text") or ""
        shown = truncate(text, ANSWER_CHARS)
        more = len(text) - ANSWER_CHARS
        body = f'<pre class="text">{_e(shown)}</pre>'
        if more > 0:
            body += f'<p class="note">… {more:,} more characters in the exports.</p>'
        bits = [
            f"{fmt(req.get('e2el_ms'), 0, 'ms')} E2E",
            f"{req.get('output_tokens') or '?'} tokens",
            f"finish: {req.get('finish_reason') or '?'}",
        ]
        body += f'<p class="note">{_e(" · ".join(bits))}</p>'
    for flag in (req.get("quality") or {}).get("flags") or []:
        body += f'<p class="flag">⚑ {_e(flag.get("code"))}: {_e(flag.get("reason"))}</p>'
    return f'<div class="answer">{head}{body}</div>'


# --- the document -----------------------------------------------------------------------


def html_report(db: str | os.PathLike[str] | None, run_id: str) -> str:
    """The run as one self-contained HTML page (str). Raises results.RunNotFound."""
    return render_html(load_view(db, run_id))


def render_html(view: RunView) -> str:
    """The report page for a loaded run."""
    plotly_js, plotly_hash = _plotly_js()
    body = "".join(
        [
            _header(view),
            _summary_section(view),
            _charts_section(_figures(view)),
            _quality_section(view),
            _lanes_section(view),
            _settings_section(view),
            _answers_section(view),
        ]
    )
    c = default_concurrency(view.doc)
    footer = (
        f"<footer>servescope report · run {_e(view.doc['run_id'])} · "
        f"generated from the run's store; per-request rows: "
        f"<code>python -m lib.cli export {_e(view.doc['run_id'])} --csv FILE</code>"
        + (f" · card: <code>report --png FILE --concurrency {c}</code>" if c else "")
        + "</footer>"
    )
    csp = _csp([plotly_hash, _csp_hash(_RUNNER_JS)])
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(run_title(view.doc))} · servescope</title>"
        f"<style>{_CSS}</style>"
        f"<script>{plotly_js}</script></head>"
        f"<body><main>{body}{footer}</main><script>{_RUNNER_JS}</script></body></html>\n"
    )


def html_bytes(db: str | os.PathLike[str] | None, run_id: str) -> bytes:
    """The report as UTF-8 bytes, for `st.download_button(data=...)`."""
    return html_report(db, run_id).encode("utf-8")


def write_html(
    db: str | os.PathLike[str] | None, run_id: str, path: str | os.PathLike[str]
) -> Path:
    """Write the report to `path`; returns the path."""
    out = Path(path)
    out.write_bytes(html_bytes(db, run_id))
    return out


def png_bytes(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> bytes:
    """The 1600×900 retro card as PNG bytes (see lib/report_card.py)."""
    from lib import report_card  # the card pulls in the browser renderer; only when asked

    return report_card.png_bytes(db, run_id, concurrency)
