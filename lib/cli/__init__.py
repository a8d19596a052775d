"""Headless command line: `python -m lib.cli COMMAND ...` (run, capacity, matrix, check, copy, …).

A thin wrapper over the same functions the dashboard calls. Exit codes: 0 every
request completed, 1 some requests failed (results still written) or an unexpected
error (one line), 2 bad arguments, a store that cannot be opened, engine unreachable
or model unknown (one line on stderr, nothing written). SERVESCOPE_DEBUG=1 shows the
traceback of an unexpected error instead of its one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from lib import store
from lib.analysis import results, validation
from lib.cli import check as cli_check
from lib.cli import copy as cli_copy
from lib.cli import load_args
from lib.cli import matrix as cli_matrix
from lib.cli import reports as cli_reports
from lib.cli.db_option import DB_HELP
from lib.cli.verdict_lines import print_verdict
from lib.core.identity import who_where
from lib.core.load_pattern import CONCURRENCY, LOAD_MODES, level_label
from lib.core.records import ENGINE_KINDS, LaneSpec, Prompt, RunConfig, Sampling
from lib.core.usage import OneLineParser, UsageError, error_line
from lib.engines.base import EngineError
from lib.load import jobs
from lib.load.runner import (
    ConfigError,
    LoadWorkerError,
    close_lanes,
    execute_run,
    prepare_lanes,
    validate_config,
)

PROG = "servescope"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return list(dict.fromkeys(values))  # keep order, drop repeats


def _add_lane_and_prompt_arguments(run: argparse.ArgumentParser) -> None:
    """What `run` and `capacity` share: lanes, prompts, sampling, the store and output."""
    run.add_argument("--engine", choices=ENGINE_KINDS, help="API dialect of the single lane")
    run.add_argument("--base-url", help="endpoint URL of the single lane")
    run.add_argument("--model", help="model name of the single lane")
    run.add_argument(
        "--lane",
        nargs=3,
        action="append",
        metavar=("ENGINE", "URL", "MODEL"),
        help="a lane (repeat for several)",
    )
    add_prompt_arguments(run)


def add_prompt_arguments(run: argparse.ArgumentParser) -> None:
    """Prompts, sampling, the store and output: what every benchmarking command takes."""
    run.add_argument("--prompt", help="one prompt text")
    run.add_argument("--prompt-file", help=".txt (a prompt per line), .jsonl or .csv")
    run.add_argument("--preset", help="a built-in prompt set (see lib/load/workloads.py)")
    load_args.add_workload_arguments(run)
    run.add_argument("--warmup", type=int, default=1, help="warm-up requests per lane")
    run.add_argument("--max-tokens", type=int, default=128)
    run.add_argument("--temperature", type=float, default=0.0)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--ignore-eos", action="store_true", help="ask for exactly --max-tokens")
    run.add_argument("--num-ctx", type=int, help="Ollama context length, held for the run")
    run.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    run.add_argument("--lanes-parallel", action="store_true", help="run lanes at the same time")
    run.add_argument(
        "--workers",
        type=int,
        help="load-generator processes (default: automatic, one where one is enough)",
    )
    run.add_argument("--api-key", help="API key (default: $SERVESCOPE_API_KEY); never stored")
    run.add_argument("--label", default="")
    run.add_argument("--db", help=DB_HELP)
    run.add_argument("--output-json", help="write the run's results as JSON here")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m lib.cli", description="Benchmark LLM serving engines.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = sub.add_parser("run", help="run a benchmark")
    _add_lane_and_prompt_arguments(run)
    levels = run.add_mutually_exclusive_group()
    levels.add_argument("--concurrency", type=_int_list, help="closed-loop levels, e.g. 1,4,16")
    levels.add_argument(
        "--rate", type=load_args.rate_list, help="open-loop levels in req/s, e.g. 1,2,4,inf"
    )
    run.add_argument("--requests", type=int, default=10, help="measured requests per level")
    load_args.add_open_loop_arguments(run)
    load_args.add_slo_arguments(run)
    run.add_argument("--config", help="a RunConfig JSON file (used by the dashboard)")
    run.add_argument("--run-id", help="continue a run row created beforehand (dashboard)")

    capacity = sub.add_parser(
        "capacity", help="find how much load each lane serves within latency targets"
    )
    _add_lane_and_prompt_arguments(capacity)
    capacity.add_argument("--mode", choices=LOAD_MODES, default=CONCURRENCY)
    capacity.add_argument("--start", type=float, default=1.0, help="first load tried")
    capacity.add_argument("--max", type=float, help="ceiling of the search (default 64)")
    capacity.add_argument("--tolerance", type=float, help="users, or a share of the rate")
    capacity.add_argument("--requests", type=int, default=20, help="measured requests per load")
    load_args.add_open_loop_arguments(capacity)
    load_args.add_slo_arguments(capacity, target_flag="--target")
    capacity.set_defaults(concurrency=None, rate=None, config=None, run_id=None)

    lst = sub.add_parser("list", help="runs in the store")
    lst.add_argument("--db", help=DB_HELP)
    lst.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one run's summary")
    show.add_argument("run_id")
    show.add_argument("--db", help=DB_HELP)
    show.add_argument("--json", action="store_true", help="the full results document")

    quality = sub.add_parser("quality", help="check one answer read on stdin")
    quality.add_argument("--expect-lang", choices=("ko", "ja", "zh", "en"))
    quality.add_argument("--expect-json", help="required keys, e.g. title,content")
    quality.add_argument("--prompt", help="the prompt, to detect the expected language")

    gpu = sub.add_parser("gpu", help="the current GPU snapshot")
    gpu.add_argument("--json", action="store_true")
    COMMANDS.update(cli_reports.add_subcommands(sub))  # report, export
    COMMANDS.update(cli_check.add_subcommands(sub))  # check
    COMMANDS.update(cli_copy.add_subcommands(sub))  # copy
    cli_matrix.add_subcommands(sub, add_prompt_arguments, _int_list)
    return parser


# --- run ------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace, lanes: list[LaneSpec] | None = None) -> RunConfig:
    """Turn `run` arguments into a RunConfig (``lanes`` given: those lanes, as `matrix`
    builds them from recipes); UsageError on bad input."""
    if lanes is None and args.config:
        try:
            data = json.loads(Path(args.config).read_text(encoding="utf-8"))
            return RunConfig.from_dict(data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"cannot read config {args.config}: {exc}") from None
    if lanes is None:
        lanes = _lanes_from_args(args)
    synthetic = load_args.synthetic_from_args(args)
    output_tokens = synthetic.get("output_tokens") if synthetic else None
    return RunConfig(
        lanes=lanes,
        prompts=_prompts_from_args(args, synthetic is not None),
        concurrency=args.concurrency or [1],
        requests=args.requests,
        warmup=args.warmup,
        sampling=Sampling(
            max_tokens=output_tokens or args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            ignore_eos=args.ignore_eos or output_tokens is not None,
        ),
        timeout_s=args.timeout,
        label=args.label,
        lanes_parallel=args.lanes_parallel,
        num_ctx=args.num_ctx,
        load=load_args.load_from_args(args, args.rate),
        slo=load_args.slo_from_args(args),
        capacity=load_args.capacity_from_args(args) if _searches(args) else None,
        synthetic=synthetic,
        workers=args.workers,
    )


def _lanes_from_args(args: argparse.Namespace) -> list[LaneSpec]:
    single = [args.engine, args.base_url, args.model]
    if args.lane and any(single):
        raise UsageError("give either --engine/--base-url/--model or --lane, not both")
    if args.lane:
        lanes = [LaneSpec(engine=e, base_url=u, model=m) for e, u, m in args.lane]
    elif all(single):
        lanes = [LaneSpec(engine=args.engine, base_url=args.base_url, model=args.model)]
    else:
        raise UsageError("give --engine, --base-url and --model, or one or more --lane")
    for lane in lanes:
        if lane.engine not in ENGINE_KINDS:
            raise UsageError(
                f"unknown engine {lane.engine!r}: use one of {', '.join(ENGINE_KINDS)}"
            )
    return lanes


def _searches(args: argparse.Namespace) -> bool:
    """True for a capacity search: `capacity`, or `matrix --capacity`."""
    return args.command == "capacity" or bool(getattr(args, "capacity", False))


def _prompts_from_args(args: argparse.Namespace, synthetic: bool = False) -> list[Prompt]:
    given = [x for x in (args.prompt, args.prompt_file, args.preset) if x is not None]
    if synthetic:
        if given:
            raise UsageError(
                "give --input-tokens or a prompt (--prompt, --prompt-file, --preset), not both"
            )
        # Placeholder until each lane's engine sizes the real ones (lib/load/synthetic.py).
        return [Prompt.from_text("synthetic", name="synthetic")]
    if len(given) != 1:
        raise UsageError("give exactly one of --prompt, --prompt-file, --preset or --input-tokens")
    if args.prompt is not None:
        if not args.prompt.strip():
            raise UsageError("--prompt is empty")
        return [Prompt.from_text(args.prompt)]
    from lib.load import workloads

    if args.preset is not None:
        if args.preset not in workloads.PRESETS:
            names = ", ".join(sorted(workloads.PRESETS))
            raise UsageError(f"unknown preset {args.preset!r}: use one of {names}")
        return list(workloads.PRESETS[args.preset].prompts)
    try:
        return workloads.load_prompt_file(args.prompt_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _progress_printer(quiet: bool) -> Any:
    def progress(event: dict[str, Any]) -> None:
        if quiet:
            return
        kind = event["event"]
        level = event.get("concurrency")
        name = level_label(event.get("load"), level) if level is not None else ""
        if kind == "level_start":
            print(f"[{event['lane']}] {name}: started", file=sys.stderr)
        elif kind == "level_end":
            print(
                f"[{event['lane']}] {name}: {event['status']}"
                f" ({event.get('completed', '?')} ok, {event.get('failed', '?')} failed so far)",
                file=sys.stderr,
            )
        elif kind == "capacity_step":
            share = event.get("attainment")
            met = "no requests" if share is None else f"{share:.0%} within the SLO"
            verdict = "passed" if event.get("passed") else "missed"
            print(f"[{event['lane']}] load {event['load']:g}: {met}, {verdict}", file=sys.stderr)
        elif kind in cli_matrix.ENGINE_EVENTS:
            print(f"[{event['lane']}] {cli_matrix.engine_event_text(event)}", file=sys.stderr)
        elif kind == "worker_died":
            print(
                f"[{event['lane']}] {name}: {event['reason']}; its {event['requests']} "
                "unfinished requests are recorded as failed",
                file=sys.stderr,
            )
        elif kind == "request" and event["error"] and not event["warmup"]:
            print(f"[{event['lane']}] request failed: {event['error']}", file=sys.stderr)

    return progress


async def _run_async(args: argparse.Namespace, config: RunConfig) -> tuple[str, int]:
    api_key = args.api_key or os.environ.get("SERVESCOPE_API_KEY")
    lanes = await prepare_lanes(config, api_key=api_key)
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, cancel.set)
    counts = {"completed": 0, "failed": 0}
    printer = _progress_printer(args.quiet)

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "request" and not event["warmup"]:
            counts.update(completed=event["completed"], failed=event["failed"])
        printer({**counts, **event})

    env = _environment()
    try:
        run_id = await execute_run(
            config, lanes, db=args.db, run_id=args.run_id, progress=progress, cancel=cancel, env=env
        )
    finally:
        await close_lanes(lanes)
    return run_id, (1 if counts["failed"] or cancel.is_set() else 0)


def _environment() -> dict[str, Any]:
    """Hardware and versions recorded with the run."""
    try:
        from lib.telemetry import hardware_info
    except ImportError:
        import platform

        return {"hardware": {"machine": platform.machine(), "cpus": os.cpu_count()}}
    return {"hardware": hardware_info()}


def cmd_run(args: argparse.Namespace, config: RunConfig | None = None) -> int:
    """Run ``config`` (default: the one the arguments describe) and print its results."""
    config = config or config_from_args(args)
    try:
        validate_config(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.output_json:
        out = Path(args.output_json)
        if not out.parent.exists():
            raise UsageError(f"--output-json: folder {out.parent} does not exist")
        if out.is_dir():  # found before the run, not when its results are written
            raise UsageError(f"--output-json: {out} is a folder")
    # Open the store before any request: a --db that cannot be written must fail now
    # (StoreError, exit 2), not lose every record of a finished run.
    with store.opened(args.db):
        pass
    try:
        run_id, code = asyncio.run(_run_async(args, config))
    except (EngineError, LoadWorkerError) as exc:
        _fail_precreated_run(args, str(exc))
        raise UsageError(str(exc)) from None
    document = results.run_document(args.db, run_id)
    if args.output_json:
        Path(args.output_json).write_text(
            json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8"
        )
    print(f"run {run_id} ({document['status']})")
    print(results.format_table(results.summary_rows(document)))
    _print_capacity(document)
    print_verdict(document)
    _print_checks(document)
    _print_failures(document)
    cli_matrix.print_cells(document)
    if any(lane.get("engine_process", {}).get("state") == "failed" for lane in document["lanes"]):
        code = 1  # a cell whose engine did not start or died: no request says so
    return code


def _print_capacity(document: dict[str, Any]) -> None:
    """Each lane's capacity at the run's SLO, in one sentence."""
    for lane in document["lanes"]:
        capacity = lane.get("capacity")
        if capacity:
            print(f"capacity {lane['name']}: {capacity['summary']}")
            for note in capacity.get("notes") or []:
                print(f"  note: {note}")


def _print_checks(document: dict[str, Any]) -> None:
    """Below the table: the run's checks of its own numbers, and what did not pass."""
    verdict = document.get("validation") or {}
    print(validation.verdict_line(verdict))
    for line in validation.problem_lines(verdict):
        print(f"  {line}")


