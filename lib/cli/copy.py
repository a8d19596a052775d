"""The `copy` subcommand: bring runs from one store into another (a person's SQLite
history into the team's PostgreSQL database, or back), registered into lib.cli's parser.

    python -m lib.cli copy [RUN_ID ...] --from SRC [--to DST] [--as-user NAME] [--as-host HOST]

Every run of SRC by default, oldest first; DST defaults to $SERVESCOPE_DB. One line per
run, then a summary. A run already in DST is skipped, never duplicated or overwritten, so
running it again copies only what is new; a run still pending or running is skipped too.
Exit 0, 1 when a run failed to copy (nothing of it written; the others are), 2 for bad
input: an unknown run id, the same store twice, a store that cannot be opened.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from lib import store
from lib.core.usage import UsageError
from lib.store.copying import ALREADY_THERE, COPIED, FAILED, STILL_RUNNING, CopiedRun

Handler = Callable[[argparse.Namespace], int]

_URL_NOTE = (
    "a postgresql:// URL without its password: give that in $PGPASSWORD or ~/.pgpass "
    "(a command line is visible to every user of the machine)"
)


def add_subcommands(sub: Any) -> dict[str, Handler]:
    """Register `copy` on lib.cli's subparsers; returns {name: handler}."""
    copy = sub.add_parser(
        "copy", help="copy runs from one store to another (SQLite history into PostgreSQL)"
    )
    copy.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to copy (default: all)")
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SRC",
        help=f"the store to copy from, read only: a SQLite file or {_URL_NOTE}",
    )
    copy.add_argument(
        "--to",
        dest="dest",
        metavar="DST",
        help="the store to copy into (default: $SERVESCOPE_DB, else data/servescope.db): "
        f"a SQLite file or {_URL_NOTE}",
    )
    copy.add_argument(
        "--as-user", metavar="NAME", help="who started the runs that do not say (older runs)"
    )
    copy.add_argument(
        "--as-host", metavar="HOST", help="where the runs that do not say ran (older runs)"
    )
    return {"copy": cmd_copy}


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy the runs, a line each, then the summary; 1 if any failed."""
    for flag, value in (("--from", args.source), ("--to", args.dest)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty: give a SQLite file or a postgresql:// URL")
    dest = args.dest or os.environ.get("SERVESCOPE_DB") or None
    if store.same_store(args.source, dest):
        raise UsageError(
            f"--from and --to name the same store ({store.describe(dest)}): give --to, or set"
            " SERVESCOPE_DB to the team's database"
        )
    if store.reading_only():
        raise UsageError(
            f"cannot copy into {store.describe(dest)}: SERVESCOPE_ROLE=viewer is read-only"
        )
    wanted = list(dict.fromkeys(args.run_ids))  # in the order given, once each
    started = time.monotonic()
    with store.open_copy(args.source, dest) as copier:
        if wanted:
            unknown = copier.missing(wanted)
            if unknown:
                which = (
                    f"run {unknown[0]} is"
                    if len(unknown) == 1
                    else f"runs {', '.join(unknown)} are"
                )
                raise UsageError(f"{which} not in {copier.source_name}")
        run_ids = wanted or copier.run_ids()
        if not run_ids:
            print(f"no runs in {copier.source_name}")
            return 0
        results = []
        for run_id in run_ids:
            result = copier.copy(run_id, args.as_user, args.as_host)
            print(_line(result), flush=True)
            results.append(result)
        print(_summary(results, copier.dest_name, time.monotonic() - started))
    return 1 if any(r.outcome == FAILED for r in results) else 0


def _line(result: CopiedRun) -> str:
    """One run's line: "copied RUN (label, 24 requests, 412 samples)" or why not."""
    if result.outcome == COPIED:
        what = result.label or ", ".join(result.lanes) or "no label"
        counts = [_count(result.requests, "request"), _count(result.samples, "sample")]
        if result.votes:
            counts.append(_count(result.votes, "vote"))
        return f"copied {result.run_id} ({what}, {', '.join(counts)})"
    if result.outcome == STILL_RUNNING:
        return f"skipped {result.run_id}: still running (copy it once it has ended)"
    if result.outcome == ALREADY_THERE:
        return f"skipped {result.run_id}: already there"
    return f"failed {result.run_id}: {result.reason}"


def _summary(results: list[CopiedRun], dest: str, seconds: float) -> str:
    copied = [r for r in results if r.outcome == COPIED]
    requests = sum(r.requests for r in copied)
    samples = sum(r.samples for r in copied)
    if copied:
        line = (
            f"{_count(len(copied), 'run')} copied into {dest}"
            f" ({_count(requests, 'request')}, {_count(samples, 'sample')}) in {seconds:.1f} s"
        )
    else:
        line = f"nothing copied into {dest}"
    for outcome, words in (
        (ALREADY_THERE, "already there"),
        (STILL_RUNNING, "still running"),
        (FAILED, "failed"),
    ):
        n = sum(r.outcome == outcome for r in results)
        if n:
            line += f"; {n} {words}"
    return line


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
