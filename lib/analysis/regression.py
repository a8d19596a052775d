"""Compare a candidate run with a baseline run: the CI regression gate's logic.

Pure functions over two `results.run_document` documents: `compare` pairs their lanes
(by name, or the only lane of each when both have exactly one) and levels (by the
concurrency key, within one load mode), judges each pair against percentage limits,
and `markdown` writes the summary a pull request shows. `python -m lib.cli check`
(lib/cli/check.py) is the command line over it; nothing here reads the store or prints.

A regression is a p50 latency (TTFT, TPOT, E2E) higher than the baseline's by more than
its limit, an output throughput lower by more than its limit, or a level the baseline
completed that the candidate did not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib.analysis import validation
from lib.core import outcome

PASS_MARK, FAIL_MARK = "✅", "❌"


@dataclass(frozen=True)
class Metric:
    """One headline figure of a level and which way is worse."""

    key: str  # the Limits field that gates it
    title: str  # column heading
    short: str  # in the verdict line
    path: tuple[str, ...]  # where it lives in a level of run_document
    higher_is_worse: bool


METRICS: tuple[Metric, ...] = (
    Metric("ttft", "TTFT p50 (ms)", "TTFT p50", ("ttft_ms", "p50"), True),
    Metric("tpot", "TPOT p50 (ms)", "TPOT p50", ("tpot_ms", "p50"), True),
    Metric("e2el", "E2E p50 (ms)", "E2E p50", ("e2el_ms", "p50"), True),
    Metric("throughput", "Output (tok/s)", "output throughput", ("output_throughput",), False),
)


@dataclass(frozen=True)
class Limits:
    """Largest allowed worsening per metric, in percent; None leaves it unchecked."""

    ttft: float | None = 10.0
    tpot: float | None = 10.0
    e2el: float | None = None  # E2E mixes TTFT and TPOT: gated only when asked for
    throughput: float | None = 10.0


class NothingInCommon(ValueError):
    """The two runs share no (lane, level) to compare."""


def parse_percent(text: str) -> float:
    """ "10%" or "10" -> 10.0; ValueError for anything else, negatives included (a
    negative limit would call an improvement a regression)."""
    body = text.strip().removesuffix("%").strip()
    try:
        value = float(body)
    except ValueError:
        raise ValueError(f"not a percentage: {text!r} (use e.g. 10% or 10)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a percentage: {text!r} (use a number >= 0, e.g. 10%)")
    return value


@dataclass(frozen=True)
class MetricDelta:
    """One metric of one level in both runs."""

    metric: Metric
    baseline: float | None
    candidate: float | None
    limit: float | None

    @property
    def change_pct(self) -> float | None:
        """Candidate relative to baseline, in percent; None when either is missing or
        the baseline is zero (no meaningful ratio)."""
        if self.baseline is None or self.candidate is None or self.baseline <= 0:
            return None
        return (self.candidate - self.baseline) / self.baseline * 100.0

    @property
    def regressed(self) -> bool:
        change = self.change_pct
        if self.limit is None or change is None:
            return False
        worsening = change if self.metric.higher_is_worse else -change
        return worsening > self.limit


@dataclass(frozen=True)
class LevelComparison:
    """One (lane, level) present in both runs."""

    baseline_lane: str
    candidate_lane: str
    concurrency: int
    label: str  # "c=4", or the level's own load_label ("2 req/s")
    baseline_status: str
    candidate_status: str
    candidate_error: str | None
    deltas: tuple[MetricDelta, ...]

    @property
    def level_failed(self) -> bool:
        """The baseline completed this level and the candidate did not."""
        return (
            self.baseline_status == outcome.COMPLETED and self.candidate_status != outcome.COMPLETED
        )

    @property
    def regressed(self) -> bool:
        return self.level_failed or any(d.regressed for d in self.deltas)

    @property
    def lane(self) -> str:
        return self.candidate_lane


@dataclass(frozen=True)
class RunSide:
    """What the summary says about one run besides its numbers."""

    run_id: str
    label: str
    status: str
    validation: Mapping[str, Any] | str | None

    @property
    def flagged(self) -> bool:
        return validation_flagged(self.validation)


@dataclass(frozen=True)
class Comparison:
    baseline: RunSide
    candidate: RunSide
    limits: Limits
    rows: tuple[LevelComparison, ...]
    only_baseline: tuple[str, ...] = ()  # "lane c=8", not compared
    only_candidate: tuple[str, ...] = ()
    lane_note: str | None = None  # said when lanes were paired by position

    @property
    def regressed(self) -> bool:
        return any(row.regressed for row in self.rows)


def validation_flagged(verdict: Mapping[str, Any] | str | None) -> bool:
    """Whether a run's own checks did not pass. `run_verdict` gives a mapping whose
    `problems` lists every check that warned or failed; a plain verdict string (or a
    `verdict`/`status` entry) is read as-is, so either shape is understood."""
    if verdict is None:
        return False
    if isinstance(verdict, str):
        return verdict != validation.PASS
    for key in ("verdict", "status"):
        if isinstance(verdict.get(key), str):
            return verdict[key] != validation.PASS
    return bool(verdict.get("problems"))


# --- pairing --------------------------------------------------------------------------


def _side(document: Mapping[str, Any]) -> RunSide:
    return RunSide(
        run_id=document["run_id"],
        label=document.get("label") or "",
        status=document.get("status") or "",
        validation=document.get("validation"),
    )


def _pair_lanes(
    baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[Mapping[str, Any], Mapping[str, Any]]], str | None]:
    """Lanes by name; when no name matches and each run has one lane, those two (a
    renamed lane or another URL in its name is still the same comparison)."""
    by_name = {lane["name"]: lane for lane in candidate}
    pairs = [(lane, by_name[lane["name"]]) for lane in baseline if lane["name"] in by_name]
    if not pairs and len(baseline) == 1 and len(candidate) == 1:
        b, c = baseline[0], candidate[0]
        note = (
            f"Lane names differ; the only lane of each run was compared: "
            f"`{b['name']}` (baseline) with `{c['name']}` (candidate)."
        )
        return [(b, c)], note
    return pairs, None


def level_label(level: Mapping[str, Any]) -> str:
    """A level as people read it: its load_label when it has one, else c=N."""
    return level.get("load_label") or f"c={level['concurrency']}"


def _value(level: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = level
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def _compare_level(
    b_lane: str, c_lane: str, b: Mapping[str, Any], c: Mapping[str, Any], limits: Limits
) -> LevelComparison:
    deltas = tuple(
        MetricDelta(m, _value(b, m.path), _value(c, m.path), getattr(limits, m.key))
        for m in METRICS
    )
    return LevelComparison(
        baseline_lane=b_lane,
        candidate_lane=c_lane,
        concurrency=c["concurrency"],
        label=level_label(c),
        baseline_status=b.get("status") or "",
        candidate_status=c.get("status") or "",
        candidate_error=c.get("error"),
        deltas=deltas,
    )


LevelKey = tuple[int, str]


def level_key(level: Mapping[str, Any]) -> LevelKey:
    """Levels pair by their concurrency key, within one load mode: a closed-loop c=2 and
    an open-loop level stored under key 2 put different loads on the engine."""
    return level["concurrency"], level.get("load_mode") or "concurrency"


def _unmatched(lanes: Sequence[Mapping[str, Any]], seen: set[tuple[str, LevelKey]]) -> list[str]:
    return [
        f"`{lane['name']}` {level_label(level)}"
        for lane in lanes
        for level in lane.get("levels") or []
        if (lane["name"], level_key(level)) not in seen
    ]


def compare(
    baseline: Mapping[str, Any], candidate: Mapping[str, Any], limits: Limits | None = None
) -> Comparison:
    """Judge every (lane, level) the two runs share; NothingInCommon when none."""
    limits = limits or Limits()
    pairs, lane_note = _pair_lanes(baseline["lanes"], candidate["lanes"])
    rows: list[LevelComparison] = []
    seen_b: set[tuple[str, LevelKey]] = set()
    seen_c: set[tuple[str, LevelKey]] = set()
    for b_lane, c_lane in pairs:
        c_levels = {level_key(lv): lv for lv in c_lane.get("levels") or []}
        for b_level in b_lane.get("levels") or []:
            key = level_key(b_level)
            if key not in c_levels:
                continue
            rows.append(
                _compare_level(b_lane["name"], c_lane["name"], b_level, c_levels[key], limits)
            )
            seen_b.add((b_lane["name"], key))
            seen_c.add((c_lane["name"], key))
    if not rows:
        raise NothingInCommon(
            f"runs {baseline['run_id']} and {candidate['run_id']} have no lane and level "
            "in common to compare"
        )
    return Comparison(
        baseline=_side(baseline),
        candidate=_side(candidate),
        limits=limits,
        rows=tuple(rows),
        only_baseline=tuple(_unmatched(baseline["lanes"], seen_b)),
        only_candidate=tuple(_unmatched(candidate["lanes"], seen_c)),
        lane_note=lane_note,
    )


# --- Markdown -------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _percent(change: float | None) -> str:
    return "n/a" if change is None else f"{change:+.1f}%"


def _cell(delta: MetricDelta) -> str:
    text = f"{_number(delta.baseline)} → {_number(delta.candidate)}"
    if delta.change_pct is not None:
        text += f" ({_percent(delta.change_pct)})"
    return f"**{text}**" if delta.regressed else text  # the figure that broke its limit


def _heading(metric: Metric, limits: Limits) -> str:
    limit = getattr(limits, metric.key)
    if limit is None:
        return f"{metric.title}, not gated"
    sign = "+" if metric.higher_is_worse else "-"
    return f"{metric.title}, limit {sign}{limit:g}%"


def _run_name(side: RunSide) -> str:
    return f"`{side.run_id}`" + (f" ({_escape(side.label)})" if side.label else "")


def _escape(text: str) -> str:
    """Labels and lane names are free text: keep them from breaking a table row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _reasons(row: LevelComparison) -> list[str]:
    reasons = [f"{d.metric.short} {_percent(d.change_pct)}" for d in row.deltas if d.regressed]
    if row.level_failed:
        reasons.insert(0, f"level {row.candidate_status}")
    return reasons


