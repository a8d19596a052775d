"""The card's mini chart: output throughput vs load per lane, as inline SVG (the card
runs no JavaScript, so no Plotly).

Closed loop: x is the level's concurrency. Open loop: a level's key only numbers it, so
x is its requested rate (lib/charts/load_axis places "all at once" past the highest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from lib.charts.load_axis import ALL_AT_ONCE, load_scale
from lib.core.load_pattern import RATE
from lib.report.card_template import MAX_LANES, esc
from lib.report.facts import RunView, fmt

CONCURRENCY_TITLE = "concurrency (requests in flight)"
RATE_TITLE = "request rate (req/s)"


def _x_axis(
    view: RunView,
) -> tuple[Callable[[Mapping[str, Any]], float | None], dict[float, str], bool | None, str]:
    """Where a level sits on x, each position's tick text, whether the axis is log (None:
    the closed-loop rule below) and its title."""
    levels = [lv for lane in view.doc["lanes"][:MAX_LANES] for lv in lane["levels"]]
    if not any(lv.get("load_mode") == RATE for lv in levels):
        return (lambda lv: lv["concurrency"]), {}, None, CONCURRENCY_TITLE
    scale = load_scale(lv.get("load") for lv in levels)

    def at(lv: Mapping[str, Any]) -> float | None:
        return scale.x(lv.get("load"))

    ticks = {
        pos: ALL_AT_ONCE if load is None else f"{load:g}" for load, pos in scale.positions.items()
    }
    return at, ticks, scale.log, RATE_TITLE


def throughput_svg(
    view: RunView, concurrency: int | None, width: int = 690, height: int = 270
) -> str:
    """Output throughput vs load per lane as inline SVG (the card runs no JS); a picked
    level (`concurrency`, its key) is marked by its load label."""
    at, ticks, log_axis, title = _x_axis(view)
    series, failed, picked = [], [], {}
    for lane in view.doc["lanes"][:MAX_LANES]:
        pts = [
            (at(lv), lv["output_throughput"])
            for lv in lane["levels"]
            if lv.get("output_throughput") is not None and lv.get("completed")
        ]
        series.append((view.colors[lane["name"]], sorted(pts)))
        # A level with no throughput because its requests failed is a red cross on the
        # axis, not a silent gap in the line.
        failed += [
            (view.colors[lane["name"]], at(lv))
            for lv in lane["levels"]
            if not lv.get("completed") and (lv.get("failed") or 0)
        ]
        for lv in lane["levels"]:
            if lv["concurrency"] == concurrency:
                picked.setdefault(at(lv), lv.get("load_label") or f"c={concurrency}")
    xs = sorted({x for _, pts in series for x, _ in pts} | {x for _, x in failed})
    if not xs:
        return f'<svg width="{width}" height="{height}"><text x="20" y="40">no data</text></svg>'
    top = max((y for _, pts in series for _, y in pts), default=0.0) or 1.0
    step = _nice_step(top / 4)
    ymax = step * math.ceil(top / step)
    digits = max(0, -math.floor(math.log10(step)))  # 0.5 steps need one digit
    left, right, upper, lower = 70, 24, 26, 48
    pad = 36  # px: the first and last points sit inside the plot, not on its edges
    log = log_axis
    if log is None:  # closed loop, as charts.throughput_vs_concurrency
        log = len(xs) > 2 and xs[-1] / max(xs[0], 1) >= 8

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
            f'<text x="{left - 8}" y="{y + 5:.1f}" text-anchor="end">{esc(fmt(i * step, digits))}'
            "</text>"
        )
    for x in xs:
        text = esc(ticks.get(x, str(x)))
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 26}" text-anchor="middle">{text}</text>')
    # The picked level at each load it ran at (a capacity search's differ per lane),
    # named once: "card: c=4", "card: 8 req/s".
    marks = [x for x in picked if x in xs]
    for x in marks:
        cx = sx(x)
        parts.append(
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{upper}" y2="{height - lower}" '
            'stroke="#8c959f" stroke-dasharray="5 4"/>'
        )
    if marks:
        name = picked[marks[0]] if len(marks) == 1 else f"level {concurrency}"
        parts.append(
            f'<text x="{sx(marks[0]):.1f}" y="{upper - 8}" text-anchor="middle" '
            f'font-weight="700" fill="#1f2328">card: {esc(name)}</text>'
        )
    for color, pts in series:
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{esc(color)}" '
            'stroke-width="4" stroke-linejoin="round"/>'
        )
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{esc(color)}"/>')
    for color, x in failed:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{sy(0) + 7:.1f}" text-anchor="middle" font-size="26" '
            f'font-weight="700" fill="{esc(color)}">✗</text>'
        )
    if failed:
        parts.append(
            f'<text x="{width - right}" y="{upper - 8}" text-anchor="end" fill="#b3261e" '
            'font-weight="700">✗ = level failed</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        f"{esc(title)}</text></svg>"
    )
    return "".join(parts)


def _nice_step(raw: float) -> float:
    """1, 2 or 5 × a power of ten, at least `raw`: round axis ticks."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
