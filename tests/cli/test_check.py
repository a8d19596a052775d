"""`python -m lib.cli check`, the CI regression gate, over real runs of the CLI.

Runs are made once for the module by `python -m lib.cli run` against scripted vLLM
servers whose timings differ fourfold (fast: 20 ms to the first token, 5 ms between
chunks; slow: 80 ms and 20 ms), so the verdicts never hinge on timing noise. A server
answering 503 gives a candidate whose level failed.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib import cli
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
FAST = {"ttft_ms": 20, "gap_ms": 5}
SLOW = {"ttft_ms": 80, "gap_ms": 20}


@dataclass(frozen=True)
class Runs:
    db: str
    fast: str  # c=1,2, label "main"
    slow: str  # c=1,2, label "pr-slow"
    broken: str  # c=1 only, every request answered 503
    other_level: str  # c=3 only: nothing in common with the others


def _run(db: Path, server: OpenAIServer, label: str, concurrency: str) -> str:
    """One `run` of the CLI; returns its run id (first line: "run ID (status)")."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        cli.main(
            ["run", "--engine", "openai", "--base-url", server.base_url, "--model", "m",
             "--prompt", "Say something short.", "--concurrency", concurrency,
             "--requests", "4", "--warmup", "0", "--max-tokens", "8", "--label", label,
             "--db", str(db), "--quiet"]
        )  # fmt: skip
    first = out.getvalue().splitlines()[0]
    assert first.startswith("run "), out.getvalue()
    return first.split()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    db = tmp_path_factory.mktemp("check") / "store.db"
    with (
        OpenAIServer(OpenAIScript(models=["m"], **FAST)) as fast,
        OpenAIServer(OpenAIScript(models=["m"], **SLOW)) as slow,
        OpenAIServer(OpenAIScript(models=["m"], fault="http503", **FAST)) as broken,
    ):
        yield Runs(
            db=str(db),
            fast=_run(db, fast, "main", "1,2"),
            slow=_run(db, slow, "pr-slow", "1,2"),
            broken=_run(db, broken, "pr-broken", "1"),
            other_level=_run(db, fast, "c3", "3"),
        )


def check(capsys: pytest.CaptureFixture[str], runs: Runs, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check", *argv, "--db", runs.db])
    out, err = capsys.readouterr()
    return code, out, err


def rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(("| ✅", "| ❌"))]


def test_slower_candidate_fails_the_gate(capsys, runs):
    code, out, err = check(capsys, runs, runs.slow, "--baseline", runs.fast)
    assert code == 1, err
    assert err == ""
    lines = out.splitlines()
    assert (
        lines[0]
        == f"### servescope check: `{runs.slow}` (pr-slow) vs baseline `{runs.fast}` (main)"
    )
    assert lines[2].startswith("**❌ Regression** in 2 of 2 levels: `vllm:m` c=1: TTFT p50 +")
    assert "| | Lane | Level | TTFT p50 (ms), limit +10% | TPOT p50 (ms), limit +10% |" in out
    table = rows(out)
    assert [row.split(" | ")[1:3] for row in table] == [["`vllm:m`", "c=1"], ["`vllm:m`", "c=2"]]
    assert all(row.startswith("| ❌ |") for row in table)
    assert "Only in the" not in out  # same lanes and levels in both


def test_faster_candidate_passes(capsys, runs):
    code, out, err = check(capsys, runs, runs.fast, "--baseline", runs.slow)
    assert code == 0, err
    assert "**✅ No regression**: 2 levels compared, all within limits." in out
    table = rows(out)
    assert len(table) == 2 and all(row.startswith("| ✅ |") for row in table)


def test_a_run_against_itself_passes(capsys, runs):
    code, out, _ = check(capsys, runs, runs.slow, "--baseline", runs.slow)
    assert code == 0
    assert all("(+0.0%)" in row for row in rows(out))


@pytest.mark.parametrize("form", ["{}%", "{}"])
def test_limits_loose_enough_let_a_slower_run_pass(capsys, runs, form):
    # Fourfold slower: +300% latency, -75% throughput; limits above both pass it.
    code, out, err = check(
        capsys, runs, runs.slow, "--baseline", runs.fast,
        "--max-ttft-regression", form.format(100000), "--max-tpot-regression", form.format(100000),
        "--max-throughput-regression", form.format(100),
    )  # fmt: skip
    assert code == 0, (out, err)
    assert "TTFT p50 (ms), limit +100000%" in out and "Output (tok/s), limit -100%" in out


def test_e2e_gated_only_when_asked(capsys, runs):
    loose = ["--max-ttft-regression", "100000", "--max-tpot-regression", "100000",
             "--max-throughput-regression", "100"]  # fmt: skip
    code, out, _ = check(capsys, runs, runs.slow, "--baseline", runs.fast, *loose)
    assert code == 0 and "E2E p50 (ms), not gated" in out
    code, out, _ = check(
        capsys, runs, runs.slow, "--baseline", runs.fast, *loose, "--max-e2el-regression", "50%"
    )
    assert code == 1
    assert "E2E p50 (ms), limit +50%" in out and ": E2E p50 +" in out


def test_failed_candidate_level_is_a_regression(capsys, runs):
    code, out, _ = check(capsys, runs, runs.broken, "--baseline", runs.fast)
    assert code == 1
    (row,) = rows(out)
    assert row.startswith("| ❌ | `vllm:m` | c=1 (failed) |")
    lines = out.splitlines()
    failed_line = next(line for line in lines if "failed in the candidate" in line)
    assert failed_line.startswith(
        "- ❌ `vllm:m` c=1 failed in the candidate, completed in the baseline"
    )
    assert "503" in failed_line
    assert "- Only in the baseline, not compared: `vllm:m` c=2" in lines
    assert "- The candidate run's status is failed." in lines


# --- bad input: one line on stderr, exit 2, nothing on stdout -------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["nope", "--baseline", "{fast}"], "candidate run 'nope' is not in the store"),
        (["{slow}", "--baseline", "nope"], "baseline run 'nope' is not in the store"),
        (["{slow}", "--baseline", "{fast}", "--max-ttft-regression=-5%"], "not a percentage"),
        (["{slow}", "--baseline", "{fast}", "--max-tpot-regression", "abc"], "'abc'"),
        (
            ["{slow}", "--baseline", "{fast}", "--max-ttft-regression", "-5%"],
            "expected one argument",
        ),
        (["{slow}"], "--baseline"),
        (["{other_level}", "--baseline", "{fast}"], "no lane and level in common"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, runs, argv, fragment):
    names = {"fast": runs.fast, "slow": runs.slow, "other_level": runs.other_level}
    code, out, err = check(capsys, runs, *(a.format(**names) for a in argv))
    assert code == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("servescope: error: ") and fragment in line


def test_help_names_every_limit_and_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--max-ttft-regression", "--max-tpot-regression", "--max-e2el-regression",
                 "--max-throughput-regression", "--baseline", "--db"):  # fmt: skip
        assert flag in text
    assert "(default 10%)" in text and "default: not checked" in text


def test_module_entry_point_exit_codes(runs):
    def gate(candidate: str, baseline: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lib.cli", "check", candidate, "--baseline", baseline,
             "--db", runs.db],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip

    regressed = gate(runs.slow, runs.fast)
    assert regressed.returncode == 1, regressed.stderr
    assert "| ❌ | `vllm:m` | c=1 |" in regressed.stdout
    assert gate(runs.fast, runs.slow).returncode == 0
    unknown = gate("nope", runs.fast)
    assert unknown.returncode == 2 and unknown.stdout == ""
