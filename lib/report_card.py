"""The retro card: one 1600×900 PNG that says what a run found, for a slide.

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

from lib.report_facts import (
    ConcurrencyError,
    RunView,
    answer_pair,
    fmt,
    hardware_summary,
    lane_kpis,
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


# What the memory figure is, by its source (report_facts.memory_series), in few words.
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
.foot { position: absolute; left: 44px; right: 44px; bottom: 12px; font-size: 14px; color: #6e7781;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def card_html(view: RunView, concurrency: int | None = None) -> str:
    """The card page for a loaded run at one concurrency level (default: the highest
    level every lane measured). Raises ConcurrencyError for a level the run lacks."""
    concurrency = resolve_concurrency(view.doc, concurrency)
    kpis = lane_kpis(view, concurrency)
    shown, hidden = kpis[:MAX_LANES], len(kpis) - MAX_LANES
    settings = view.doc["settings"]
    when = [
        f"<b>{_e(run_date(view.doc))}</b>",
        _e(hardware_summary(view.doc.get("environment") or {})),
        _e(
            (f"concurrency {concurrency}" if concurrency is not None else "no level ran")
            + f" · {settings.get('requests')} requests per level · "
            f"max {settings.get('max_tokens')} tokens · temp. {settings.get('temperature')}"
        ),
    ]
    more = f" · {hidden} more lanes in the report" if hidden > 0 else ""
    # A run that did not complete says so at the top; with no lane, its error fills the card.
    state = view.doc["status"]
    status = f' · <span class="bad">{_e(state)}</span>' if state != "completed" else ""
    problem = (
        f'<div class="problem">The run {_e(state)}: '
        f"{_e(truncate(scrub_urls(view.doc.get('error') or 'no lane was measured'), 300))}</div>"
    )
    body = (
        f'<div class="top"><div><div class="brand">servescope · benchmark card{status}</div>'
        f"<h1>{_e(truncate(run_title(view.doc), 60))}</h1></div>"
        f'<div class="when">{"".join(f"<div>{w}</div>" for w in when)}</div></div>'
        f'<div class="lanes">{"".join(_lane_box(k, shown) for k in shown) or problem}</div>'
        '<div class="bottom"><div class="chart"><h2>Output throughput vs concurrency (tok/s)</h2>'
        f"{throughput_svg(view, concurrency)}</div>"
        f'<div class="pair">{_pair_html(view, concurrency)}</div></div>'
        f'<div class="foot">run {_e(view.doc["run_id"])}{_e(more)} · TTFT = time to first '
        "token · tokens/s = one request's output tokens ÷ its E2E latency · output throughput = "
        "all output tokens of the level ÷ its duration · warm-ups left out</div>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<style>{_CSS}</style></head><body class="n{len(shown)}">{body}</body></html>'
    )


def _best(kpis: Sequence[Mapping[str, Any]], key: str, higher: bool) -> str | None:
    values = [(k[key], k["name"]) for k in kpis if k[key] is not None]
    if len(values) < 2 or len({v for v, _ in values}) < 2:
        return None
    return (max if higher else min)(values)[1]


def _lane_box(k: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> str:
    engine = ENGINE_NAMES.get(k["engine"], k["engine"] or "engine")
    version = f" {k['version']}" if k["version"] else ""
    quant = " · ".join(
        str(x) for x in (k["quantization"] or "quantization unknown", k["parameter_size"]) if x
    )

    def kpi(key: str, digits: int, unit: str, label: str, higher: bool) -> str:
        value = k[key]
        best = '<span class="best">best</span>' if _best(lanes, key, higher) == k["name"] else ""
        shown = fmt(value, digits) if value is not None else "–"
        return (
            f'<div><div class="v">{_e(shown)}<small>{_e(unit)}</small>{best}</div>'
            f'<div class="k">{_e(label)}</div></div>'
        )

    mem = k["peak_memory_bytes"]
    mem_label = MEMORY_LABELS.get(k["memory_source"], "peak memory")
    kpis = (
        kpi("ttft_p50_ms", 0 if (k["ttft_p50_ms"] or 0) >= 10 else 1, "ms", "TTFT p50", False)
        + kpi("tok_per_s_p50", 1, "tok/s", "tokens/s p50", True)
        + kpi("out_tok_per_s", 0, "tok/s", "output throughput", True)
        + (
            f'<div><div class="v">{_e(fmt(mem / 2**30, 1) if mem is not None else "–")}'
            f"<small>{'GiB' if mem is not None else 'no telemetry'}</small></div>"
            f'<div class="k">{_e(mem_label)}</div></div>'
        )
    )
    return (
        f'<div class="lane" style="--c:{_e(k["color"])}">'
        f'<div class="engine">{_e(engine + version)}</div>'
        f'<div class="model">{_e(k["model"])}</div><div class="quant">{_e(quant)}</div>'
        f'<div class="kpis">{kpis}</div>{_quality_line(k)}</div>'
    )


def _quality_line(k: Mapping[str, Any]) -> str:
    failed = k["failed"] or 0
    bits = [f"{failed} of {failed + (k['completed'] or 0)} failed"] if failed else []
    if k["checked"]:
        bits.append(k["language"] or "")
        bits += [f"{n} {code.replace('_', ' ')}" for code, n in k["flags"].items()]
    else:
        bits.append("no answer checks")
    warn = " warn" if k["drifted"] or failed else ""
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
    series = []
    for lane in view.doc["lanes"][:MAX_LANES]:
        pts = [
            (lv["concurrency"], lv["output_throughput"])
            for lv in lane["levels"]
            if lv.get("output_throughput") is not None
        ]
        series.append((view.colors[lane["name"]], sorted(pts)))
    xs = sorted({x for _, pts in series for x, _ in pts})
    if not xs:
        return f'<svg width="{width}" height="{height}"><text x="20" y="40">no data</text></svg>'
    top = max(y for _, pts in series for _, y in pts) or 1.0
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
