"""The Run page's matrix: engine variants servescope starts, crossed with settings.

In matrix mode a lane is not an endpoint that runs already but a cell: a variant with
one combination of the settings crossed here (vLLM ``max_num_seqs``, llama.cpp
``threads``, Ollama ``num_parallel``), through ``lib.core.recipes.cross`` and
``name_cells``. The variants are the sandbox model's (``sandbox.recipes.variants(
build=False)``: read, nothing installed) and those the page's endpoints name
(``lib.endpoints.variant_recipes``): the tags an Ollama on this machine lists, and the
model a vLLM endpoint serves with its AWQ / GPTQ / FP8 siblings. Only the ones this
machine can start (``executables.resolve``: ``ollama`` / ``vllm`` on the PATH) are offered;
one caption line counts the others and says why. The run starts each cell's engine when
its turn comes, measures it with the page's workload and stops it with all its children
(lib/load/launched_lane.py): one engine at a time.

Engines start from the page only when the dashboard listens on loopback, or when the
operator set SERVESCOPE_ALLOW_ENGINE_LAUNCH=1 (``executables.dashboard_may_launch``);
otherwise the page says so in one line and offers no start. The sandbox is imported
lazily, inside functions: servescope works without it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from lib import endpoints
from lib.app.formatting import esc_md
from lib.app.session import db_key, endpoint_statuses
from lib.core.recipes import (
    DEFAULT_COMMANDS,
    LLAMA_CPP,
    OLLAMA,
    SANDBOX,
    VLLM,
    EngineRecipe,
    cross,
    name_cells,
)
from lib.core.records import LaneSpec
from lib.endpoints import variant_recipes
from lib.launch import executables
from lib.load import jobs

ENDPOINTS, MATRIX = "endpoints", "matrix"
SOURCES = {ENDPOINTS: "Endpoints that are running", MATRIX: "Engines servescope starts (matrix)"}
SEQS_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NUM_PARALLEL_OPTIONS = (1, 2, 4, 8, 16, 32)
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


def endpoint_variant_name(recipe: EngineRecipe) -> str:
    """A variant an endpoint names, as the picker lists it: "ollama ·
    qwen2.5:7b-instruct-q4_K_M (Q4_K_M)", "vllm · Qwen/Qwen2.5-7B-Instruct-AWQ"."""
    name = f"{recipe.engine} · {recipe.model}"
    variant = recipe.variant
    if variant and (recipe.engine == OLLAMA or variant.lower() not in recipe.model.lower()):
        name += f" ({variant})"
    return name


def cell_words(variants: Sequence[EngineRecipe]) -> list[str]:
    """The word that names each chosen variant in its cells' names, after the engine:
    an Ollama tag (it says model and quantization), unless two chosen recipes share the
    tag (then their variants); otherwise the variant ("bf16", "AWQ"), unless two chosen
    recipes of the engine share it over different models (then the model: its repo id,
    or for a file or folder the name clients ask for)."""
    words = []
    for recipe in variants:
        peers = [p for p in variants if p.engine == recipe.engine]
        if recipe.engine == OLLAMA:
            shared = sum(p.model == recipe.model for p in peers) > 1
            words.append(recipe.variant if shared and recipe.variant else recipe.model)
            continue
        shared = any(p.variant == recipe.variant and p.model != recipe.model for p in peers)
        if recipe.variant and not shared:
            words.append(recipe.variant)
        elif recipe.model.startswith(("/", ".", "~")):
            words.append(recipe.served())
        else:
            words.append(recipe.model)
    return words


def matrix_cells(
    variants: Sequence[EngineRecipe], grid: Mapping[str, Sequence[Any]]
) -> list[EngineRecipe]:
    """The cells: each variant once per combination of its engine's grid values (an
    empty list of values keeps the variant's own setting), with short unique names
    (``cell_words``; each cell keeps its own variant)."""
    chosen = {name: list(values) for name, values in grid.items() if values}
    cells: list[EngineRecipe] = []
    shown: list[EngineRecipe] = []
    for variant, word in zip(variants, cell_words(variants), strict=True):
        for cell in cross([variant], chosen):
            cells.append(cell)
            shown.append(dataclasses.replace(cell, variant=word))
    named = name_cells(shown)
    return [
        dataclasses.replace(cell, name=name.name) for cell, name in zip(cells, named, strict=True)
    ]


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


_NOUNS = {OLLAMA: ("Ollama tag", "Ollama tags"), VLLM: ("vLLM model", "vLLM models")}


def _left_out_reason(recipe: EngineRecipe) -> tuple[str, str] | None:
    """Why this machine will not start an endpoint's variant, as (singular, plural)
    predicates; None when it will."""
    errors = recipe.validate()
    if errors:
        return (f"cannot start here: {errors[0]}",) * 2
    try:
        executables.resolve(recipe)
    except executables.LaunchRefused as exc:
        command = DEFAULT_COMMANDS[recipe.engine]
        if not recipe.executable and shutil.which(command) is None:
            where = f"the `{command}` command on the PATH"
            return f"needs {where}", f"need {where}"
        return (f"cannot start here: {exc}",) * 2
    return None


