"""A recipe's argument list and environment: what exactly is started, on loopback.

The argument list is built from the recipe's fields (each setting becomes the engine's own
flag), then its ``extra_args`` follow; it is handed to the operating system as a list,
never through a shell. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

from lib.core.recipes import LLAMA_CPP, OLLAMA, VLLM, EngineRecipe
from lib.launch.executables import LaunchRefused, Program

HOST = "127.0.0.1"

_VLLM_FLAGS = (
    ("quantization", "--quantization"),
    ("dtype", "--dtype"),
    ("max_model_len", "--max-model-len"),
    ("gpu_memory_utilization", "--gpu-memory-utilization"),
    ("max_num_seqs", "--max-num-seqs"),
    ("tensor_parallel_size", "--tensor-parallel-size"),
)
_LLAMA_SERVER_FLAGS = (
    ("parallel", "--parallel"),
    ("ctx_size", "--ctx-size"),
    ("threads", "--threads"),
)
_OLLAMA_ENV = (
    ("num_parallel", "OLLAMA_NUM_PARALLEL"),
    ("max_queue", "OLLAMA_MAX_QUEUE"),
    ("kv_cache_type", "OLLAMA_KV_CACHE_TYPE"),
    ("flash_attention", "OLLAMA_FLASH_ATTENTION"),
)


def base_url(recipe: EngineRecipe, port: int) -> str:
    """The URL a lane uses for the started engine (OpenAI servers under /v1)."""
    root = f"http://{HOST}:{port}"
    return root if recipe.engine == OLLAMA else f"{root}/v1"


def build(recipe: EngineRecipe, program: Program, port: int) -> tuple[list[str], dict[str, str]]:
    """(argument list, environment additions) that start ``recipe`` on ``port``."""
    if recipe.engine == VLLM:
        args, env = _vllm(recipe, program, port), {}
    elif recipe.engine == LLAMA_CPP:
        args, env = _llama(recipe, program, port), {}
    else:
        args, env = [str(program.path), "serve"], _ollama_env(recipe, port)
    return [*args, *recipe.extra_args], {**program.env, **recipe.env, **env}


def _vllm(recipe: EngineRecipe, program: Program, port: int) -> list[str]:
    if program.module:
        args = [str(program.path), "-m", program.module, "--model", recipe.model]
    else:
        args = [str(program.path), "serve", recipe.model]
    args += ["--host", HOST, "--port", str(port), "--served-model-name", recipe.served()]
    for name, flag in _VLLM_FLAGS:
        value = getattr(recipe, name)
        if value is not None:
            args += [flag, str(value)]
    return args


def _llama(recipe: EngineRecipe, program: Program, port: int) -> list[str]:
    if program.module:  # llama-cpp-python's server: its own flag names
        if recipe.parallel is not None and recipe.parallel > 1:
            raise LaunchRefused(
                "llama-cpp-python serves one request at a time: parallel slots need "
                "llama-server (set executable to llama-server)"
            )
        args = [str(program.path), "-m", program.module, "--model", recipe.model]
        args += ["--model_alias", recipe.served(), "--host", HOST, "--port", str(port)]
        # Its default cancels a running stream when another request arrives.
        args += ["--interrupt_requests", "false", "--verbose", "true"]
        if recipe.ctx_size is not None:
            args += ["--n_ctx", str(recipe.ctx_size)]
        if recipe.threads is not None:
            args += ["--n_threads", str(recipe.threads), "--n_threads_batch", str(recipe.threads)]
        return args
    args = [str(program.path), "--model", recipe.model, "--alias", recipe.served()]
    args += ["--host", HOST, "--port", str(port), "--metrics"]
    for name, flag in _LLAMA_SERVER_FLAGS:
        value = getattr(recipe, name)
        if value is not None:
            args += [flag, str(value)]
    return args


def _ollama_env(recipe: EngineRecipe, port: int) -> dict[str, str]:
    env = {"OLLAMA_HOST": f"{HOST}:{port}"}
    for name, var in _OLLAMA_ENV:
        value = getattr(recipe, name)
        if value is not None:
            env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env
