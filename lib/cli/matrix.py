"""`python -m lib.cli matrix`: start, measure and stop each engine variant in turn.

    python -m lib.cli matrix --variants sandbox [--engines vllm,llama.cpp]
        [--only Q4_K_M,bf16] [--set max_num_seqs=1,4 ...]
        (--concurrency L | --rate R | --capacity --slo-ttft-ms X ...)
        --requests N --max-tokens N [--prompt ... | --preset ...] --output-json F
    python -m lib.cli matrix --recipes FILE.json ...

Every cell (a variant with one combination of ``--set`` values) is one lane of one run;
servescope starts its engine from the recipe, runs the lane, and stops the engine and
its children before the next cell starts. A cell that does not start fails with its
log's last lines and the matrix goes on. The run document's lanes carry
``engine_process`` (ready_s, exit, peak_memory_mib, log_tail, memory phases).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib.cli.load_args import add_open_loop_arguments, add_slo_arguments, rate_list
from lib.core.load_pattern import CONCURRENCY, LOAD_MODES
from lib.core.recipes import (
    ENGINES,
    EngineRecipe,
    RecipeError,
    cross,
    name_cells,
    parse_setting,
    recipes_from_json,
)
from lib.core.records import LaneSpec
from lib.core.usage import UsageError
from lib.launch.executables import LaunchRefused, resolve

Handler = Callable[[argparse.Namespace], int]
SANDBOX_VARIANTS = "sandbox"


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_subcommands(sub: Any, add_prompt_arguments: Callable[..., None], int_list: Any) -> None:
    matrix = sub.add_parser(
        "matrix", help="start each engine variant in turn, measure it, stop it: one table"
    )
    source = matrix.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--variants", choices=(SANDBOX_VARIANTS,), help="the sandbox model's variants"
    )
    source.add_argument("--recipes", help="a JSON file of engine recipes (docs/matrix.md)")
    matrix.add_argument("--engines", type=_names, help=f"only these: {', '.join(ENGINES)}")
    matrix.add_argument("--only", type=_names, help="only these variants, e.g. Q4_K_M,bf16")
    matrix.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="cross an engine setting over values, e.g. max_num_seqs=1,4 (repeatable)",
    )
    add_prompt_arguments(matrix)
    levels = matrix.add_mutually_exclusive_group()
    levels.add_argument("--concurrency", type=int_list, help="closed-loop levels, e.g. 1,4")
    levels.add_argument("--rate", type=rate_list, help="open-loop levels in req/s")
    levels.add_argument(
        "--capacity", action="store_true", help="search each cell's capacity at the SLO"
    )
    matrix.add_argument("--requests", type=int, default=10, help="measured requests per level")
    matrix.add_argument("--mode", choices=LOAD_MODES, default=CONCURRENCY, help="with --capacity")
    matrix.add_argument("--start", type=float, default=1.0, help="with --capacity: first load")
    matrix.add_argument("--max", type=float, help="with --capacity: ceiling (default 64)")
    matrix.add_argument("--tolerance", type=float, help="with --capacity")
    add_open_loop_arguments(matrix)
    add_slo_arguments(matrix)
    matrix.set_defaults(
        config=None, run_id=None, lanes_parallel=False, engine=None, base_url=None, model=None
    )


def recipes_from_args(args: argparse.Namespace) -> list[EngineRecipe]:
    """The matrix's cells: the variants, filtered, crossed with the --set values, named."""
    engines = args.engines or list(ENGINES)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise UsageError(f"--engines: unknown engine {unknown[0]!r}; use {', '.join(ENGINES)}")
    try:
        grid = dict(parse_setting(text) for text in args.set)
        if args.recipes:
            recipes = _read_recipes(args.recipes)
        else:
            recipes = _sandbox_variants(engines, args.quiet)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    recipes = [r for r in recipes if r.engine in engines]
    if args.only:
        wanted = {w.lower() for w in args.only}
        recipes = [r for r in recipes if r.variant.lower() in wanted or r.name.lower() in wanted]
    if not recipes:
        raise UsageError("no variant left to run: check --engines and --only")
    cells = name_cells(cross(recipes, grid))
    for cell in cells:
        errors = cell.validate()
        if errors:
            raise UsageError(f"recipe {cell.label()!r}: {errors[0]}")
    return cells


def _read_recipes(path: str) -> list[EngineRecipe]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --recipes {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--recipes {path} is not JSON: {exc}") from None
    return recipes_from_json(data)


def _sandbox_variants(engines: list[str], quiet: bool) -> list[EngineRecipe]:
    from sandbox.recipes import variants

    def report(phase: str, message: str) -> None:
        if not quiet:
            print(f"sandbox: {message}", file=sys.stderr)

    found, why = variants(engines, build=True, report=report)
    if not found:
        raise UsageError(f"no sandbox variants: {why}")
    return found


def check_programs(cells: list[EngineRecipe]) -> None:
    """Refuse, before anything starts, a cell whose program may not be started here."""
    for cell in cells:
        try:
            resolve(cell)
        except LaunchRefused as exc:
            raise UsageError(f"{cell.label()}: {exc}") from None


def lanes_for(cells: list[EngineRecipe]) -> list[LaneSpec]:
    return [LaneSpec.launched(cell) for cell in cells]


ENGINE_EVENTS = ("engine_start", "engine_ready", "engine_stop", "engine_failed")


def engine_event_text(event: dict[str, Any]) -> str:
    """A progress line for a started engine's step (lib/load/launched_lane.py's events)."""
    kind = event["event"]
    if kind == "engine_start":
        return "starting its engine"
    if kind == "engine_ready":
        return f"engine ready in {event['ready_s']:.1f} s"
    if kind == "engine_failed":
        return f"failed: {event['error']}"
    peak = event.get("peak_memory_mib")
    left = event.get("leftover") or []
    text = "engine stopped" + (f", peak {peak} MiB" if peak is not None else "")
    return text + (f"; still running: {left}" if left else "")


def print_cells(document: dict[str, Any]) -> None:
    """One line per cell: how its engine started, its peak memory and how it ended."""
    for lane in document["lanes"]:
        record = lane.get("engine_process")
        if not record:
            continue
        ready = record.get("ready_s")
        peak = record.get("peak_memory_mib")
        started = f"ready in {ready:.1f} s" if ready is not None else "did not start"
        memory = f", peak {peak} MiB" if peak is not None else ""
        ended = record.get("exit_reason") or ""
        line = f"[{lane['name']}] {started}{memory}; {ended}"
        if record.get("error"):
            tail = (record.get("log_tail") or [""])[-1]
            line += f": {record['error']}" + (f" | {tail}" if tail else "")
        if record.get("leftover_pids"):
            line += f"; LEFT RUNNING: {record['leftover_pids']}"
        print(line)
