"""What the card says: the title and settings, a box per lane (every level it ran, or the
one level asked for, in big figures), its failed levels and answer checks, one prompt
answered side by side, and one line with the run's checks of its own numbers
(lib/analysis/validation.py) in green, amber or red with its worst problem.

A run that did not complete says so in a red banner with its reason. "best" is never
bare on a lane that failed somewhere or whose answers are unusable
(report_facts.UNUSABLE_FLAGS): see `_best_badge`. Untrusted text (answers, prompts,
lane and model names) is escaped and cut to fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lib.analysis import validation
from lib.core.load_pattern import RATE
from lib.core.slo import Slo
from lib.report.card_chart import throughput_svg
from lib.report.card_template import MAX_LANES, esc, page
from lib.report.facts import (
    RunView,
    answer_pair,
    fmt,
    hardware_summary,
    lane_kpis,
    level_trouble,
    resolve_concurrency,
    run_by,
    run_date,
    run_title,
    scrub_urls,
    truncate,
)
from lib.report.level_tables import level_phrase, rate_run
from lib.report.verdict_section import card_line, card_verdicts

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


def card_html(view: RunView, concurrency: int | None = None) -> str:
    """The card page for a loaded run: every level of each lane (default), or the one
    level asked for (ConcurrencyError for a level the run lacks). Either way each lane
    states its failed levels and unusable answers, and a run that did not complete says
    so at the top with its reason."""
    picked = resolve_concurrency(view.doc, concurrency) if concurrency is not None else None
    kpis = lane_kpis(view, picked)
    for k, sentence, lane in zip(kpis, card_verdicts(view.doc), view.doc["lanes"], strict=True):
        k["verdict"] = sentence  # lane_kpis and the verdict both follow the lanes' order
        _name_levels(k, lane)
    shown, hidden = kpis[:MAX_LANES], len(kpis) - MAX_LANES
    settings = view.doc["settings"]
    ran = sorted({lv["concurrency"] for lane in view.doc["lanes"] for lv in lane["levels"]})
    if picked is not None:
        levels_text = level_phrase(view.doc, picked).removeprefix("at ")
    elif ran and rate_run(view.doc):
        # A rate run's keys only number its levels: its rates, in the order they ran.
        labels = [lv["load_label"] for k in kpis for lv in k["levels"] if lv["load_label"]]
        levels_text = ", ".join(dict.fromkeys(labels))
    elif ran:
        levels_text = "concurrency " + ", ".join(map(str, ran))
    else:
        levels_text = "no level ran"
    when = [
        f"<b>{esc(run_date(view.doc))}</b>" + (f" · {esc(by)}" if (by := run_by(view.doc)) else ""),
        esc(hardware_summary(view.doc.get("environment") or {})),
        esc(
            levels_text + f" · {settings.get('requests')} requests per level · "
            f"max {settings.get('max_tokens')} tokens · temp. {settings.get('temperature')}"
        ),
    ]
    slo = Slo.from_dict(view.doc.get("slo"))
    if slo is not None and not slo.is_empty():  # what each lane's capacity is judged by
        when.append(esc("targets: " + slo.describe()))
    more = f" · {hidden} more lanes in the report" if hidden > 0 else ""
    # A run that did not complete says so at the top, with its reason, in red: a retro
    # screenshot must not read as a clean run. With no lane, its error fills the card.
    state = view.doc["status"]
    troubled = state != "completed"
    status = f' · <span class="bad">{esc(state)}</span>' if troubled else ""
    reason = truncate(scrub_urls(view.doc.get("error") or "no lane was measured"), 300)
    banner = (
        f'<div class="banner">⚠ Run {esc(state)}: {esc(reason)}</div>' if troubled and shown else ""
    )
    problem = f'<div class="problem">The run {esc(state)}: {esc(reason)}</div>'
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
        f"<h1>{esc(truncate(run_title(view.doc), 60))}</h1></div>"
        f'<div class="when">{"".join(f"<div>{w}</div>" for w in when)}</div></div>'
        f"{banner}"
        f'<div class="lanes">{"".join(box(k, shown) for k in shown) or problem}</div>'
        '<div class="bottom"><div class="chart"><h2>Output throughput vs '
        f"{'request rate' if rate_run(view.doc) else 'concurrency'} (tok/s)</h2>"
        f"{throughput_svg(view, picked, height=220 if banner else 270)}</div>"
        f'<div class="pair">{_pair_html(view, picked)}</div></div>'
        f"{_checks_line(view)}"
        f'<div class="foot">run {esc(view.doc["run_id"])}{esc(more)}'
        f"{esc(legend if shown else '')} · "
        "TTFT = time to first token · tokens/s = one request's output tokens ÷ its E2E "
        "latency · output throughput = all output tokens of the level ÷ its duration · "
        "warm-ups left out</div>"
    )
    classes = f"n{len(shown)}" + (" troubled" if banner else "")
    return page(body, classes)


CHECK_LINE_CHARS = 150  # the worst problem, shortened; the report lists them all


def _checks_line(view: RunView) -> str:
    """One line: "numbers checked: 6 of 6 passed" in green, or in amber/red with the
    worst problem (a failed check before a warning) and how many more the report has."""
    verdict = view.doc.get("validation") or {}
    if not verdict.get("checks"):
        return ""  # no level ran: the red banner or problem box says why
    line = validation.verdict_line(verdict)
    problems = verdict.get("problems") or []
    if not problems:
        return f'<div class="checks ok">✓ {esc(line)}</div>'
    failed = [p for p in problems if p["status"] == validation.FAIL]
    worst = (failed or problems)[0]
    mark = "✗" if failed else "⚠"
    level = validation.problem_level(worst, view.doc["lanes"])  # "c=4", "2 req/s"
    first = f"{mark} {truncate(worst['lane'], 40)} {level} {worst['check']}: {worst['detail']}"
    more = f" (+{len(problems) - 1} more in the report)" if len(problems) > 1 else ""
    # Three parts: only the problem is cut to fit, never the count or "+N more".
    return (
        f'<div class="checks {"bad" if failed else "warn"}"><span>{esc(line)} ·&nbsp;</span>'
        f'<span class="first">{esc(truncate(first, CHECK_LINE_CHARS))}</span>'
        f'<span class="more">{esc(more)}</span></div>'
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
    return f'<span class="best warn">best, but ⚑ {esc(caveats[0])}{esc(more)}</span>'


def _lane_head(k: Mapping[str, Any]) -> str:
    engine = ENGINE_NAMES.get(k["engine"], k["engine"] or "engine")
    version = f" {k['version']}" if k["version"] else ""
    quant = " · ".join(
        str(x) for x in (k["quantization"] or "quantization unknown", k["parameter_size"]) if x
    )
    return (
        f'<div class="engine">{esc(engine + version)}</div>'
        f'<div class="model">{esc(k["model"])}</div><div class="quant">{esc(quant)}</div>'
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
            f'<div><div class="v">{esc(shown)}<small>{esc(unit)}</small>{badge}</div>'
            f'<div class="k">{esc(label)}</div>{below}</div>'
        )

    value, unit, mem_label = _memory_text(k)
    kpis = (
        kpi("ttft_p50_ms", 0 if (k["ttft_p50_ms"] or 0) >= 10 else 1, "ms", "TTFT p50", False)
        + kpi("tok_per_s_p50", 1, "tok/s", "tokens/s p50", True)
        + kpi("out_tok_per_s", 0, "tok/s", "output throughput", True)
        + (
            f'<div><div class="v">{esc(value)}<small>{esc(unit)}</small></div>'
            f'<div class="k">{esc(mem_label)}</div></div>'
        )
    )
    return (
        f'<div class="lane" style="--c:{esc(k["color"])}">{_lane_head(k)}'
        f'<div class="kpis">{kpis}</div>{card_line(k.get("verdict"))}{_troubles_line(k)}'
        f"{_quality_line(k)}</div>"
    )


def _lane_table(k: Mapping[str, Any], lanes: Sequence[Mapping[str, Any]]) -> str:
    """A lane over every level it ran: a row per level (a failed level reads as its
    reason, in red), the highest output throughput of each level starred."""
    # Levels compare across lanes by their load: a closed-loop key is its concurrency, a
    # rate level's key only numbers it (a capacity search's differ per lane).
    winners: dict[Any, str | None] = {}
    for c in {_load_key(lv) for lane in lanes for lv in lane["levels"]}:
        values = [
            (lv["out_tok_per_s"], lane["name"])
            for lane in lanes
            for lv in lane["levels"]
            if _load_key(lv) == c
        ]
        winners[c] = _winner(values, higher=True)
    rows = []
    for lv in k["levels"]:
        c = _level_cell(lv)
        if lv["status"] == "failed" or not lv["completed"]:
            why = level_trouble(lv) or f"{_trouble_prefix(lv)}no answer"
            rows.append(
                f'<tr><td>{esc(c)}</td><td class="x" colspan="3">✗ '
                f"{esc(why.split(': ', 1)[-1])}</td></tr>"
            )
            continue
        star = ""
        if winners.get(_load_key(lv)) == k["name"]:
            # ★ for a clean lane; a flagged lane on top gets ⚑, its reasons in the box.
            cls, sym = ("star warn", "⚑") if k["caveats"] else ("star", "★")
            star = f'<span class="{cls}">{sym}</span>'
        ttft = lv["ttft_p50_ms"]
        digits = 0 if (ttft or 0) >= 10 else 1
        failed = lv["failed"] or 0
        mark = f' <span class="bad">✗{failed}</span>' if failed else ""
        rows.append(
            f"<tr><td>{esc(c)}{mark}</td><td>{esc(fmt(ttft, digits))}</td>"
            f"<td>{esc(fmt(lv['tok_per_s_p50'], 1))}</td>"
            f"<td>{esc(fmt(lv['out_tok_per_s'], 0))}{star}</td></tr>"
        )
    many = " many" if len(rows) > 5 else ""
    first = "load" if any(lv.get("rated") for lv in k["levels"]) else "c"
    table = (
        f'<table class="lv{many}"><tr><th>{first}</th><th>TTFT p50 ms</th><th>tokens/s p50</th>'
        f"<th>output tok/s</th></tr>{''.join(rows)}</table>"
    )
    value, unit, mem_label = _memory_text(k)
    mem = f'<div class="mem">{esc(mem_label)}: {esc(value)} {esc(unit)}</div>'
    partial = [t for t in k["troubles"] if not _failed_row(t, k)]
    return (
        f'<div class="lane" style="--c:{esc(k["color"])}">{_lane_head(k)}{table}{mem}'
        f"{card_line(k.get('verdict'))}{_troubles_line(k, partial)}{_quality_line(k)}</div>"
    )


def _failed_row(trouble: str, k: Mapping[str, Any]) -> bool:
    """Whether a trouble line is already a red row of the lane's table."""
    for lv in k["levels"]:
        if (lv["status"] == "failed" or not lv["completed"]) and trouble.startswith(
            _trouble_prefix(lv)
        ):
            return True
    return False


