"""Synthetic prompts for one lane and level, sized by that lane's engine (issue
"Capacity", item 2): the runner asks for them as each level starts.

Built per level, not once per lane, so no two requests of a lane share a prompt — not
across levels either — and prefix caches are measured only when asked for (a shared
prefix). Every lane gets the same seeds, so lanes see the same words, each counted by
its own engine's tokenizer.
"""

from __future__ import annotations

from typing import Any

from lib.core.records import Prompt, RunConfig
from lib.engines.base import Engine
from lib.load.synthetic import SyntheticSpec, build_prompts, new_seed


def ensure_seed(config: RunConfig) -> int | None:
    """Draw the run's synthetic seed if it has none; returns it (None: not synthetic)."""
    if config.synthetic is None:
        return None
    if config.synthetic.get("seed") is None:
        config.synthetic["seed"] = new_seed()
    return int(config.synthetic["seed"])


def spec_of(config: RunConfig) -> SyntheticSpec:
    data: dict[str, Any] = config.synthetic or {}
    return SyntheticSpec(
        input_tokens=int(data["input_tokens"]),
        output_tokens=int(data.get("output_tokens") or config.sampling.max_tokens),
        shared_prefix_tokens=int(data.get("shared_prefix_tokens") or 0),
    )


async def level_prompts(
    config: RunConfig, engine: Engine, model: str, level_key: int, count: int
) -> list[Prompt] | None:
    """`count` fresh prompts for one level (key 0: the warm-up), or None when the run
    uses its own prompts."""
    seed = ensure_seed(config)
    if seed is None:
        return None
    # One seed per level: a level's prompts differ from every other level's.
    level_seed = (seed * 1_000_003 + level_key) % 2**32
    return await build_prompts(engine, model, spec_of(config), count, seed=level_seed)