def _print_failures(document: dict[str, Any]) -> None:
    """Below the table: why levels failed, and where a failing sandbox engine logs."""
    for line in document.get("failures") or []:
        print(f"failures: {line}")
    names = [lane["name"] for lane in document["lanes"]]
    for key, report in (document["environment"].get("engine_logs") or {}).items():
        li = int(key)
        lane = names[li] if 0 <= li < len(names) else f"lane {li}"
        alive = "still answers" if report.get("ready") else "no longer answers"
        print(f"{lane}: sandbox engine {report.get('name')} {alive}; log {report.get('log')}")
        for tail in (report.get("tail") or [])[-5:]:
            print(f"  | {tail}")


def _fail_precreated_run(args: argparse.Namespace, reason: str) -> None:
    """A run row made by the dashboard must not stay 'pending' when pre-flight fails."""
    if args.run_id:
        with store.opened(args.db) as conn:
            store.update_run(conn, args.run_id, status="failed", error=reason)


# --- list, show, quality, gpu --------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    jobs.reconcile(args.db)  # a run whose process died reads failed, not running forever
    with store.opened(args.db) as conn:
        runs = store.list_runs(conn)
        lanes = {r["run_id"]: store.get_lanes(conn, r["run_id"]) for r in runs}
    if args.json:
        print(json.dumps([_run_line(r, lanes[r["run_id"]]) for r in runs], ensure_ascii=False))
        return 0
    if not runs:
        print("no runs in the store")
        return 0
    lines = [_run_line(r, lanes[r["run_id"]]) for r in runs]
    head = {"run_id": "run", "status": "status", "started_by": "by", "host": "host"}
    # Columns as wide as their longest value; who and where capped, so a long name is cut
    # rather than pushing the label and lanes out of sight.
    widths = {key: max(len(x[key] or "-") for x in [head, *lines]) for key in head}
    widths |= {key: min(widths[key], 24) for key in ("started_by", "host")}
    print("  ".join(_cell(head[k], widths[k]) for k in head) + "  label  lanes")
    for line in lines:
        cells = [_cell(line[k], widths[k]) for k in head]
        print("  ".join([*cells, line["label"] or "-", ", ".join(line["lanes"])]))
    return 0


