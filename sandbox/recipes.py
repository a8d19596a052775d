"""The sandbox's engine variants as servescope recipes, and how to start its engines.

``variants()`` lists the sandbox model's variants as ``lib.core.recipes.EngineRecipe``:
vLLM serving the Hugging Face copy in its stored dtype and in float32, and llama.cpp
serving each GGUF file (the shipped Q4_K_M and its q8_0 / q4_0 requantizations). Each
uses ``executable="sandbox"``: lib/launch asks ``program()`` here for the engine venv's
Python, the server module it runs and the environment the sandbox gives that engine,
so a recipe never carries a path to an interpreter.

``variants(build=True)`` installs the engines and makes the models first (as ``up``
does, minutes on a fresh machine); ``build=False`` (the dashboard) only reads what an
earlier ``up`` or ``models`` left and returns [] with the reason when nothing is there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lib.core.recipes import LLAMA_CPP, SANDBOX, VLLM, EngineRecipe
from sandbox import cpu_layout, engines
from sandbox.errors import SandboxError
from sandbox.paths import Home, home

# Engine (recipe name) -> sandbox venv, and the server module its Python runs.
VENVS = {VLLM: "vllm", LLAMA_CPP: "llama"}
MODULES = {VLLM: "vllm.entrypoints.openai.api_server", LLAMA_CPP: "llama_cpp.server"}
# A matrix cell's KV cache on CPU: as `up` gives vLLM (engines.vllm_launch).
VLLM_KV_CACHE_GIB = "1"


@dataclass
class Program:
    """How to start one sandbox engine: its Python, module and environment."""

    python: Path
    module: str
    env: dict[str, str] = field(default_factory=dict)
    drop_env: frozenset[str] = frozenset()
    cwd: Path | None = None


def program(engine: str, where: Home | None = None) -> Program:
    """The sandbox's install of ``engine``; SandboxError when it is not installed."""
    where = where or home()
    if engine not in VENVS:
        raise SandboxError(f"the sandbox has no {engine} (it runs {', '.join(VENVS)})")
    python = where.python(VENVS[engine])
    if not python.exists():
        raise SandboxError(f"the sandbox's {engine} is not installed: run `python -m sandbox up`")
    if engine == VLLM:
        env = {"VLLM_CPU_KVCACHE_SPACE": VLLM_KV_CACHE_GIB}
        cores = cpu_layout.vllm_layout().engine
        if cores:
            env["OMP_NUM_THREADS"] = str(len(cores))
        return Program(python, MODULES[engine], env, cwd=where.root)
    return Program(python, MODULES[engine], drop_env=engines.LLAMA_SETTINGS_ENV, cwd=where.root)


def after_ready(engine: str, pid: int) -> dict[str, list[int]] | None:
    """What ``up`` does once an engine answers: vLLM's processes pinned to their cores
    (sandbox.cpu_layout), so a matrix cell runs as the sandbox's own engine does."""
    return cpu_layout.pin_vllm(pid) if engine == VLLM else None


Report = Callable[[str, str], None]


def variants(
    engines_wanted: Sequence[str] = (VLLM, LLAMA_CPP),
    build: bool = True,
    report: Report | None = None,
) -> tuple[list[EngineRecipe], str | None]:
    """(the sandbox model's variants as recipes, why there are none or None)."""
    from sandbox.install import SPECS, ensure_installed, is_installed
    from sandbox.models import choose, prepare

    where = home()
    say = report or (lambda phase, message: None)
    try:
        choice = choose(None, None, where)
        needed = [VENVS[e] for e in engines_wanted if e in VENVS]
        if build:
            ensure_installed(where, needed, say)
        elif not all(is_installed(where, SPECS[n]) for n in needed):
            return [], "the sandbox engines are not installed yet: run `python -m sandbox up`"
        if not build and not _models_made(where):
            return [], "the sandbox model is not made yet: run `python -m sandbox up`"
        models = prepare(where, choice, say)
    except SandboxError as exc:
        return [], exc.message
    recipes: list[EngineRecipe] = []
    if VLLM in engines_wanted and models.hf_dir is not None:
        stored = models.vllm_dtype
        for dtype in dict.fromkeys((stored, "float32")):
            short = "bf16" if dtype == "bfloat16" else "f32"
            recipes.append(
                EngineRecipe(
                    engine=VLLM,
                    model=str(models.hf_dir),
                    executable=SANDBOX,
                    variant=short,
                    served_model=f"{models.name.rsplit('-to-', 1)[0]}-to-{short}",
                    dtype=dtype,
                    max_model_len=engines.MAX_MODEL_LEN,
                    ready_timeout_s=900.0,
                )
            )
    if LLAMA_CPP in engines_wanted:
        for alias, path in models.ggufs.items():
            recipes.append(
                EngineRecipe(
                    engine=LLAMA_CPP,
                    model=str(path),
                    executable=SANDBOX,
                    variant=_quant(alias),
                    served_model=alias,
                    ctx_size=engines.MAX_MODEL_LEN,
                    threads=cpu_layout.llama_threads(),
                    ready_timeout_s=300.0,
                )
            )
    return recipes, None if recipes else "the sandbox model has no variant for these engines"


def _quant(alias: str) -> str:
    """ "qwen2.5-coder-0.5b-q4_k_m-to-q8_0" -> "Q8_0"; the shipped file's own quant."""
    tail = alias.rsplit("-to-", 1)[-1] if "-to-" in alias else alias.rsplit("-", 1)[-1]
    if "-to-" not in alias and "q4_k_m" in alias.lower():
        tail = "q4_k_m"
    return tail.upper()


def _models_made(where: Home) -> bool:
    """True when an earlier ``up``/``models`` left model files (cheap: no build)."""
    return any(where.models.glob("*/recipe.json")) or any(where.models.glob("*/*/recipe.json"))
