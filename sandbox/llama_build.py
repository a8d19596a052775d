"""How llama-cpp-python is compiled for the sandbox: portably, never for the build machine.

llama-cpp-python builds llama.cpp from source, and by default with ``GGML_NATIVE`` (as
``-march=native``). On an Intel CPU that advertises AMX, that build routes every quantized
GGUF through ggml's AMX kernels, whose ``ldtilecfg`` faults at the first decode in the VMs
measured here (f16 is spared), and a wheel built natively on one machine may not run on
another. So the sandbox builds for a fixed instruction-set level instead:

- ``x86-64-v3`` (AVX2, FMA, F16C, BMI2): every x86-64 CPU since about 2013-2015; ggml's
  AVX2 kernels and its Q4_0 weight repacking stay on. No AVX-512, no AMX.
- ``x86-64-v2`` (SSE4.2 only) on an x86-64 CPU without AVX2.
- other architectures: llama.cpp's own portable defaults (``GGML_NATIVE=OFF``).

The wheel is built once per level into a cache of servescope's own (pip's wheel cache keys
on the sdist alone, so it would hand back a wheel built with other flags), and installed
from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

LLAMA_VERSION = "0.3.36"

_OFF_ALWAYS = ("AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX512", "AVX512_VBMI", "AVX512_VNNI")
_OFF_ALWAYS += ("AVX512_BF16", "AVX_VNNI")
_V3 = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")
_V3_FLAGS = ("avx2", "fma", "f16c", "bmi2")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_level(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The instruction-set level the sandbox builds llama.cpp for on this machine."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return f"generic-{machine}"
    flags = cpu_flags() if flags is None else flags
    return "x86-64-v3" if set(_V3_FLAGS) <= flags else "x86-64-v2"


def cmake_args(level: str) -> list[str]:
    """The CMake arguments for ``level`` (see the module docstring)."""
    args = ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    if not level.startswith("x86-64"):
        return args
    enabled = _V3 if level == "x86-64-v3" else ("SSE42",)
    args += [f"-DGGML_{name}=ON" for name in enabled]
    args += [f"-DGGML_{name}=OFF" for name in _V3 if name not in enabled]
    args += [f"-DGGML_{name}=OFF" for name in _OFF_ALWAYS]
    return args


def build_key(level: str) -> str:
    """Names one build: the version, the level and a hash of its CMake arguments."""
    digest = hashlib.sha256(" ".join(cmake_args(level)).encode()).hexdigest()[:10]
    return f"llama-cpp-python-{LLAMA_VERSION}-{level}-{digest}"


def wheel_cache() -> Path:
    """Where built wheels are kept across clones (``$SERVESCOPE_WHEEL_CACHE`` moves it)."""
    override = os.environ.get("SERVESCOPE_WHEEL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "servescope" / "wheels"


def cached_wheel(level: str) -> Path | None:
    """The wheel built earlier for ``level``, if its build record is complete."""
    directory = wheel_cache() / build_key(level)
    try:
        record = json.loads((directory / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wheel = directory / str(record.get("wheel", ""))
    return wheel if wheel.is_file() and wheel.suffix == ".whl" else None


def build_env(level: str) -> dict[str, str]:
    """Environment additions for pip while it builds the wheel."""
    return {"CMAKE_ARGS": " ".join(cmake_args(level)), "FORCE_CMAKE": "1"}


def record_build(directory: Path, level: str, seconds: float) -> Path:
    """Write ``build.json`` beside the one wheel pip left in ``directory``; returns it."""
    wheels = sorted(directory.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(f"expected one llama_cpp_python wheel in {directory}")
    record = {
        "wheel": wheels[0].name,
        "level": level,
        "cmake_args": cmake_args(level),
        "build_s": round(seconds, 1),
        "machine": platform.machine(),
    }
    (directory / "build.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return wheels[0]
