"""The `check` subcommand: a CI regression gate, registered into lib.cli's parser.

    python -m lib.cli check CANDIDATE_RUN_ID --baseline BASELINE_RUN_ID
        [--max-ttft-regression PCT] [--max-tpot-regression PCT]
        [--max-e2el-regression PCT] [--max-throughput-regression PCT] [--db FILE]

Prints a Markdown summary for a pull request (lib/analysis/regression.py) and exits 0
when every level shared by both runs is within the limits, 1 on a regression, 2 on bad
input (unknown run, a limit that is not a percentage, no lane and level in common).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lib.analysis import regression, results
from lib.cli.db_option import DB_HELP
from lib.core.usage import UsageError

Handler = Callable[[argparse.Namespace], int]

# (flag, Limits field, what it gates)
LIMIT_FLAGS = (
    ("--max-ttft-regression", "ttft", "TTFT p50 rise"),
    ("--max-tpot-regression", "tpot", "TPOT p50 rise"),
    ("--max-e2el-regression", "e2el", "E2E latency p50 rise"),
    ("--max-throughput-regression", "throughput", "output throughput drop"),
)


def _percent(text: str) -> float:
    """argparse type: its ArgumentTypeError becomes lib.cli's one-line error, exit 2."""
    try:
        return regression.parse_percent(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_subcommands(sub: Any) -> dict[str, Handler]:
    """Register `check` on lib.cli's subparsers; returns {name: handler}."""
    check = sub.add_parser(
        "check", help="compare a run with a baseline run; exit 1 on a regression (CI gate)"
    )
    check.add_argument("candidate", metavar="CANDIDATE_RUN_ID", help="the run to judge")
    check.add_argument(
        "--baseline", required=True, metavar="BASELINE_RUN_ID", help="the run to compare with"
    )
    defaults = regression.Limits()
    for flag, key, what in LIMIT_FLAGS:
        default = getattr(defaults, key)
        # argparse %-formats help text: a literal percent sign is written %%.
        shown = f"default {default:g}%%" if default is not None else "default: not checked"
        check.add_argument(
            flag,
            dest=f"limit_{key}",
            type=_percent,
            default=default,
            metavar="PCT",
            help=f"largest allowed {what}, e.g. 10%% or 10 ({shown})",
        )
    check.add_argument("--db", help=DB_HELP)
    return {"check": cmd_check}


def _document(db: str | None, run_id: str, role: str) -> dict[str, Any]:
    try:
        return results.run_document(db, run_id)
    except results.RunNotFound:
        raise UsageError(f"{role} run {run_id!r} is not in the store") from None


def cmd_check(args: argparse.Namespace) -> int:
    """Print the Markdown comparison; 0 within limits, 1 on a regression."""
    limits = regression.Limits(**{key: getattr(args, f"limit_{key}") for _, key, _ in LIMIT_FLAGS})
    baseline = _document(args.db, args.baseline, "baseline")
    candidate = _document(args.db, args.candidate, "candidate")
    try:
        comparison = regression.compare(baseline, candidate, limits)
    except regression.NothingInCommon as exc:
        raise UsageError(str(exc)) from None
    print(regression.markdown(comparison), end="")
    return 1 if comparison.regressed else 0
