"""The Run page's matrix: engine variants servescope starts, crossed with settings.

In matrix mode a lane is not an endpoint that runs already but a cell: one of the
sandbox model's variants (``sandbox.recipes.variants(build=False)``: read, nothing
installed) with one combination of the settings crossed here (vLLM ``max_num_seqs``,
llama.cpp ``threads``), through ``lib.core.recipes.cross`` and ``name_cells``. The run
starts each cell's engine when its turn comes, measures it with the page's workload and
stops it with all its children (lib/load/launched_lane.py): one engine at a time.

Engines start from the page only when the dashboard listens on loopback, or when the
operator set SERVESCOPE_ALLOW_ENGINE_LAUNCH=1 (``executables.dashboard_may_launch``);
otherwise the page says so in one line and offers no start. The sandbox is imported
lazily, inside functions: servescope works without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from lib.app.formatting import esc_md
from lib.core.recipes import LLAMA_CPP, VLLM, EngineRecipe, cross, name_cells
from lib.core.records import LaneSpec
from lib.launch import executables
from lib.load import jobs

ENDPOINTS, MATRIX = "endpoints", "matrix"
SOURCES = {ENDPOINTS: "Endpoints that are running", MATRIX: "Engines servescope starts (matrix)"}
SEQS_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SANDBOX_UP = "`python -m sandbox up`"


@dataclass
class MatrixPlan:
    """What the matrix inputs chose: the cells in run order, and why it cannot start."""

    cells: list[EngineRecipe] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    may_start: bool = True  # False: the page offers no start (refused, or nothing to start)

    def lanes(self) -> list[LaneSpec]:
        return [LaneSpec.launched(cell) for cell in self.cells]


def lane_source() -> str:
    """The choice under "Lanes": ENDPOINTS (today's editor) or MATRIX."""
    return st.radio(
        "Lanes come from",
        list(SOURCES),
        format_func=lambda s: SOURCES.get(s, s),
        horizontal=True,
        key="run_matrix_source",
        label_visibility="collapsed",
    )


def variant_name(recipe: EngineRecipe) -> str:
    """A variant as the picker names it: "vllm · bf16", "llama.cpp · Q4_K_M"."""
    return f"{recipe.engine} · {recipe.variant or recipe.served()}"


def matrix_cells(
    variants: Sequence[EngineRecipe], grid: Mapping[str, Sequence[Any]]
) -> list[EngineRecipe]:
    """The cells: each variant once per combination of its engine's grid values (an
    empty list of values keeps the variant's own setting), with short unique names."""
    chosen = {name: list(values) for name, values in grid.items() if values}
    return name_cells(cross(list(variants), chosen))


def cell_problems(cells: Sequence[EngineRecipe]) -> list[str]:
    """One line per cell this machine will not start (bad recipe, program refused)."""
    problems = []
    for cell in cells:
        errors = cell.validate()
        if errors:
            problems.append(f"{cell.label()}: {errors[0]}")
            continue
        try:
            executables.resolve(cell)
        except executables.LaunchRefused as exc:
            problems.append(f"{cell.label()}: {exc}")
    return problems


def sandbox_variants() -> tuple[list[EngineRecipe], str | None]:
    """The sandbox model's variants without building anything, or [] and why."""
    try:
        from sandbox.recipes import variants
    except ImportError:
        return [], "the sandbox is not part of this install"
    try:
        return variants(build=False)
    except Exception as exc:  # a half-made sandbox: one line, never a traceback
        text = str(exc).strip()
        return [], text.splitlines()[0] if text else type(exc).__name__


def refusal(address: str | None) -> str:
    """Why this dashboard may not start engines (one line)."""
    where = f"on {address}" if address and address.strip() else "on every address"
    return (
        f"This dashboard listens {where}, so whoever reaches the page could start "
        "programs on this machine: engines start from here only when it listens on "
        f"127.0.0.1, or when the operator sets {executables.ALLOW_LAUNCH_VAR}=1 "
        "(or run `python -m lib.cli matrix` in a terminal)."
    )


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _own(variants: Sequence[EngineRecipe], engine: str, setting: str) -> str:
    """The chosen variants' own value of a setting, for "empty keeps …" captions."""
    values = sorted({str(getattr(v, setting)) for v in variants if v.engine == engine})
    values = [v for v in values if v != "None"]
    return ", ".join(values) if values else "the engine's default"


def _settings_grid(chosen: Sequence[EngineRecipe]) -> dict[str, list[int]]:
    """The settings to cross, per engine among the chosen variants."""
    engines = {v.engine for v in chosen}
    grid: dict[str, list[int]] = {}
    cols = iter(st.columns(2))  # side by side, the first one on the left
    if VLLM in engines:
        grid["max_num_seqs"] = next(cols).multiselect(
            "vLLM max_num_seqs",
            list(SEQS_OPTIONS),
            key="run_matrix_seqs",
            placeholder="as the variant starts",
            help="How many sequences vLLM schedules at once; one cell per value. "
            f"Empty: {_own(chosen, VLLM, 'max_num_seqs')}.",
        )
    if LLAMA_CPP in engines:
        grid["threads"] = next(cols).multiselect(
            "llama.cpp threads",
            list(range(1, _cores() + 1)),
            key="run_matrix_threads",
            placeholder=f"as the variant starts ({_own(chosen, LLAMA_CPP, 'threads')})",
            help="CPU threads for generation and prompt processing; one cell per value.",
        )
    return grid


def _cells_list(cells: Sequence[EngineRecipe]) -> None:
    count = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
    st.markdown(f"**{count}**, in this order:")
    st.markdown("\n".join(f"{i}. {esc_md(cell.label())}" for i, cell in enumerate(cells, 1)))
    notes = [
        "One engine runs at a time: each cell's engine starts when its turn comes, is "
        "measured with the workload below, then stopped with all its children."
    ]
    if any(c.engine == LLAMA_CPP for c in cells):
        notes.append(
            "llama-cpp-python serves one request at a time (no parallel slots): at higher "
            "concurrency its requests queue."
        )
    if any(c.engine == VLLM for c in cells):
        notes.append("The sandbox's vLLM (CPU build) takes minutes to start each cell.")
    st.caption(" ".join(notes))


def matrix_inputs() -> MatrixPlan:
    """Variants, settings to cross and the cells they make; the plan to start."""
    address = st.get_option("server.address")
    if not executables.dashboard_may_launch(address):
        st.warning(esc_md(refusal(address)), icon=":material/block:")
        return MatrixPlan(may_start=False)
    variants, why = sandbox_variants()
    if not variants:
        reason = (why or "the sandbox has no variants").rstrip(".")
        hint = "" if "sandbox up" in reason else f" {SANDBOX_UP} makes them (minutes, once)."
        st.info(f"No engine variants to start: {esc_md(reason)}.{hint}")
        return MatrixPlan(may_start=False)
    by_name = {variant_name(v): v for v in variants}
    picked = st.multiselect(
        "Engine variants",
        list(by_name),
        default=[n for n, v in by_name.items() if v.engine == LLAMA_CPP][:1] or list(by_name)[:1],
        key="run_matrix_variants",
        placeholder="pick the variants to measure",
        help="The sandbox model's variants: vLLM in its stored dtype and float32, "
        "llama.cpp for each GGUF quantization.",
    )
    chosen = [by_name[n] for n in picked if n in by_name]
    if not chosen:
        return MatrixPlan(errors=["Pick at least one engine variant."])
    cells = matrix_cells(chosen, _settings_grid(chosen))
    _cells_list(cells)
    problems = cell_problems(cells)
    for problem in problems:
        st.error(esc_md(problem))
    return MatrixPlan(cells=cells, errors=problems)


def start_errors(values: Mapping[str, Any]) -> list[str]:
    """What stops a matrix from starting now, beyond its cells: lanes at the same time,
    or another matrix still running its engines (one engine alive at a time)."""
    errors = []
    if values.get("lanes_parallel"):
        errors.append("A matrix runs one engine at a time: set Lanes to “One after another”.")
    for run in jobs.active_runs():
        if any(lane.get("recipe") for lane in run["config"].get("lanes", [])):
            errors.append(
                f"Run {run['run_id']} is still running its engines; wait for it or cancel it "
                "first (one engine at a time)."
            )
            break
    return errors