def left_out_line(left: Mapping[tuple[str, tuple[str, str]], int]) -> str | None:
    """One line: how many variants were left out and why, per engine and reason."""
    parts = []
    for (engine, (one, many)), count in left.items():
        single, plural = _NOUNS.get(engine, (f"{engine} model", f"{engine} models"))
        parts.append(f"{count} {single if count == 1 else plural} {one if count == 1 else many}")
    return f"Not offered: {'; '.join(parts)}." if parts else None


_REMOTE = (
    "is listed by an Ollama on another machine",
    "are listed by an Ollama on another machine",
)


def endpoint_variants(
    statuses: Sequence[endpoints.EndpointStatus],
) -> tuple[dict[str, EngineRecipe], str | None]:
    """The variants the page's endpoints name that this machine can start, by picker
    name, and one line on those left out (None when none were).

    An Ollama's tags count only when it runs here (``ollama serve`` started for a cell
    reads this machine's model store); a vLLM endpoint gives its served model and its
    siblings; the sandbox's own endpoints are left to the sandbox's variants."""
    offered: dict[str, EngineRecipe] = {}
    seen: set[str] = set()
    left: Counter[tuple[str, tuple[str, str]]] = Counter()
    for status in statuses:
        if not status.reachable or status.endpoint.source == "sandbox":
            continue
        if status.engine == OLLAMA:
            recipes = variant_recipes.ollama_recipes(status.models)
            remote = not variant_recipes.is_loopback(status.base_url)
        elif status.engine == VLLM and (served := endpoints.served_model(status)) is not None:
            recipes = variant_recipes.vllm_recipes(served, status.base_url)
            remote = False
        else:
            continue
        for recipe in recipes:
            name = endpoint_variant_name(recipe)
            if name in seen:
                continue
            seen.add(name)
            why = _REMOTE if remote else _left_out_reason(recipe)
            if why is None:
                offered[name] = recipe
            else:
                left[(recipe.engine, why)] += 1
    return offered, left_out_line(left)


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
    # Side by side, the first one on the left.
    cols = iter(st.columns(max(2, len(engines & {VLLM, LLAMA_CPP, OLLAMA}))))
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
    if OLLAMA in engines:
        grid["num_parallel"] = next(cols).multiselect(
            "Ollama OLLAMA_NUM_PARALLEL",
            list(NUM_PARALLEL_OPTIONS),
            key="run_matrix_num_parallel",
            placeholder=f"as the variant starts ({_own(chosen, OLLAMA, 'num_parallel')})",
            help="How many requests `ollama serve` answers at once per model; one cell per value.",
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
    if any(c.engine == VLLM and c.executable == SANDBOX for c in cells):
        notes.append("The sandbox's vLLM (CPU build) takes minutes to start each cell.")
    if any(c.engine == VLLM and c.executable != SANDBOX for c in cells):
        notes.append(
            "vLLM downloads a Hub model when its cell starts; siblings are named after the "
            "publisher's usual pattern, and one whose repository does not exist fails its "
            "cell with vLLM's reason. Each cell asks for 90% of the GPU's memory: stop a vLLM "
            "that holds the same GPU first."
        )
    if any(c.engine == OLLAMA for c in cells):
        notes.append(
            "Each Ollama cell runs its own `ollama serve` on a free port, with this user's "
            "model store."
        )
    st.caption(" ".join(notes))


def matrix_inputs(statuses: Sequence[endpoints.EndpointStatus] | None = None) -> MatrixPlan:
    """Variants, settings to cross and the cells they make; the plan to start.

    ``statuses``: the endpoints' probes the page has already; None reads the shared,
    cached ones (``session.endpoint_statuses``: the sidebar probed them, no second probe).
    """
    address = st.get_option("server.address")
    if not executables.dashboard_may_launch(address):
        st.warning(esc_md(refusal(address)), icon=":material/block:")
        return MatrixPlan(may_start=False)
    variants, why = sandbox_variants()
    if statuses is None:
        statuses = endpoint_statuses(db_key())
    offered, left_out = endpoint_variants(statuses)
    reason = (why or "the sandbox has no variants").rstrip(".")
    hint = "" if "sandbox up" in reason else f" {SANDBOX_UP} makes them (minutes, once)."
    by_name = {variant_name(v): v for v in variants}
    for name, recipe in offered.items():
        by_name.setdefault(name, recipe)
    if not by_name:
        st.info(f"No engine variants to start: {esc_md(reason)}.{hint}")
        if left_out:
            st.caption(esc_md(left_out))
        return MatrixPlan(may_start=False)
    picked = st.multiselect(
        "Engine variants",
        list(by_name),
        default=[n for n, v in by_name.items() if v.engine == LLAMA_CPP][:1] or list(by_name)[:1],
        key="run_matrix_variants",
        placeholder="pick the variants to measure",
        help="The sandbox model's variants (vLLM in its stored dtype and float32, llama.cpp "
        "for each GGUF quantization), then the tags of an Ollama on this machine and the "
        "model a vLLM endpoint serves with its AWQ, GPTQ and FP8 siblings.",
    )
    if not variants:
        st.caption(f"The sandbox's variants: {esc_md(reason)}.{hint}")
    if left_out:
        st.caption(esc_md(left_out))
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
    for run in jobs.active_runs(local_only=True):
        if any(lane.get("recipe") for lane in run["config"].get("lanes", [])):
            errors.append(
                f"Run {run['run_id']} is still running its engines; wait for it or cancel it "
                "first (one engine at a time)."
            )
            break
    return errors
