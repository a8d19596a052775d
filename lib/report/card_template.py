"""The card's page template: its fixed size, how many lanes fit, its CSS, and the HTML
skeleton around a body.

Fixed pixel sizes and no JavaScript: a Content-Security-Policy allows none, and the
page is screenshotted as is (lib/report/card.py). Untrusted text goes through `esc`.
"""

from __future__ import annotations

import html
from typing import Any

WIDTH, HEIGHT = 1600, 900
MAX_LANES = 4  # more do not fit readably; the card says how many were left out


def esc(value: Any) -> str:
    """Text escaped for HTML (quotes too, for attributes); None as empty."""
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
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
.troubled .lanes { height: 380px; margin-top: 12px; } .troubled .bottom { height: 250px; }
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
.checks { position: absolute; left: 44px; right: 44px; bottom: 36px; display: flex;
  font-size: 17px; line-height: 22px; font-weight: 600; white-space: nowrap; overflow: hidden; }
.checks > span { flex: 0 0 auto; } .checks .more { font-weight: 400; padding-left: 4px; }
.checks .first { flex: 0 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
.checks.ok { color: #1a7f37; } .checks.warn { color: #8a4b00; } .checks.bad { color: #b3261e; }
.vd { font-size: 17px; font-weight: 600; line-height: 1.3; margin-top: 8px; padding-left: 8px;
  border-left: 4px solid var(--c); display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; }
.n3 .vd, .n4 .vd { font-size: 15px; }
.lv.many ~ .vd, .troubled .vd { -webkit-line-clamp: 1; } /* little room: its first words */
.lane > .vd { flex-shrink: 1; min-height: 0; } /* the first to give way in a full box */
.foot { position: absolute; left: 44px; right: 44px; bottom: 12px; font-size: 14px; color: #6e7781;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def page(body: str, classes: str) -> str:
    """The whole card page around `body`, with `classes` on its <body>."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<style>{CSS}</style></head><body class="{classes}">{body}</body></html>'
    )
