"""The lanes telemetry is drawn for, and which lane a GPU process belongs to.

Attribution: NVML reports GPU processes with the engine they belong to (vllm, ollama,
llama.cpp; lib/telemetry/nvml.py reads /proc for that), not with a lane. A process is
drawn in a lane's colour when exactly one lane of the run talks to an engine of that
kind; two vLLM lanes cannot be told apart by NVML alone, so their processes stay grey
and are named by engine and pid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib.analysis.lane_memory import engine_kind

GIB = float(2**30)
MIB = float(2**20)
ENGINE_LABELS = {"vllm": "vLLM", "ollama": "Ollama", "llama.cpp": "llama.cpp"}


@dataclass(frozen=True)
class LaneRef:
    """What the telemetry frames need of a lane (from store lanes or a results document)."""

    idx: int
    name: str
    kind: str  # vllm, ollama, llama.cpp, openai
    model: str
    base_url: str


def lane_refs(lanes: Sequence[Mapping[str, Any]]) -> list[LaneRef]:
    """LaneRefs from store.get_lanes rows or a results document's lanes, by lane order."""
    out = []
    for pos, lane in enumerate(lanes):
        out.append(
            LaneRef(
                idx=int(lane.get("lane_idx", pos)),
                name=str(lane.get("name") or f"lane {pos + 1}"),
                kind=engine_kind(lane),
                model=str(lane.get("model") or ""),
                base_url=str(lane.get("base_url") or ""),
            )
        )
    return out


def lane_for_engine(engine: str, lanes: Sequence[LaneRef]) -> LaneRef | None:
    """The one lane that talks to an engine of this kind; None if none or several."""
    mine = [lane for lane in lanes if lane.kind == engine]
    return mine[0] if len(mine) == 1 else None


def lane_by_idx(lanes: Sequence[LaneRef], idx: Any) -> LaneRef | None:
    """The lane with this index, if the run has it."""
    return next((lane for lane in lanes if lane.idx == idx), None)
