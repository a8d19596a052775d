"""What a recipe starts: the argument list (never a shell string) on loopback, the
environment, and which programs are allowed at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lib.core.recipes import LLAMA_CPP, OLLAMA, VLLM, EngineRecipe
from lib.launch import command
from lib.launch.executables import (
    ALLOW_LAUNCH_VAR,
    OPERATOR_VAR,
    LaunchRefused,
    Program,
    dashboard_may_launch,
    resolve,
)


def test_vllm_serve_gets_every_setting_as_its_own_flag() -> None:
    recipe = EngineRecipe(
        engine=VLLM,
        model="Qwen/Qwen2.5-7B-Instruct-AWQ",
        quantization="awq",
        max_num_seqs=8,
        gpu_memory_utilization=0.9,
        extra_args=["--enforce-eager"],
        env={"VLLM_LOGGING_LEVEL": "DEBUG"},
    )
    args, env = command.build(recipe, Program(Path("/usr/bin/vllm")), 8123)
    assert args[:3] == ["/usr/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "8123"
    assert args[args.index("--quantization") + 1] == "awq"
    assert args[args.index("--max-num-seqs") + 1] == "8"
    assert args[-1] == "--enforce-eager" and env == {"VLLM_LOGGING_LEVEL": "DEBUG"}
    assert command.base_url(recipe, 8123) == "http://127.0.0.1:8123/v1"


def test_the_sandbox_flavours_run_the_engine_module() -> None:
    program = Program(Path("/venv/bin/python"), module="vllm.entrypoints.openai.api_server")
    recipe = EngineRecipe(engine=VLLM, model="/m/hf", served_model="m-bf16", dtype="bfloat16")
    args, _ = command.build(recipe, program, 9000)
    assert args[:5] == ["/venv/bin/python", "-m", program.module, "--model", "/m/hf"]
    assert args[args.index("--served-model-name") + 1] == "m-bf16"

    llama = EngineRecipe(engine=LLAMA_CPP, model="/m/q8.gguf", threads=2)
    args, _ = command.build(llama, Program(Path("/py"), module="llama_cpp.server"), 9001)
    assert args[args.index("--model_alias") + 1] == "q8"
    assert args[args.index("--interrupt_requests") + 1] == "false"
    assert args[args.index("--n_threads") + 1] == "2"
    with pytest.raises(LaunchRefused, match="parallel slots need llama-server"):
        command.build(
            EngineRecipe(engine=LLAMA_CPP, model="/m/q8.gguf", parallel=4),
            Program(Path("/py"), module="llama_cpp.server"),
            9001,
        )


def test_llama_server_and_ollama() -> None:
    llama = EngineRecipe(engine=LLAMA_CPP, model="/m/q4.gguf", parallel=4, ctx_size=4096)
    args, _ = command.build(llama, Program(Path("/bin/llama-server")), 7000)
    assert args[args.index("--parallel") + 1] == "4" and "--metrics" in args
    ollama = EngineRecipe(
        engine=OLLAMA,
        model="qwen2.5:7b",
        num_parallel=4,
        kv_cache_type="q8_0",
        flash_attention=True,
    )
    args, env = command.build(ollama, Program(Path("/bin/ollama")), 7001)
    assert args == ["/bin/ollama", "serve"]
    assert env == {
        "OLLAMA_HOST": "127.0.0.1:7001",
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_FLASH_ATTENTION": "1",
    }
    assert command.base_url(ollama, 7001) == "http://127.0.0.1:7001"


def test_only_allowed_programs_are_started(tmp_path: Path) -> None:
    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    environ = {"PATH": str(tmp_path)}
    # The usual command, found on the PATH by its bare name.
    assert resolve(EngineRecipe(engine=VLLM, model="m"), environ).path == fake
    for executable, message in (
        ("bash", "not an engine command"),
        ("llama-server", "not on the PATH"),
        (str(fake), OPERATOR_VAR),  # a path, even one named vllm, needs the operator's list
    ):
        with pytest.raises(LaunchRefused, match=message):
            resolve(EngineRecipe(engine=VLLM, model="m", executable=executable), environ)
    allowed = {**environ, OPERATOR_VAR: os.pathsep.join(["/nowhere", str(fake)])}
    assert resolve(EngineRecipe(engine=VLLM, model="m", executable=str(fake)), allowed).path == fake


def test_the_dashboard_launches_only_on_loopback_or_when_allowed() -> None:
    assert dashboard_may_launch("127.0.0.1", {})
    assert dashboard_may_launch("localhost", {})
    assert not dashboard_may_launch("0.0.0.0", {})
    assert not dashboard_may_launch(None, {})  # Streamlit's default listens everywhere
    assert dashboard_may_launch("0.0.0.0", {ALLOW_LAUNCH_VAR: "1"})


def test_memory_phases_from_real_log_lines() -> None:
    from lib.launch.phases import KV_CACHE, WEIGHTS, phases_in

    vllm = [
        "(Worker pid=25069) INFO 12-03 09:43:33 [default_loader.py:501] "
        "Loading weights took 13.54 seconds",
        "(EngineCore pid=25059) INFO 12-03 09:44:27 [kv_cache_utils.py:2327] CPU KV cache size: "
        "87,296 tokens, Maximum concurrency for 1,024 tokens per request: 85.25x",
    ]
    llama_server = [
        "0.00.799.775 I cmn          init: llama threadpool init, n_threads = 1",
        "0.00.941.585 I srv    load_model: initializing, n_slots = 1, n_ctx_slot = 4096, "
        "kv_unified = 'false'",
    ]
    python_flavour = [
        "load_tensors:   CPU_Mapped model buffer size =   373.71 MiB",
        "llama_kv_cache:        CPU KV buffer size =    12.00 MiB",
    ]
    assert phases_in(VLLM, vllm, set()) == [WEIGHTS, KV_CACHE]
    assert phases_in(LLAMA_CPP, llama_server, set()) == [WEIGHTS, KV_CACHE]
    assert phases_in(LLAMA_CPP, python_flavour, {WEIGHTS}) == [KV_CACHE]
