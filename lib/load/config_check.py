"""Checking a run configuration before anything connects: bounds, types and shape, each
failure one line for the user (ConfigError). The CLI, the Run page and the job
launcher check with it before a run starts.
"""

from __future__ import annotations

from typing import Any

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
    keys = [(lane.engine, lane.base_url.rstrip("/"), lane.model) for lane in config.lanes]
    if len(set(keys)) != len(keys):
        raise ConfigError("the same lane (engine, URL, model) is listed twice")
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_lane(lane: LaneSpec) -> None:
    """Engine, URL and model of a lane: one line for the user, before anything connects.

    URLs follow the Engines page's rules (lib/endpoints): http(s) only, and no
    user:password@ part, which would put a credential in the store with the run.
    """
    if lane.engine not in ENGINE_KINDS:
        raise ConfigError(f"unknown engine {lane.engine!r}: use one of {', '.join(ENGINE_KINDS)}")
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
