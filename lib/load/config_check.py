"""Checking a run configuration before anything connects: bounds, types and shape, each
failure one line for the user (ConfigError). The CLI, the Run page and the job
launcher check with it before a run starts.
"""

from __future__ import annotations

from typing import Any

from lib.core.load_pattern import ARRIVALS, CONCURRENCY, LOAD_MODES, MAX_RATE, RATE
from lib.core.records import (
    ENGINE_KINDS,
    MAX_CONCURRENCY,
    MAX_OUTPUT_TOKENS,
    MAX_REQUESTS_PER_LEVEL,
    MAX_TIMEOUT_S,
    MAX_WARMUP,
    LaneSpec,
    RunConfig,
)
from lib.endpoints import validate_url
from lib.load import worker_count

# Longer than any HF id or local path worth serving; the bound is stated in the error.
MAX_MODEL_NAME = 512


class ConfigError(ValueError):
    """A run configuration that cannot be run; the message is one line for the user."""


def validate_config(config: RunConfig) -> None:
    """Check bounds and shape; raise ConfigError with a one-line reason."""
    if not config.lanes:
        raise ConfigError("no lanes: give at least one engine endpoint and model")
    for lane in config.lanes:
        _check_lane(lane)
    keys = [
        (lane.engine, lane.base_url.rstrip("/"), lane.model)
        for lane in config.lanes
        if lane.recipe is None
    ]
    if len(set(keys)) != len(keys):
        raise ConfigError("the same lane (engine, URL, model) is listed twice")
    _check_launched(config)
    if not config.prompts:
        raise ConfigError("no prompts")
    for n, prompt in enumerate(config.prompts, start=1):
        _check_messages(n, prompt.messages)
    if not config.concurrency:
        raise ConfigError("no concurrency levels")
    # A --config file is JSON anyone can write: wrong types get a reason, not a TypeError.
    numbers = [*config.concurrency, config.requests, config.warmup, config.sampling.max_tokens]
    if not all(_is_int(x) for x in numbers):
        raise ConfigError("concurrency, requests, warm-up and max tokens must be whole numbers")
    s = config.sampling
    if not all(_is_number(x) for x in (s.temperature, s.top_p, config.timeout_s)):
        raise ConfigError("temperature, top-p and timeout must be numbers")
    for c in config.concurrency:
        if not 1 <= c <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency {c} is out of range 1..{MAX_CONCURRENCY}")
    if not 1 <= config.requests <= MAX_REQUESTS_PER_LEVEL:
        raise ConfigError(f"requests per level must be 1..{MAX_REQUESTS_PER_LEVEL}")
    if not 0 <= config.warmup <= MAX_WARMUP:
        raise ConfigError(f"warm-up requests must be 0..{MAX_WARMUP}")
    s = config.sampling
    if not 1 <= s.max_tokens <= MAX_OUTPUT_TOKENS:
        raise ConfigError(f"max tokens must be 1..{MAX_OUTPUT_TOKENS}")
    if not 0.0 <= s.temperature <= 2.0:
        raise ConfigError("temperature must be between 0 and 2")
    if not 0.0 < s.top_p <= 1.0:
        raise ConfigError("top-p must be in (0, 1]")
    if not 0 < config.timeout_s <= MAX_TIMEOUT_S:
        raise ConfigError(f"timeout must be between 0 and {MAX_TIMEOUT_S:.0f} seconds")
    if config.num_ctx is not None and not 1 <= config.num_ctx <= 1_048_576:
        raise ConfigError("num_ctx must be 1..1048576")
    if (reason := worker_count.problem(config.workers)) is not None:
        raise ConfigError(reason)
    _check_load(config)