def _cell(value: str | None, width: int) -> str:
    """A column's value padded to `width`, cut with an ellipsis when longer; "-" if none."""
    text = value or "-"
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def _run_line(run: dict[str, Any], lanes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"],
        "created_at": run["created_at"],
        "status": run["status"],
        "label": run["label"],
        # Who started it and where; null for a run stored before runs recorded either.
        "started_by": run.get("started_by"),
        "host": run.get("host"),
        "lanes": [lane["name"] for lane in lanes],
        "concurrency": run["config"].get("concurrency"),
    }


def cmd_show(args: argparse.Namespace) -> int:
    jobs.reconcile(args.db)  # as in list: never a dead run shown as running
    try:
        document = results.run_document(args.db, args.run_id)
    except results.RunNotFound as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        print(f"run {document['run_id']} ({document['status']}) {document['label']}")
        started = datetime.fromtimestamp(document["created_at"]).strftime("%Y-%m-%d %H:%M")
        print(" ".join(x for x in (f"started {started}", who_where(document)) if x))
        print(results.format_table(results.summary_rows(document)))
        _print_capacity(document)
        _print_checks(document)
        print_verdict(document)
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from lib import quality

    text = sys.stdin.read()
    keys = (
        [k.strip() for k in args.expect_json.split(",") if k.strip()] if args.expect_json else None
    )
    verdict = quality.check_answer(
        text, expect_lang=args.expect_lang, prompt_text=args.prompt, expect_json=keys
    )
    print(json.dumps(verdict, ensure_ascii=False))
    return 0


