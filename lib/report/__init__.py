"""Self-contained HTML report of a run: one file that opens anywhere, offline.

Plotly's JavaScript is inlined once and the figures travel as one data block, both
gzipped and written 7 bits a character (lib/report/packing.pack; the page inflates them
with the browser's DecompressionStream), so the file is a third of the bundle's size and
asks nothing of the network; a Content-Security-Policy (default-src 'none', scripts
allowed only by hash) makes the browser refuse any fetch and any script that is not
ours, as a second line behind escaping. Model output, prompts, lane names and errors
are untrusted text, escaped in lib/report/sections.py (the page's sections); endpoint
URLs are shown without scheme, credentials or query.

The run's facts (hardware line, memory, default level) come from lib/report/facts.py,
shared with the PNG card (lib/report/card.py). A matrix run's cells side by side:
lib/report/matrix_section.py.
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

from plotly.offline import get_plotlyjs

from lib.report import capacity_section, matrix_section, verdict_section
from lib.report import sections as sections
from lib.report.facts import RunView, load_view, resolve_concurrency, run_title
from lib.report.level_tables import level_phrase, rate_run

__all__ = ["html_bytes", "html_report", "png_bytes", "write_html"]

# Unpacks Plotly's bundle and the figures (lib/report/packing.pack: gzip, 7 bits a
# character), runs the bundle as an inline script (allowed by its hash in the CSP, so no
# 'unsafe-eval' and no blob: URL) and draws. Constant text, so its CSP hash is constant.
_RUNNER_JS = """(function () {
  var config = {displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["sendDataToCloud"],
    toImageButtonOptions: {format: "png", scale: 2}};
  function say(text) {
    document.querySelectorAll("div.chart").forEach(function (el) {
      el.textContent = text;
      el.classList.add("note");
    });
  }
  function unpack(id) {
    var text = document.getElementById(id).textContent;
    var out = new Uint8Array(Math.floor(text.length * 7 / 8));
    var acc = 0, bits = 0, j = 0;
    for (var i = 0; i < text.length; i++) {
      var v = text.charCodeAt(i);
      if (v >= 256) v -= 256;
      acc = (acc << 7) | v;
      bits += 7;
      if (bits >= 8) {
        bits -= 8;
        out[j++] = (acc >> bits) & 255;
        acc &= (1 << bits) - 1;
      }
    }
    return out;
  }
  function inflate(id) {
    var stream = new Blob([unpack(id)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text();
  }
  if (typeof DecompressionStream === "undefined") {
    say("This browser cannot unpack the charts (they need Chrome 80, Firefox 113, " +
      "Safari 16.4 or newer); the tables hold the same figures.");
    return;
  }
  Promise.all([inflate("plotly-js"), inflate("fig-data")]).then(function (parts) {
    var bundle = document.createElement("script");
    bundle.textContent = parts[0];
    document.head.appendChild(bundle);
    var pack = JSON.parse(parts[1]);
    pack.figures.forEach(function (fig, i) {
      if (!fig.layout.template) fig.layout.template = pack.template;
      Plotly.newPlot(document.getElementById("fig" + i), fig.data, fig.layout, config);
    });
  }).catch(function (err) { say("The charts could not be drawn: " + err); });
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
.status.ok { background: #e6f4ea; border-color: #b7dfc1; }
.status.partial { background: #fff4e5; border-color: #f0b46a; color: #8a4b00; font-weight: 600; }
.status.failed, .status.cancelled { background: #fdecea; border-color: #f5c2bd; color: #b3261e;
  font-weight: 600; }
ul.failures { color: #b3261e; margin: 6px 0 10px; padding-left: 22px; }
ul.checks { margin: 6px 0 10px; padding-left: 22px; list-style: none; }
ul.checks li { text-indent: -16px; }
.checks .warn, td.check.warn { color: #8a4b00; }
.checks .fail, td.check.fail { color: #b3261e; font-weight: 600; }
td.check { white-space: nowrap; } td.check.unmeasurable { color: var(--muted); }
details > summary { cursor: pointer; color: var(--muted); margin: 4px 0; }
pre.log { background: var(--soft); border: 1px solid var(--line); padding: 8px 12px;
  max-height: 420px; overflow: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; font-size: 13px; max-width: 120px; }
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
.answer { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 0; }
.answer .lane { white-space: normal; overflow-wrap: anywhere; }
pre.text { white-space: pre-wrap; word-break: break-word; margin: 6px 0; font: 13px/1.45
  ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono CJK KR", monospace; }
.flag { color: #8a4b00; font-size: 13px; margin: 2px 0; }
.error { color: #b3261e; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
@media print { .chart { page-break-inside: avoid; } main { padding: 0; } }
"""


@functools.lru_cache(maxsize=1)
def _plotly_js() -> tuple[str, str]:
    """Plotly's bundle packed (lib/report/packing.pack) and the CSP hash of the script it
    unpacks to; computed once per process (about half a second)."""
    js = get_plotlyjs()
    return sections.packed_block("plotly-js", js.encode("utf-8")), _csp_hash(js)


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


# --- the document -----------------------------------------------------------------------


def html_report(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> str:
    """The run as one self-contained HTML page (str); `concurrency` is the level the
    headline table shows (default: the highest every lane measured). Raises
    results.RunNotFound, or report_facts.ConcurrencyError for a level the run lacks."""
    return render_html(load_view(db, run_id), concurrency)


def render_html(view: RunView, concurrency: int | None = None) -> str:
    """The report page for a loaded run."""
    plotly_js, plotly_hash = _plotly_js()
    c = resolve_concurrency(view.doc, concurrency)
    # The capacity charts are packed after the run's own; their section places the cells.
    figures, extra = sections.figures(view), capacity_section.capacity_figures(view)
    matrix = matrix_section.matrix_figures(view)  # packed after the capacity charts
    body = "".join(
        [
            sections.header(view),
            sections.failures_section(view),
            verdict_section.verdict_section(view),
            matrix_section.matrix_section(view, len(figures) + len(extra), len(matrix)),
            sections.headline(view, c),
            sections.summary_section(view),
            capacity_section.capacity_section(view, len(figures), len(extra)),
            sections.checks_section(view),
            sections.charts_section(figures, [*extra, *matrix]),
            sections.quality_section(view),
            sections.lanes_section(view),
            sections.settings_section(view),
            sections.answers_section(view),
        ]
    )
    footer = (
        f"<footer>servescope report · run {html.escape(view.doc['run_id'])} · "
        f"generated from the run's store; per-request rows: "
        f"<code>python -m lib.cli export {html.escape(view.doc['run_id'])} --csv FILE</code>"
        + _card_hint(view.doc, c)
        + "</footer>"
    )
    csp = _csp([plotly_hash, _csp_hash(_RUNNER_JS)])
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(run_title(view.doc))} · servescope</title>"
        f"<style>{_CSS}{verdict_section.CSS}</style></head>"
        f"<body><main>{body}{footer}</main>{plotly_js}<script>{_RUNNER_JS}</script>"
        "</body></html>\n"
    )


def _card_hint(doc: Mapping[str, Any], c: int | None) -> str:
    """The footer's command for the card at the headline level. `--concurrency` takes a
    level's key, which for a rate run only numbers it: say which load that number is."""
    if not c:
        return ""
    command = f"<code>report --png FILE --concurrency {c}</code>"
    if not rate_run(doc):
        return f" · card: {command}"
    load = html.escape(level_phrase(doc, c).removeprefix("at "))
    return f" · card for {load}: {command} (a rate run's levels go by number as they ran)"


def html_bytes(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> bytes:
    """The report as UTF-8 bytes, for `st.download_button(data=...)`."""
    return html_report(db, run_id, concurrency).encode("utf-8")


def write_html(
    db: str | os.PathLike[str] | None,
    run_id: str,
    path: str | os.PathLike[str],
    concurrency: int | None = None,
) -> Path:
    """Write the report to `path`; returns the path."""
    out = Path(path)
    out.write_bytes(html_bytes(db, run_id, concurrency))
    return out


def png_bytes(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> bytes:
    """The 1600×900 retro card as PNG bytes (see lib/report/card.py)."""
    from lib.report import (
        card as report_card,  # the card pulls in the browser renderer; only when asked
    )

    return report_card.png_bytes(db, run_id, concurrency)