def _verdict(comparison: Comparison) -> str:
    n = len(comparison.rows)
    levels = f"{n} level{'s' if n != 1 else ''}"
    bad = [row for row in comparison.rows if row.regressed]
    if not bad:
        return f"**{PASS_MARK} No regression**: {levels} compared, all within limits."
    listed = [
        f"`{_escape(row.lane)}` {_escape(row.label)}: {', '.join(_reasons(row))}" for row in bad[:5]
    ]
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"**{FAIL_MARK} Regression** in {len(bad)} of {levels}: {'; '.join(listed)}{more}."


def _table(comparison: Comparison) -> list[str]:
    titles = [_heading(m, comparison.limits) for m in METRICS]
    lines = [
        "| | Lane | Level | " + " | ".join(titles) + " |",
        "|---|---|---|" + "---:|" * len(titles),
    ]
    for row in comparison.rows:
        mark = FAIL_MARK if row.regressed else PASS_MARK
        level = _escape(row.label)
        if row.candidate_status != outcome.COMPLETED:
            level += f" ({row.candidate_status})"
        cells = [_cell(d) for d in row.deltas]
        lines.append(f"| {mark} | `{_escape(row.lane)}` | {level} | " + " | ".join(cells) + " |")
    return lines


def _validation_note(role: str, side: RunSide) -> str | None:
    """One line naming the checks that did not pass, short: the details are in
    `python -m lib.cli show RUN_ID`."""
    if not side.flagged:
        return None
    verdict = side.validation
    if not isinstance(verdict, Mapping):
        return f"⚠️ The {role} run's own checks did not pass ({_escape(str(verdict))})."
    problems = [
        f"{_escape(p.get('lane', '?'))} {p.get('load_label') or 'c=' + str(p.get('concurrency'))}"
        f" {p.get('check')} "
        f"({p.get('status')})"
        for p in verdict.get("problems") or []
    ]
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    listed = f": {', '.join(problems[:4])}{more}" if problems else ""
    return (
        f"⚠️ The {role} run's own checks flagged its numbers ({validation.verdict_line(verdict)})"
        f"{listed}; see `python -m lib.cli show {side.run_id}`."
    )


