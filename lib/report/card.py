"""The retro card: one 1600×900 PNG that says what a run found, for a slide.

Each lane's box shows every level it ran (or the one level asked for, in big figures),
its failed levels with their reasons and its answer checks; a run that did not complete
says so in a red banner with its reason. "best" is never bare on a lane that failed
somewhere or whose answers are unusable (report_facts.UNUSABLE_FLAGS): see `_best_badge`.

The card is an HTML page with fixed pixel sizes and an inline SVG chart (no
JavaScript, and a Content-Security-Policy that allows none), screenshotted by headless
Chromium through its command line: no Python browser driver needed at run time.
Untrusted text (answers, prompts, lane and model names) is escaped with html.escape
and cut to fit. Where no Chromium or Chrome exists, `RenderError` says so in one line.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lib.report.facts import (
    ConcurrencyError,
    RunView,
    answer_pair,
    fmt,
    hardware_summary,
    lane_kpis,
    level_trouble,
    load_view,
    resolve_concurrency,
    run_date,
    run_title,
    scrub_urls,
    truncate,
)

__all__ = ["ConcurrencyError", "RenderError", "card_html", "png_bytes", "render_png", "write_png"]

WIDTH, HEIGHT = 1600, 900
MAX_LANES = 4  # more do not fit readably; the card says how many were left out
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_ENV = "SERVESCOPE_CHROMIUM"
RENDER_TIMEOUT_S = 30.0  # one attempt; a render takes 1-3 s
RENDER_ATTEMPTS = 2
ENGINE_NAMES = {
    "vllm": "vLLM",
    "ollama": "Ollama",
    "llama.cpp": "llama.cpp",
    "openai": "OpenAI API",
}


# What the memory figure is, by its source (lane_memory.memory_series), in few words.
MEMORY_LABELS = {
    "GPU, engine processes": "peak GPU memory",
    "VRAM, Ollama": "VRAM (Ollama)",
    "model size, Ollama": "model size (Ollama)",
    "GPU, whole device": "peak GPU memory, all",
}


class RenderError(RuntimeError):
    """The PNG could not be made (no browser, or the browser failed); one-line message."""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# --- the page -------------------------------------------------------------------------------

_CSS = """
* { box-sizing: border-box; margin: 0; padding: 0; }
html, body { width: 1600px; height: 900px; overflow: hidden; background: #fff; }
body { font-family: Inter, "Source Sans Pro", "Segoe UI", Helvetica, Arial, "Noto Sans CJK KR",
  "Noto Sans CJK JP", "Noto Sans CJK SC", sans-serif; color: #1f2328; padding: 34px 44px 0; }
.top { display: flex; justify-content: space-between; align-items: flex-end; height: 92px;
  gap: 32px; }
.top > div:first-child { flex: 1 1 auto; min-width: 0; }
.brand { font-size: 17px; letter-spacing: .12em; text-transform: uppercase; color: #0072B2;
  font-weight: 700; }
h1 { font-size: 40px; line-height: 1.15; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.when { flex: 0 1 auto; max-width: 720px; text-align: right; font-size: 19px; color: #57606a;
  line-height: 1.45; }
.when div { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.when b { color: #1f2328; }
.lanes { display: flex; gap: 22px; margin-top: 18px; height: 372px; }
.lane { flex: 1 1 0; min-width: 0; background: #f6f8fa; border-radius: 12px; padding: 16px 20px;
  border-top: 10px solid var(--c); display: flex; flex-direction: column; }
.engine { font-size: 17px; font-weight: 700; color: var(--c); text-transform: uppercase;
  letter-spacing: .06em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.model { font-size: 25px; font-weight: 700; margin-top: 2px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.quant { font-size: 17px; color: #57606a; margin-top: 2px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.kpis { display: grid; grid-template-columns: 1fr 1fr; gap: 16px 16px; margin-top: 16px; }
.kpis > div { min-width: 0; }
.v { font-size: 52px; font-weight: 800; line-height: 1.05; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.v small { font-size: 22px; font-weight: 600; color: #57606a; margin-left: 5px; }
.k { font-size: 17px; color: #57606a; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.n3 .v { font-size: 42px; } .n3 .v small { font-size: 19px; }
.n4 .v { font-size: 33px; } .n4 .v small { font-size: 16px; } .n4 .model { font-size: 21px; }
.n4 .k, .n3 .k { font-size: 15px; } .n4 .best { font-size: 10px; padding: 1px 4px; }
.best { display: inline-block; font-size: 12px; font-weight: 700; color: #fff; background: var(--c);
  border-radius: 8px; padding: 1px 7px; margin-left: 6px; vertical-align: 3px; }
.q { margin-top: auto; font-size: 19px; padding-top: 8px; border-top: 1px solid #d0d7de;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
.q.warn { color: #b3261e; font-weight: 700; }
.bottom { display: flex; gap: 22px; margin-top: 18px; height: 300px; }
.chart { flex: 0 0 690px; }
.chart h2, .pair h2 { font-size: 18px; color: #57606a; font-weight: 600; margin-bottom: 4px; }
.pair { flex: 1 1 0; min-width: 0; overflow: hidden; }
.prompt { font-size: 18px; background: #f6f8fa; border-left: 4px solid #8c959f; padding: 6px 10px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ans { margin-top: 8px; font-size: 18px; line-height: 1.35; border-left: 4px solid var(--c);
  padding: 2px 10px; max-height: 100px; overflow: hidden; word-break: break-word; }
.ans b { color: var(--c); }
.ans .fl { color: #b3261e; font-weight: 700; }
.bad { color: #b3261e; }
.problem { font-size: 26px; color: #b3261e; padding: 24px; background: #fdecea; border-radius: 12px;
  width: 100%; }
.banner { margin-top: 10px; font-size: 21px; font-weight: 700; color: #b3261e; background: #fdecea;
  border-radius: 8px; padding: 5px 14px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.lane > * { flex-shrink: 0; }
.troubled .lanes { height: 380px; margin-top: 12px; } .troubled .bottom { height: 262px; }
.troubled .kpis { margin-top: 10px; gap: 10px 16px; } .troubled .v { font-size: 44px; }
.troubled.n3 .v { font-size: 38px; } .troubled.n4 .v { font-size: 30px; }
.best.warn { background: #b3261e; display: block; width: fit-content; max-width: 100%;
  margin: 3px 0 0; font-size: 14px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  vertical-align: 0; }
.t { font-size: 17px; color: #b3261e; font-weight: 700; margin-top: 8px; display: -webkit-box;
  -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
table.lv { border-collapse: collapse; margin-top: 10px; width: 100%; font-size: 20px;
  font-variant-numeric: tabular-nums; table-layout: fixed; }
.lv th { font-size: 14px; color: #57606a; font-weight: 600; text-align: right; padding: 0 6px 2px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.lv td { text-align: right; padding: 2px 6px; border-top: 1px solid #d0d7de; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.lv th:first-child, .lv td:first-child { text-align: left; width: 17%; }
.lv td.x { color: #b3261e; font-weight: 700; text-align: left; }
.lv .star { color: var(--c); font-size: 15px; margin-left: 3px; }
.lv .star.warn { color: #b3261e; }
.lv.many { font-size: 16px; } .lv.many td { padding: 1px 6px; }
.n3 table.lv { font-size: 17px; } .n4 table.lv { font-size: 15px; } .n4 .lv th { font-size: 12px; }
.mem { font-size: 16px; color: #57606a; margin-top: 6px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.foot { position: absolute; left: 44px; right: 44px; bottom: 12px; font-size: 14px; color: #6e7781;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def card_html(view: RunView, concurrency: int | None = None) -> str:
    """The card page for a loaded run: every level of each lane (default), or the one
    level asked for (ConcurrencyError for a level the run lacks). Either way each lane
    states its failed levels and unusable answers, and a run that did not complete says
    so at the top with its reason."""
    picked = resolve_concurrency(view.doc, concurrency) if concurrency is not None else None
    kpis = lane_kpis(view, picked)
    shown, hidden = kpis[:MAX_LANES], len(kpis) - MAX_LANES
    settings = view.doc["settings"]
    ran = sorted({lv["concurrency"] for lane in view.doc["lanes"] for lv in lane["levels"]})
    if picked is not None:
        levels_text = f"concurrency {picked}"
    elif ran:
        levels_text = "concurrency " + ", ".join(map(str, ran))
    else:
        levels_text = "no level ran"
    when = [
        f"<b>{_e(run_date(view.doc))}</b>",
        _e(hardware_summary(view.doc.get("environment") or {})),
        _e(
            levels_text + f" · {settings.get('requests')} requests per level · "
            f"max {settings.get('max_tokens')} tokens · temp. {settings.get('temperature')}"
        ),
    ]
    more = f" · {hidden} more lanes in the report" if hidden > 0 else ""
    # A run that did not complete says so at the top, with its reason, in red: a retro
    # screenshot must not read as a clean run. With no lane, its error fills the card.
    state = view.doc["status"]
    troubled = state != "completed"
    status = f' · <span class="bad">{_e(state)}</span>' if troubled else ""
    reason = truncate(scrub_urls(view.doc.get("error") or "no lane was measured"), 300)
    banner = (
        f'<div class="banner">⚠ Run {_e(state)}: {_e(reason)}</div>' if troubled and shown else ""
    )
    problem = f'<div class="problem">The run {_e(state)}: {_e(reason)}</div>'
    box = _lane_box if picked is not None else _lane_table
    if picked is not None:
        legend = (
            " · best = top of the lanes; ⚑ beside it: that lane failed or its answers are flagged"
        )
    else:
        legend = (
            " · ★ top output throughput at that level (⚑ instead: top, but that lane failed "
            "somewhere or its answers are flagged)"
        )
    body = (
        f'<div class="top"><div><div class="brand">servescope · benchmark card{status}</div>'
        f"<h1>{_e(truncate(run_title(view.doc), 60))}</h1></div>"
        f'<div class="when">{"".join(f"<div>{w}</div>" for w in when)}</div></div>'
        f"{banner}"
        f'<div class="lanes">{"".join(box(k, shown) for k in shown) or problem}</div>'
        '<div class="bottom"><div class="chart"><h2>Output throughput vs concurrency (tok/s)</h2>'
        f"{throughput_svg(view, picked, height=232 if banner else 270)}</div>"
        f'<div class="pair">{_pair_html(view, picked)}</div></div>'
        f'<div class="foot">run {_e(view.doc["run_id"])}{_e(more)}{_e(legend if shown else "")} · '
        "TTFT = time to first token · tokens/s = one request's output tokens ÷ its E2E "
        "latency · output throughput = all output tokens of the level ÷ its duration · "
        "warm-ups left out</div>"
    )
    classes = f"n{len(shown)}" + (" troubled" if banner else "")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<style>{_CSS}</style></head><body class="{classes}">{body}</body></html>'
    )


def _winner(values: Sequence[tuple[Any, str]], higher: bool) -> str | None:
    """The name with the best value, when at least two lanes differ; else None."""
    values = [(v, name) for v, name in values if v is not None]
    if len(values) < 2 or len({v for v, _ in values}) < 2:
        return None
    return (max if higher else min)(values)[1]


def _best(kpis: Sequence[Mapping[str, Any]], key: str, higher: bool) -> str | None:
    return _winner([(k[key], k["name"]) for k in kpis], higher)


def _best_badge(k: Mapping[str, Any]) -> str:
    """The badge for the lane on top of one figure. A lane that failed somewhere or whose
    answers are flagged (k["caveats"]) never gets a bare "best": the badge itself carries
    its first caveat in red ("best, but ⚑ 4/4 answers drifted to Chinese"). Withholding
    it would either crown a slower lane or leave a gap a reader cannot explain; a badge
    that says both things is what a cropped screenshot still reads honestly."""
    caveats = k["caveats"]
    if not caveats:
        return '<span class="best">best</span>'
    more = f" (+{len(caveats) - 1})" if len(caveats) > 1 else ""
    return f'<span class="best warn">best, but ⚑ {_e(caveats[0])}{_e(more)}</span>'


def _lane_head(k: Mapping[str, Any]) -> str:
    engine = ENGINE_NAMES.get(k["engine"], k["engine"] or "engine")
    version = f" {k['version']}" if k["version"] else ""
    quant = " · ".join(
        str(x) for x in (k["quantization"] or "quantization unknown", k["parameter_size"]) if x
    )
    return (
        f'<div class="engine">{_e(engine + version)}</div>'
        f'<div class="model">{_e(k["model"])}</div><div class="quant">{_e(quant)}</div>'
    )


def _memory_text(k: Mapping[str, Any]) -> tuple[str, str, str]:
    mem = k["peak_memory_bytes"]
    value = fmt(mem / 2**30, 1) if mem is not None else "–"
    unit = "GiB" if mem is not None else "no telemetry"
    return value, unit, MEMORY_LABELS.get(k["memory_source"], "peak memory")


def _lane_box(k: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> str:
    """A lane at the one level the user picked: four big figures, then every failed
    level of the lane (not only the picked one) and its answer checks."""

    def kpi(key: str, digits: int, unit: str, label: str, higher: bool) -> str:
        value = k[key]
        best = _best_badge(k) if _best(lanes, key, higher) == k["name"] else ""
        shown = fmt(value, digits) if value is not None else "–"
        badge, below = (best, "") if not k["caveats"] else ("", best)
        return (
            f'<div><div class="v">{_e(shown)}<small>{_e(unit)}</small>{badge}</div>'
            f'<div class="k">{_e(label)}</div>{below}</div>'
        )

    value, unit, mem_label = _memory_text(k)
    kpis = (
        kpi("ttft_p50_ms", 0 if (k["ttft_p50_ms"] or 0) >= 10 else 1, "ms", "TTFT p50", False)
        + kpi("tok_per_s_p50", 1, "tok/s", "tokens/s p50", True)
        + kpi("out_tok_per_s", 0, "tok/s", "output throughput", True)
        + (
            f'<div><div class="v">{_e(value)}<small>{_e(unit)}</small></div>'
            f'<div class="k">{_e(mem_label)}</div></div>'
        )
    )
    return (
        f'<div class="lane" style="--c:{_e(k["color"])}">{_lane_head(k)}'
        f'<div class="kpis">{kpis}</div>{_troubles_line(k)}{_quality_line(k)}</div>'
    )


def _lane_table(k: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> str:
    """A lane over every level it ran: a row per level (a failed level reads as its
    reason, in red), the highest output throughput of each level starred."""
    winners: dict[int, str | None] = {}
    for c in {lv["concurrency"] for lane in lanes for lv in lane["levels"]}:
        values = [
            (lv["out_tok_per_s"], lane["name"])
            for lane in lanes
            for lv in lane["levels"]
            if lv["concurrency"] == c
        ]
        winners[c] = _winner(values, higher=True)
    rows = []
    for lv in k["levels"]:
        c = lv["concurrency"]
        if lv["status"] == "failed" or not lv["completed"]:
            why = level_trouble(lv) or f"c={c}: no answer"
            rows.append(
                f'<tr><td>{_e(c)}</td><td class="x" colspan="3">✗ '
                f"{_e(why.split(': ', 1)[-1])}</td></tr>"
            )
            continue
        star = ""
        if winners.get(c) == k["name"]:
            # ★ for a clean lane; a flagged lane on top gets ⚑, its reasons in the box.
            cls, sym = ("star warn", "⚑") if k["caveats"] else ("star", "★")
            star = f'<span class="{cls}">{sym}</span>'
        ttft = lv["ttft_p50_ms"]
        digits = 0 if (ttft or 0) >= 10 else 1
        failed = lv["failed"] or 0
        mark = f' <span class="bad">✗{failed}</span>' if failed else ""
        rows.append(
            f"<tr><td>{_e(c)}{mark}</td><td>{_e(fmt(ttft, digits))}</td>"
            f"<td>{_e(fmt(lv['tok_per_s_p50'], 1))}</td>"
            f"<td>{_e(fmt(lv['out_tok_per_s'], 0))}{star}</td></tr>"
        )
    many = " many" if len(rows) > 5 else ""
    table = (
        f'<table class="lv{many}"><tr><th>c</th><th>TTFT p50 ms</th><th>tokens/s p50</th>'
        f"<th>output tok/s</th></tr>{''.join(rows)}</table>"
    )
    value, unit, mem_label = _memory_text(k)
    mem = f'<div class="mem">{_e(mem_label)}: {_e(value)} {_e(unit)}</div>'
    partial = [t for t in k["troubles"] if not _failed_row(t, k)]
    return (
        f'<div class="lane" style="--c:{_e(k["color"])}">{_lane_head(k)}{table}{mem}'
        f"{_troubles_line(k, partial)}{_quality_line(k)}</div>"
    )


def _failed_row(trouble: str, k: Mapping[str, Any]) -> bool:
    """Whether a trouble line is already a red row of the lane's table."""
    for lv in k["levels"]:
        if (lv["status"] == "failed" or not lv["completed"]) and trouble.startswith(
            f"c={lv['concurrency']}: "
        ):
            return True
    return False


def _troubles_line(k: Mapping[str, Any], troubles: Sequence[str] | None = None) -> str:
    troubles = k["troubles"] if troubles is None else troubles
    if not troubles:
        return ""
    return f'<div class="t">✗ {_e(" · ".join(troubles))}</div>'


def _quality_line(k: Mapping[str, Any]) -> str:
    failed = sum(lv["failed"] or 0 for lv in k["levels"])
    done = sum(lv["completed"] or 0 for lv in k["levels"])
    bits = [f"{failed} of {failed + done} requests failed"] if failed else []
    if k["checked"]:
        drift = k["language"] or ""
        bits.append(drift.replace(" drifted", " answers drifted", 1) if k["drifted"] else drift)
        bits += [f"{n} {code.replace('_', ' ')}" for code, n in k["flags"].items()]
    else:
        bits.append("no answer checks")
    warn = " warn" if k["caveats"] else ""
    return f'<div class="q{warn}">⚑ {_e(" · ".join(bits))}</div>'


def _pair_html(view: RunView, concurrency: int | None) -> str:
    pair = answer_pair(view.doc, concurrency)
    if pair is None:
        return "<h2>Answers</h2><p>No answers recorded.</p>"
    out = [
        "<h2>One prompt, answered side by side</h2>",
        f'<div class="prompt">{_e(truncate(" ".join(pair["prompt"].split()), 140))}</div>',
    ]
    for a in pair["answers"][:MAX_LANES]:
        color = view.colors.get(a["lane"], "#555555")
        if a["error"]:
            text = f"failed: {scrub_urls(a['error'])}"
        else:
            text = " ".join(a["text"].split()) or "(empty answer)"
        flags = ", ".join(c.replace("_", " ") for c in a["flags"])
        flag_html = f' <span class="fl">⚑ {_e(flags)}</span>' if flags else ""
        out.append(
            f'<div class="ans" style="--c:{_e(color)}"><b>{_e(truncate(a["lane"], 48))}:</b> '
            f"{_e(truncate(text, 230))}{flag_html}</div>"
        )
    return "".join(out)


# --- the mini chart ---------------------------------------------------------------------------


def throughput_svg(
    view: RunView, concurrency: int | None, width: int = 690, height: int = 270
) -> str:
    """Output throughput vs concurrency per lane as inline SVG (the card runs no JS)."""
    series, failed = [], []
    for lane in view.doc["lanes"][:MAX_LANES]:
        pts = [
            (lv["concurrency"], lv["output_throughput"])
            for lv in lane["levels"]
            if lv.get("output_throughput") is not None and lv.get("completed")
        ]
        series.append((view.colors[lane["name"]], sorted(pts)))
        # A level with no throughput because its requests failed is a red cross on the
        # axis, not a silent gap in the line.
        failed += [
            (view.colors[lane["name"]], lv["concurrency"])
            for lv in lane["levels"]
            if not lv.get("completed") and (lv.get("failed") or 0)
        ]
    xs = sorted({x for _, pts in series for x, _ in pts} | {x for _, x in failed})
    if not xs:
        return f'<svg width="{width}" height="{height}"><text x="20" y="40">no data</text></svg>'
    top = max((y for _, pts in series for _, y in pts), default=0.0) or 1.0
    step = _nice_step(top / 4)
    ymax = step * math.ceil(top / step)
    digits = max(0, -math.floor(math.log10(step)))  # 0.5 steps need one digit
    left, right, upper, lower = 70, 24, 26, 48
    pad = 36  # px: the first and last points sit inside the plot, not on its edges
    log = len(xs) > 2 and xs[-1] / max(xs[0], 1) >= 8  # as charts.throughput_vs_concurrency

    def sx(x: float) -> float:
        if len(xs) == 1:
            return left + (width - left - right) / 2
        lo, hi = (math.log(xs[0]), math.log(xs[-1])) if log else (xs[0], xs[-1])
        v = math.log(x) if log else x
        return left + pad + (v - lo) / (hi - lo) * (width - left - right - 2 * pad)

    def sy(y: float) -> float:
        return upper + (1 - y / ymax) * (height - upper - lower)

    parts = [f'<svg width="{width}" height="{height}" font-size="15" fill="#57606a">']
    for i in range(round(ymax / step) + 1):
        y = sy(i * step)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        )
        parts.append(
            f'<text x="{left - 8}" y="{y + 5:.1f}" text-anchor="end">{_e(fmt(i * step, digits))}'
            "</text>"
        )
    for x in xs:
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 26}" text-anchor="middle">{x}</text>')
    if concurrency in xs:
        cx = sx(concurrency)
        parts.append(
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{upper}" y2="{height - lower}" '
            'stroke="#8c959f" stroke-dasharray="5 4"/>'
        )
        parts.append(
            f'<text x="{cx:.1f}" y="{upper - 8}" text-anchor="middle" font-weight="700" '
            f'fill="#1f2328">card: c={concurrency}</text>'
        )
    for color, pts in series:
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{_e(color)}" '
            'stroke-width="4" stroke-linejoin="round"/>'
        )
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{_e(color)}"/>')
    for color, x in failed:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{sy(0) + 7:.1f}" text-anchor="middle" font-size="26" '
            f'font-weight="700" fill="{_e(color)}">✗</text>'
        )
    if failed:
        parts.append(
            f'<text x="{width - right}" y="{upper - 8}" text-anchor="end" fill="#b3261e" '
            'font-weight="700">✗ = level failed</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        "concurrency (requests in flight)</text></svg>"
    )
    return "".join(parts)


def _nice_step(raw: float) -> float:
    """1, 2 or 5 × a power of ten, at least `raw`: round axis ticks."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


# --- rendering --------------------------------------------------------------------------------


def find_browser() -> str:
    """Path of a Chromium or Chrome: $SERVESCOPE_CHROMIUM, else the first on PATH."""
    chosen = os.environ.get(BROWSER_ENV)
    if chosen:
        if os.access(chosen, os.X_OK):
            return chosen
        raise RenderError(f"${BROWSER_ENV}={chosen} is not an executable browser")
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise RenderError(
        "cannot render the PNG: no Chromium or Chrome found (install one, e.g. "
        f"`apt-get install chromium`, or set ${BROWSER_ENV} to its path)"
    )


def render_png(page: str, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Screenshot an HTML page at exactly width×height with headless Chromium."""
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="servescope-card-") as tmp:
        src, out = Path(tmp) / "card.html", Path(tmp) / "card.png"
        src.write_text(page, encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # containers run as root, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={tmp}/profile",  # never share or lock the user's profile
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            src.as_uri(),
        ]
        for attempt in range(1, RENDER_ATTEMPTS + 1):
            # A profile per attempt: a killed browser leaves its profile locked.
            argv = [
                f"--user-data-dir={tmp}/profile-{attempt}"
                if a.startswith("--user-data-dir=")
                else a
                for a in cmd
            ]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its renderer and GPU children go with it on timeout
            )
            try:
                _, err = proc.communicate(timeout=RENDER_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                # Headless --screenshot now and then never exits (seen once in a few
                # hundred renders on a loaded 2-core machine): a fresh browser does.
                if attempt == RENDER_ATTEMPTS:
                    raise RenderError(
                        f"{browser} took over {RENDER_TIMEOUT_S:.0f} s to render, "
                        f"{RENDER_ATTEMPTS} times"
                    ) from None
        if not out.exists():
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else "no message"
            raise RenderError(f"{browser} made no PNG (exit {proc.returncode}): {why[:300]}")
        data = out.read_bytes()
    size = png_size(data)
    if size != (width, height):
        raise RenderError(f"{browser} made a {size[0]}×{size[1]} PNG, not {width}×{height}")
    return data


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; ValueError if it is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_bytes(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> bytes:
    """The run's 1600×900 card as PNG bytes, for `st.download_button(data=...)`.

    Raises results.RunNotFound, ConcurrencyError (level not in the run) or RenderError.
    """
    return render_png(card_html(load_view(db, run_id), concurrency))


def write_png(
    db: str | os.PathLike[str] | None,
    run_id: str,
    path: str | os.PathLike[str],
    concurrency: int | None = None,
) -> Path:
    """Write the card to `path`; returns the path."""
    out = Path(path)
    out.write_bytes(png_bytes(db, run_id, concurrency))
    return out
