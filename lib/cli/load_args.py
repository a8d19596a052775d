"""The load, SLO and workload options shared by `run` and `capacity`, and what they make
of a RunConfig: open-loop rates, latency targets, the capacity search, synthetic prompts.
"""

from __future__ import annotations

import argparse
from typing import Any

from lib.core.load_pattern import (
    ARRIVALS,
    CONCURRENCY,
    NOT_A_NUMBER,
    NOT_ABOVE_ZERO,
    RATE,
    CapacitySearch,
    LoadPattern,
    RateError,
    parse_rates,
)
from lib.core.slo import DEFAULT_TARGET, Slo
from lib.core.usage import UsageError


def rate_list(text: str) -> list[float | None]:
    """ "1,2.5,inf" -> [1.0, 2.5, None]; None is "all at once"."""
    try:
        return parse_rates(text)
    except RateError as exc:
        if exc.reason == NOT_A_NUMBER:
            message = f"not a request rate: {exc.part!r} (use e.g. 1,2,4 or inf)"
        elif exc.reason == NOT_ABOVE_ZERO:
            message = f"request rate {exc.part} must be above 0 req/s (or inf)"
        else:
            message = "empty list of rates"
        raise argparse.ArgumentTypeError(message) from None


def share(text: str) -> float:
    """ "0.9" or "90%" -> 0.9."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a share: {text!r} (use e.g. 0.9 or 90%)") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"share {text} must be above 0 and at most 1 (or 100%)")
    return value


def add_slo_arguments(parser: argparse.ArgumentParser, target_flag: str = "--slo-target") -> None:
    group = parser.add_argument_group("latency targets (SLO)")
    group.add_argument("--slo-ttft-ms", type=float, help="time to first token target, ms")
    group.add_argument("--slo-tpot-ms", type=float, help="time per output token target, ms")
    group.add_argument("--slo-e2el-ms", type=float, help="end-to-end latency target, ms")
    group.add_argument(
        target_flag,
        dest="slo_target",
        type=share,
        default=DEFAULT_TARGET,
        help="share of requests that must meet the targets (default 0.9)",
    )


def add_open_loop_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("open-loop arrivals")
    group.add_argument("--burstiness", type=float, default=1.0, help="gamma shape: 1 = Poisson")
    group.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    group.add_argument("--max-concurrency", type=int, help="cap on requests in flight")
    group.add_argument(
        "--ramp-from", type=float, help="req/s at a level's start, rising to its rate"
    )
    group.add_argument(
        "--load-seed", type=int, help="arrivals' seed (default: a fresh one per run)"
    )


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("synthetic prompts of exact lengths")
    group.add_argument("--input-tokens", type=int, help="prompt length, by each engine's tokenizer")
    group.add_argument(
        "--output-tokens", type=int, help="answer length (sets --max-tokens and --ignore-eos)"
    )
    group.add_argument(
        "--shared-prefix-tokens", type=int, default=0, help="a prefix every prompt shares"
    )


def slo_from_args(args: argparse.Namespace) -> Slo | None:
    slo = Slo(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2el_ms, args.slo_target)
    return None if slo.is_empty() else slo


def load_from_args(args: argparse.Namespace, rates: list[float | None] | None) -> LoadPattern:
    return LoadPattern(
        mode=RATE if rates else CONCURRENCY,
        rates=list(rates or []),
        arrival=args.arrival,
        burstiness=args.burstiness,
        max_concurrency=args.max_concurrency,
        ramp_from=args.ramp_from,
        seed=args.load_seed,
    )


def capacity_from_args(args: argparse.Namespace) -> CapacitySearch:
    ceiling = args.max if args.max is not None else 64.0  # users, or req/s
    return CapacitySearch(mode=args.mode, start=args.start, max=ceiling, tolerance=args.tolerance)


def synthetic_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.input_tokens is None:
        if args.output_tokens is not None or args.shared_prefix_tokens:
            raise UsageError("--output-tokens and --shared-prefix-tokens need --input-tokens")
        return None
    if args.input_tokens < 1:
        raise UsageError("--input-tokens must be at least 1")
    if args.shared_prefix_tokens < 0 or args.shared_prefix_tokens >= args.input_tokens:
        raise UsageError("--shared-prefix-tokens must be 0 or less than --input-tokens")
    if args.output_tokens is not None and args.output_tokens < 1:
        raise UsageError("--output-tokens must be at least 1")
    return {
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "shared_prefix_tokens": args.shared_prefix_tokens,
    }