def _name_levels(k: dict[str, Any], lane: Mapping[str, Any]) -> None:
    """Give each of the lane's level rows its load ("2 req/s"; None closed loop): its
    first cell, and its trouble line's name (facts.level_trouble reads `load_label`)."""
    for row, level in zip(k["levels"], lane.get("levels") or [], strict=True):
        rated = level.get("load_mode") == RATE
        row["rated"] = rated
        row["load_label"] = level.get("load_label") if rated else None


def _level_cell(lv: Mapping[str, Any]) -> str:
    """A level row's first cell: its concurrency, or a rate level's load ("2 req/s")."""
    return str((lv.get("load_label") if lv.get("rated") else None) or lv["concurrency"])


def _trouble_prefix(lv: Mapping[str, Any]) -> str:
    """How the lane's trouble lines start for this level (after _name_levels)."""
    if lv.get("rated") and lv.get("load_label"):
        return f"{lv['load_label']}: "
    return f"c={lv['concurrency']}: "


def _load_key(lv: Mapping[str, Any]) -> Any:
    return ("rate", lv.get("load_label")) if lv.get("rated") else lv["concurrency"]


def _troubles_line(k: Mapping[str, Any], troubles: Sequence[str] | None = None) -> str:
    troubles = k["troubles"] if troubles is None else troubles
    if not troubles:
        return ""
    return f'<div class="t">✗ {esc(" · ".join(troubles))}</div>'


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
    return f'<div class="q{warn}">⚑ {esc(" · ".join(bits))}</div>'


def _pair_html(view: RunView, concurrency: int | None) -> str:
    pair = answer_pair(view.doc, concurrency)
    if pair is None:
        return "<h2>Answers</h2><p>No answers recorded.</p>"
    out = [
        "<h2>One prompt, answered side by side</h2>",
        f'<div class="prompt">{esc(truncate(" ".join(pair["prompt"].split()), 140))}</div>',
    ]
    for a in pair["answers"][:MAX_LANES]:
        color = view.colors.get(a["lane"], "#555555")
        if a["error"]:
            text = f"failed: {scrub_urls(a['error'])}"
        else:
            text = " ".join(a["text"].split()) or "(empty answer)"
        flags = ", ".join(c.replace("_", " ") for c in a["flags"])
        flag_html = f' <span class="fl">⚑ {esc(flags)}</span>' if flags else ""
        out.append(
            f'<div class="ans" style="--c:{esc(color)}"><b>{esc(truncate(a["lane"], 48))}:</b> '
            f"{esc(truncate(text, 230))}{flag_html}</div>"
        )
    return "".join(out)