def cmd_gpu(args: argparse.Namespace) -> int:
    from lib.telemetry import gpu_snapshot

    snapshot = gpu_snapshot()
    if args.json:
        print(json.dumps(snapshot))
    elif not snapshot.get("available"):
        print(f"no GPU telemetry: {snapshot.get('reason')}")
    else:
        for gpu in snapshot["gpus"]:
            used, total = gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")
            memory = (
                f"{used / 2**30:.1f} / {total / 2**30:.1f} GiB"
                if used is not None and total is not None
                else "memory unavailable"
            )
            print(f"GPU {gpu['index']} {gpu['name']}: {memory}")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    """A run whose loads the search picks; the document's lanes carry their capacity."""
    cmd_run(args)
    # Levels that miss the SLO, even failing ones, are the search's answer, not an error.
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    """Each variant's engine started, measured and stopped in turn: one run, a lane per cell."""
    cells = cli_matrix.recipes_from_args(args)
    cli_matrix.check_programs(cells)
    return cmd_run(args, config_from_args(args, cli_matrix.lanes_for(cells)))


COMMANDS = {
    "run": cmd_run,
    "matrix": cmd_matrix,
    "capacity": cmd_capacity,
    "list": cmd_list,
    "show": cmd_show,
    "quality": cmd_quality,
    "gpu": cmd_gpu,
}


def _say(message: str) -> None:
    """One line on stderr: messages may quote names or engine text with newlines."""
    flat = " ".join(str(message).split())
    print(f"{PROG}: {flat[:500]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, store.StoreError) as exc:  # the user's to fix: a flag, --db
        print(error_line(PROG, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say("interrupted")
        return 1
    except BrokenPipeError:
        # `servescope show RUN | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # never a traceback for the user; what finished is stored
        if os.environ.get("SERVESCOPE_DEBUG") == "1":
            raise
        _say(f"failed: {type(exc).__name__}: {exc}")
        return 1
