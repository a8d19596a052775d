"""The `report` and `export` subcommands, registered into lib.cli's parser.

    python -m lib.cli report RUN_ID --html FILE --png FILE [--concurrency C] [--db DB]
    python -m lib.cli export RUN_ID (--csv FILE | --parquet FILE | --json FILE) [--db DB]

`add_subcommands(sub)` adds both to the subparsers object and returns their handlers.
Handlers return an exit code (0) and raise lib.core.usage.UsageError with one line for
anything the user can fix (unknown run, missing folder, a level the run lacks, no
browser for the PNG); lib.cli is imported inside them, since it imports this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib.cli.db_option import DB_HELP
from lib.core.usage import UsageError

Handler = Callable[[argparse.Namespace], int]


def add_subcommands(sub: Any) -> dict[str, Handler]:
    """Register `report` and `export` on lib.cli's subparsers; returns {name: handler}."""
    report = sub.add_parser("report", help="write a run's HTML report and/or PNG card")
    report.add_argument("run_id")
    report.add_argument("--html", metavar="FILE", help="self-contained HTML report")
    report.add_argument("--png", metavar="FILE", help="1600x900 PNG card for a slide")
    report.add_argument(
        "--concurrency",
        type=int,
        metavar="C",
        help="the one level the card shows (default: every level of each lane) and the "
        "report's headline table (default: the highest every lane measured)",
    )
    report.add_argument("--db", help=DB_HELP)

    export = sub.add_parser("export", help="write a run's per-request rows")
    export.add_argument("run_id")
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", metavar="FILE", help="one row per request, CSV")
    what.add_argument("--parquet", metavar="FILE", help="one row per request, Parquet")
    what.add_argument(
        "--json",
        metavar="FILE",
        help="vllm bench serve --save-result fields, one object per lane and level "
        "(a list; one per line if FILE ends in .jsonl)",
    )
    export.add_argument("--db", help=DB_HELP)
    return {"report": cmd_report, "export": cmd_export}


def _target(path: str, flag: str) -> Path:
    out = Path(path)
    if not out.parent.exists():
        raise UsageError(f"{flag}: folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"{flag}: {out} is a folder")
    return out


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{max(size // 1024, 1)} KB"


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report and/or the PNG card of a run."""
    from lib.analysis import results
    from lib.report import card as report_card
    from lib.report import render_html
    from lib.report.facts import ConcurrencyError, load_view

    if not args.html and not args.png:
        raise UsageError("give --html FILE, --png FILE or both")
    html_path = _target(args.html, "--html") if args.html else None
    png_path = _target(args.png, "--png") if args.png else None
    try:
        view = load_view(args.db, args.run_id)
    except results.RunNotFound as exc:
        raise UsageError(str(exc)) from None
    # Both are made before either is written: a level the run lacks, or no browser for
    # the card, fails with no half-done output.
    try:
        page = render_html(view, args.concurrency) if html_path else None
        png = (
            report_card.render_png(report_card.card_html(view, args.concurrency))
            if png_path
            else None
        )
    except (ConcurrencyError, report_card.RenderError) as exc:
        raise UsageError(str(exc)) from None
    if html_path and page is not None:
        html_path.write_text(page, encoding="utf-8")
        print(f"wrote {html_path} ({_size(html_path)})")
    if png_path and png is not None:
        png_path.write_bytes(png)
        print(f"wrote {png_path} ({_size(png_path)}, 1600x900)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's rows as CSV or Parquet, or its levels as vLLM result JSON."""
    from lib.analysis import results
    from lib.report import exports

    fmt, path = next((f, getattr(args, f)) for f in exports.FORMATS if getattr(args, f))
    out = _target(path, f"--{fmt}")
    try:
        exports.write_export(args.db, args.run_id, fmt, out)
    except results.RunNotFound as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {out} ({_size(out)})")
    return 0