def _notes(comparison: Comparison) -> list[str]:
    notes: list[str] = []
    if comparison.lane_note:
        notes.append(comparison.lane_note)
    for row in comparison.rows:
        if row.level_failed:
            why = f": {_escape(row.candidate_error)}" if row.candidate_error else ""
            notes.append(
                f"{FAIL_MARK} `{_escape(row.lane)}` {_escape(row.label)} {row.candidate_status} "
                f"in the candidate, completed in the baseline{why}"
            )
    for role, items in (
        ("baseline", comparison.only_baseline),
        ("candidate", comparison.only_candidate),
    ):
        for item in items:
            notes.append(f"Only in the {role}, not compared: {item}")
    for role, side in (("baseline", comparison.baseline), ("candidate", comparison.candidate)):
        if side.status and side.status != outcome.COMPLETED:
            notes.append(f"The {role} run's status is {side.status}.")
        if note := _validation_note(role, side):
            notes.append(note)
    return notes


def markdown(comparison: Comparison) -> str:
    """The summary to paste into a pull request."""
    lines = [
        f"### servescope check: {_run_name(comparison.candidate)} "
        f"vs baseline {_run_name(comparison.baseline)}",
        "",
        _verdict(comparison),
        "",
        *_table(comparison),
    ]
    if notes := _notes(comparison):
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