def _check_load(config: RunConfig) -> None:
    """Open-loop rates, SLO targets and the capacity search: one line each."""
    load = config.load
    if load.mode not in LOAD_MODES:
        raise ConfigError(f"unknown load mode {load.mode!r}: use one of {', '.join(LOAD_MODES)}")
    if load.mode == RATE and config.capacity is None and not load.rates:
        raise ConfigError("no request rates: give at least one, e.g. 1,2,4 or inf")
    for rate in load.rates:
        if rate is not None and not (_is_number(rate) and 0 < rate <= MAX_RATE):
            raise ConfigError(
                f"request rate {rate} is out of range: above 0, at most {MAX_RATE:g} req/s (or inf)"
            )
    if load.arrival not in ARRIVALS:
        raise ConfigError(f"unknown arrival pattern {load.arrival!r}: use {' or '.join(ARRIVALS)}")
    if not (_is_number(load.burstiness) and 0 < load.burstiness <= 100):
        raise ConfigError("burstiness must be above 0 and at most 100 (1 = Poisson)")
    if load.max_concurrency is not None and not (
        _is_int(load.max_concurrency) and 1 <= load.max_concurrency <= MAX_CONCURRENCY
    ):
        raise ConfigError(f"max concurrency must be 1..{MAX_CONCURRENCY}")
    if load.ramp_from is not None and not (
        _is_number(load.ramp_from) and 0 < load.ramp_from <= MAX_RATE
    ):
        raise ConfigError(f"ramp start must be above 0 and at most {MAX_RATE:g} req/s")
    slo = config.slo
    if slo is not None:
        for name, limit in (("TTFT", slo.ttft_ms), ("TPOT", slo.tpot_ms), ("E2E", slo.e2el_ms)):
            if limit is not None and not (_is_number(limit) and 0 < limit <= MAX_TIMEOUT_S * 1000):
                raise ConfigError(
                    f"{name} target must be above 0 ms and at most {MAX_TIMEOUT_S * 1000:.0f} ms"
                )
        if not (_is_number(slo.target) and 0 < slo.target <= 1):
            raise ConfigError("the SLO's target share must be above 0 and at most 1 (e.g. 0.9)")
    search = config.capacity
    if search is None:
        return
    if slo is None or slo.is_empty():
        raise ConfigError("a capacity search needs a latency target: give a TTFT, TPOT or E2E SLO")
    if search.mode not in LOAD_MODES:
        raise ConfigError(f"unknown capacity mode {search.mode!r}: use concurrency or rate")
    ceiling = MAX_CONCURRENCY if search.mode == CONCURRENCY else MAX_RATE
    if not (
        _is_number(search.start)
        and _is_number(search.max)
        and 0 < search.start <= search.max <= ceiling
    ):
        raise ConfigError(f"capacity search: need 0 < start <= max <= {ceiling:g}")
    if search.mode == CONCURRENCY and (
        search.start != int(search.start) or search.max != int(search.max)
    ):
        raise ConfigError(
            "capacity search by concurrency: start and max must be whole numbers of users"
        )
    if search.tolerance is not None and not (_is_number(search.tolerance) and search.tolerance > 0):
        raise ConfigError("capacity search tolerance must be above 0")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_launched(config: RunConfig) -> None:
    """Lanes whose engines servescope starts: one engine alive at a time, unique names."""
    launched = [lane for lane in config.lanes if lane.recipe is not None]
    if not launched:
        return
    if config.lanes_parallel:
        raise ConfigError("engines started from recipes run one at a time: drop --lanes-parallel")
    names = [lane.display_name() for lane in config.lanes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two lanes are both named {name!r}; give each recipe a name")


def _check_lane(lane: LaneSpec) -> None:
    """Engine, URL and model of a lane: one line for the user, before anything connects.

    URLs follow the Engines page's rules (lib/endpoints): http(s) only, and no
    user:password@ part, which would put a credential in the store with the run.
    """
    if lane.engine not in ENGINE_KINDS:
        raise ConfigError(f"unknown engine {lane.engine!r}: use one of {', '.join(ENGINE_KINDS)}")
    if lane.recipe is not None:
        errors = lane.recipe.validate()
        if errors:
            raise ConfigError(f"recipe {lane.recipe.label()!r}: {errors[0]}")
        if lane.engine != lane.recipe.lane_engine() or lane.model != lane.recipe.served():
            raise ConfigError(f"lane {lane.display_name()!r} does not match its recipe")
        return  # its URL is the started engine's, known at launch
    try:
        validate_url(lane.base_url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    model = lane.model
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("a lane has no model name")
    if len(model) > MAX_MODEL_NAME or not model.isprintable():
        raise ConfigError(
            f"model name {model[:60]!r} is not a model name: printable text of at most"
            f" {MAX_MODEL_NAME} characters"
        )


def _check_messages(n: int, messages: Any) -> None:
    ok = isinstance(messages, list) and bool(messages)
    ok = ok and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )
    if not ok:
        raise ConfigError(f"prompt {n}: messages must be a list of {{role, content}} texts")
