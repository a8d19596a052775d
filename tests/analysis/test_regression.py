"""The regression gate's comparison (lib/analysis/regression.py) on hand-built documents.

The documents have run_document's shape, reduced to what the gate reads; the CLI over
real runs against scripted servers is in tests/cli/test_check.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from lib.analysis import regression
from lib.analysis.regression import Limits, NothingInCommon, compare, markdown, parse_percent

CLEAN = {"checks": 4, "made": 4, "passed": 4, "problems": []}


def level(
    c: int,
    ttft: float | None = 100.0,
    tpot: float | None = 20.0,
    e2el: float | None = 500.0,
    tput: float | None = 200.0,
    status: str = "completed",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "concurrency": c,
        "status": status,
        "error": extra.pop("error", None),
        "ttft_ms": {"p50": ttft},
        "tpot_ms": {"p50": tpot},
        "e2el_ms": {"p50": e2el},
        "output_throughput": tput,
        **extra,
    }


def doc(run_id: str, lanes: dict[str, list[dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "label": extra.pop("label", ""),
        "status": extra.pop("status", "completed"),
        "validation": extra.pop("validation", CLEAN),
        "lanes": [{"name": name, "levels": levels} for name, levels in lanes.items()],
        **extra,
    }


def pair(base_level: dict[str, Any], cand_level: dict[str, Any], **kw: Any):
    return compare(
        doc("base", {"vllm:m": [base_level]}), doc("cand", {"vllm:m": [cand_level]}), **kw
    )


def table_rows(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.startswith("| ✅") or line.startswith("| ❌")
    ]


# --- percentages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("10%", 10.0), ("10", 10.0), (" 2.5 % ", 2.5), ("0", 0.0), ("250%", 250.0)]
)
def test_percent_with_or_without_the_sign(text, value):
    assert parse_percent(text) == value


@pytest.mark.parametrize("text", ["-5%", "-5", "abc", "", "%", "10%%", "nan", "inf", "1e999"])
def test_not_a_percentage(text):
    with pytest.raises(ValueError, match="not a percentage"):
        parse_percent(text)


# --- verdicts -------------------------------------------------------------------------


def test_within_limits_passes_with_a_table_row_per_level():
    base = doc("base", {"vllm:m": [level(1), level(4)]}, label="main")
    cand = doc(
        "cand", {"vllm:m": [level(1, ttft=109.0, tpot=21.0), level(4, tput=185.0)]}, label="pr-7"
    )
    result = compare(base, cand)
    assert not result.regressed
    text = markdown(result)
    assert text.startswith("### servescope check: `cand` (pr-7) vs baseline `base` (main)\n")
    assert "**✅ No regression**: 2 levels compared, all within limits." in text
    assert "| | Lane | Level | TTFT p50 (ms), limit +10% |" in text
    assert "E2E p50 (ms), not gated" in text and "Output (tok/s), limit -10%" in text
    rows = table_rows(text)
    assert len(rows) == 2
    assert rows[0] == (
        "| ✅ | `vllm:m` | c=1 | 100.0 → 109.0 (+9.0%) | 20.0 → 21.0 (+5.0%) "
        "| 500.0 → 500.0 (+0.0%) | 200.0 → 200.0 (+0.0%) |"
    )
    assert "(-7.5%)" in rows[1]
    assert "⚠️" not in text  # both runs' own checks passed


def test_latency_rise_beyond_the_limit_is_a_regression():
    result = pair(level(1), level(1, ttft=125.0))
    assert result.regressed
    text = markdown(result)
    (row,) = table_rows(text)
    assert row.startswith("| ❌ |")
    assert "**100.0 → 125.0 (+25.0%)**" in row  # the figure that broke its limit
    assert "**❌ Regression** in 1 of 1 level: `vllm:m` c=1: TTFT p50 +25.0%." in text


def test_exactly_at_the_limit_is_not_a_regression():
    assert not pair(level(1), level(1, ttft=110.0, tpot=22.0, tput=180.0)).regressed


@pytest.mark.parametrize(
    "cand",
    [
        level(1, ttft=50.0, tpot=10.0, e2el=250.0),  # faster
        level(1, tput=400.0),  # more throughput
    ],
)
def test_improvements_never_regress(cand):
    assert not pair(level(1), cand).regressed


def test_throughput_drop_beyond_the_limit_is_a_regression():
    result = pair(level(1), level(1, tput=150.0))
    assert result.regressed
    assert "`vllm:m` c=1: output throughput -25.0%." in markdown(result)


def test_tpot_gated_by_its_own_limit():
    assert pair(level(1), level(1, tpot=30.0)).regressed
    assert not pair(level(1), level(1, tpot=30.0), limits=Limits(tpot=60.0)).regressed
    assert not pair(level(1), level(1, tpot=30.0), limits=Limits(tpot=None)).regressed


def test_e2e_unchecked_unless_given():
    slower = level(1, e2el=900.0)
    assert not pair(level(1), slower).regressed
    result = pair(level(1), slower, limits=Limits(e2el=10.0))
    assert result.regressed
    assert "E2E p50 (ms), limit +10%" in markdown(result)


def test_missing_or_zero_baseline_figures_are_shown_not_judged():
    # TPOT is None when every answer was one token; a zero baseline gives no ratio.
    result = pair(level(1, tpot=None, tput=0.0), level(1, tpot=30.0, tput=0.0))
    assert not result.regressed
    (row,) = table_rows(markdown(result))
    assert "– → 30.0 |" in row and "0.00 → 0.00 |" in row


# --- failed levels --------------------------------------------------------------------


def test_a_level_failing_where_the_baseline_completed_is_a_regression():
    failed = level(
        4, ttft=None, tpot=None, e2el=None, tput=None, status="failed", error="4 of 4 failed: 503"
    )
    result = compare(
        doc("base", {"vllm:m": [level(1), level(4)]}), doc("cand", {"vllm:m": [level(1), failed]})
    )
    assert result.regressed
    text = markdown(result)
    rows = table_rows(text)
    assert rows[0].startswith("| ✅ |") and rows[1].startswith("| ❌ | `vllm:m` | c=4 (failed) |")
    assert "`vllm:m` c=4: level failed." in text
    assert (
        "- ❌ `vllm:m` c=4 failed in the candidate, completed in the baseline: 4 of 4 failed: 503"
        in text
    )


def test_partial_candidate_level_counts_as_failed():
    result = pair(level(1), level(1, status="completed with failures"))
    assert result.regressed and result.rows[0].level_failed


def test_a_level_both_runs_failed_is_judged_on_its_numbers_only():
    both = pair(level(1, status="failed"), level(1, status="failed"))
    assert not both.regressed and not both.rows[0].level_failed


# --- pairing --------------------------------------------------------------------------


def test_lanes_and_levels_in_one_run_only_are_listed():
    base = doc("base", {"vllm:m": [level(1), level(8)], "ollama:m": [level(1)]})
    cand = doc("cand", {"vllm:m": [level(1), level(2)], "llamacpp:m": [level(1)]})
    result = compare(base, cand)
    assert [(r.lane, r.concurrency) for r in result.rows] == [("vllm:m", 1)]
    text = markdown(result)
    for line in (
        "- Only in the baseline, not compared: `vllm:m` c=8",
        "- Only in the baseline, not compared: `ollama:m` c=1",
        "- Only in the candidate, not compared: `vllm:m` c=2",
        "- Only in the candidate, not compared: `llamacpp:m` c=1",
    ):
        assert line in text.splitlines()


def test_single_lanes_with_different_names_are_compared_and_said_so():
    base = doc("base", {"vllm:m @http://a:8000/v1": [level(1)]})
    cand = doc("cand", {"vllm:m @http://b:8000/v1": [level(1, ttft=150.0)]})
    result = compare(base, cand)
    assert result.regressed and len(result.rows) == 1
    assert result.lane_note is not None
    assert (
        "- Lane names differ; the only lane of each run was compared: "
        "`vllm:m @http://a:8000/v1` (baseline) with `vllm:m @http://b:8000/v1` (candidate)."
    ) in markdown(result)


def test_lanes_by_name_never_by_position_when_there_are_several():
    base = doc("base", {"a": [level(1)], "b": [level(1)]})
    cand = doc("cand", {"c": [level(1)], "d": [level(1)]})
    with pytest.raises(NothingInCommon, match="no lane and level in common"):
        compare(base, cand)


def test_no_level_in_common():
    with pytest.raises(NothingInCommon):
        compare(doc("base", {"x": [level(1)]}), doc("cand", {"x": [level(2)]}))


def test_load_label_shown_when_a_level_has_one():
    base = doc("base", {"x": [level(3, load_label="2 req/s")]})
    cand = doc("cand", {"x": [level(3, load_label="2 req/s", ttft=200.0)]})
    text = markdown(compare(base, cand))
    assert "| ❌ | `x` | 2 req/s |" in text
    assert "`x` 2 req/s: TTFT p50 +100.0%" in text


def test_levels_pair_within_one_load_mode():
    closed = level(2, load_mode="concurrency", load_label="c=2")
    open_loop = level(2, load_mode="rate", load_label="2 req/s")
    with pytest.raises(NothingInCommon):
        compare(doc("base", {"x": [closed]}), doc("cand", {"x": [open_loop]}))
    # Documents from before load modes pair with closed-loop levels.
    assert len(compare(doc("base", {"x": [level(2)]}), doc("cand", {"x": [closed]})).rows) == 1


# --- the runs' own checks -------------------------------------------------------------


def test_a_run_whose_own_checks_did_not_pass_is_flagged():
    flagged = {
        "checks": 4,
        "made": 3,
        "passed": 2,
        "problems": [
            {"lane": "x", "concurrency": 1, "check": "streaming", "status": "fail", "detail": "."}
        ],
    }
    base = doc("base", {"x": [level(1)]})
    cand = doc("cand", {"x": [level(1)]}, validation=flagged, status="completed with failures")
    result = compare(base, cand)
    assert not result.regressed  # flagged numbers are reported, not judged
    lines = markdown(result).splitlines()
    assert (
        "- ⚠️ The candidate run's own checks flagged its numbers (numbers checked: 2 of 3 "
        "passed (1 not measurable)): x c=1 streaming (fail); see `python -m lib.cli show cand`."
    ) in lines
    assert "- The candidate run's status is completed with failures." in lines
    assert not any("baseline run's own checks" in line for line in lines)


@pytest.mark.parametrize(
    ("verdict", "flagged"),
    [
        (CLEAN, False),
        (None, False),
        ("pass", False),
        ("warn", True),
        ({"verdict": "fail", "problems": []}, True),
        ({"status": "pass"}, False),
    ],
)
def test_either_shape_of_validation_verdict(verdict, flagged):
    assert regression.validation_flagged(verdict) is flagged


def test_free_text_cannot_break_the_table():
    base = doc("base", {"a|b\nc": [level(1)]}, label="x | y")
    cand = doc("cand", {"a|b\nc": [level(1)]})
    text = markdown(compare(base, cand))
    assert "`base` (x \\| y)" in text
    (row,) = table_rows(text)
    assert row.startswith("| ✅ | `a\\|b c` | c=1 |")
