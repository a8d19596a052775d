"""The Run page's form logic, without Streamlit: lanes from the pickers, prompts typed in.

lib/app/ draws the widgets and calls these; tests call them directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lib import endpoints
from lib.core.records import LaneSpec, Prompt

ENGINE_LABELS = {
    "ollama": "Ollama",
    "vllm": "vLLM",
    "llama.cpp": "llama.cpp",
    "openai": "OpenAI-compatible",
}


@dataclass
class LaneChoice:
    """What the user picked for one lane: an endpoint (by name) and a model on it."""

    endpoint: str | None
    model: str | None


def engine_label(kind: str | None) -> str:
    """Ollama, vLLM, llama.cpp or OpenAI-compatible."""
    return ENGINE_LABELS.get(kind or "", kind or "engine")


def model_caption(info: Any) -> str:
    """'Q4_K_M · 7.6B params · 4.68 GB · context 32,768' for a ModelInfo."""
    row = endpoints.model_rows([info])[0]
    parts = [
        row["quantization"] or "quantization unknown",
        f"{row['parameters']} params" if row["parameters"] else None,
        f"{row['size_gb']:g} GB" if row["size_gb"] else None,
        f"context {row['context_length']:,}" if row["context_length"] else None,
    ]
    return " · ".join(p for p in parts if p)


def build_lanes(
    choices: Sequence[LaneChoice], statuses: Sequence[endpoints.EndpointStatus]
) -> tuple[list[LaneSpec], list[str]]:
    """LaneSpecs for the choices, or one-line reasons why they cannot run.

    Catches what the user can fix on the page: no lanes, an unreachable endpoint, an
    engine with no models, no model picked, the same endpoint and model twice.
    """
    if not choices:
        return [], ["Add at least one lane: an endpoint and a model on it."]
    by_name = {s.endpoint.name: s for s in statuses}
    lanes: list[tuple[LaneSpec, str]] = []  # each with its endpoint's name
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for pos, choice in enumerate(choices, start=1):
        status = by_name.get(choice.endpoint or "")
        if status is None:
            errors.append(f"Lane {pos}: pick an endpoint.")
            continue
        name = status.endpoint.name
        if not status.reachable:
            reason = f" ({status.error})" if status.error else ""
            errors.append(f"Lane {pos}: {name} is unreachable{reason}. Start it or pick another.")
            continue
        if not status.models:
            errors.append(
                f"Lane {pos}: {name} serves no models. Pull or load one first (Engines page)."
            )
            continue
        if not choice.model:
            errors.append(f"Lane {pos}: pick a model on {name}.")
            continue
        base_url = status.base_url or status.endpoint.url
        key = (endpoints.url_key(base_url), choice.model)
        if key in seen:
            errors.append(f"Lane {pos} repeats lane {seen[key]}: same endpoint and model.")
            continue
        seen[key] = pos
        spec = LaneSpec(
            engine=(status.api or status.endpoint.api or "openai"),  # type: ignore[arg-type]
            base_url=base_url,
            model=choice.model,
            name=f"{engine_label(status.engine)} · {choice.model}",
            api_key_env=status.endpoint.api_key_env,
        )
        lanes.append((spec, name))
    labels = [lane.name for lane, _ in lanes]
    for lane, endpoint in lanes:
        if labels.count(lane.name) > 1:  # same engine kind and model on two hosts
            lane.name = f"{lane.name} @ {endpoint}"
    return [lane for lane, _ in lanes], errors


def prompts_from_text(text: str) -> list[Prompt]:
    """Prompts typed in the text area: separated by a line of three dashes."""
    parts = re.split(r"^\s*---\s*$", text or "", flags=re.M)
    return [Prompt.from_text(p.strip()) for p in parts if p.strip()]
