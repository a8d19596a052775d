"""Finds or makes the models the sandbox engines serve.

Order: a path given by ``--model-path`` or ``$SERVESCOPE_SANDBOX_MODEL``; else a small
Qwen2 instruct model already in the local Hugging Face cache; else a tiny random Qwen2
model generated here. Nothing is ever fetched from a hub. vLLM serves the Hugging Face
directory; llama.cpp serves GGUF files: the ones found beside the model, or f16, q8_0 and
q4_0 variants written from it (float32 GGUF by ``_hf_to_gguf.py``, then llama.cpp's own
quantizer). Generated and converted files are cached under ``.sandbox/models/`` and
rebuilt only when their recipe (the scripts, the variants, the pins) changes.
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

from sandbox.errors import SandboxError
from sandbox.paths import LLAMA_PIN, SCRIPTS_DIR, VLLM_PIN, Home

Report = Callable[[str, str], None]

TINY_NAME = "tiny-qwen2"
QUANTS = ("f16", "q8_0", "q4_0")
# Small Qwen2-architecture instruct models worth serving when a user already has them;
# the GGUF converter handles this architecture only.
HF_CANDIDATES = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2-0.5B-Instruct")
SCRIPTS = ("_gen_tiny.py", "_hf_to_gguf.py", "_quantize.py")
# Served names taken from a given path (folder name, GGUF file stems) reach the engines'
# command lines (--served-model-name, the converter's --name): letters, digits, '.', '_'
# and '-', never a leading '-', so a name can never be read as an option.
_SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class ModelSet:
    """What the engines serve: a Hugging Face directory and named GGUF files."""

    name: str
    source: str  # "generated", "hf-cache" or "path"
    hf_dir: Path | None = None
    ggufs: dict[str, Path] = field(default_factory=dict)  # served alias -> file

    def to_json(self) -> dict[str, object]:
        """A JSON-friendly summary for state.json and messages."""
        return {
            "name": self.name,
            "source": self.source,
            "hf_dir": str(self.hf_dir) if self.hf_dir else None,
            "ggufs": {alias: str(path) for alias, path in self.ggufs.items()},
        }


@dataclass
class ModelChoice:
    """Where the models will come from, decided before anything is installed."""

    kind: str  # "generated", "hf-cache" or "path"
    name: str
    hf_dir: Path | None = None
    ggufs: dict[str, Path] = field(default_factory=dict)

    def needs_conversion(self) -> bool:
        """True when GGUF files must be written from the Hugging Face weights."""
        return self.kind == "generated" or (self.hf_dir is not None and not self.ggufs)


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache (read only; nothing is downloaded into it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface")
    return Path(hf_home) / "hub"


def _snapshots(repo: str) -> list[Path]:
    repo_dir = hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():  # prefer the revision the cache calls main
        main = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if main.is_dir():
            return [main]
    snaps = [p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()]
    return sorted(snaps, key=lambda p: p.stat().st_mtime, reverse=True)


def _ggufs_in(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.gguf")) if p.is_file()}


def _served_name(name: str, given: str) -> str:
    if not _SERVED_NAME.fullmatch(name):
        raise SandboxError(
            f"model path {given}: {name[:80]!r} cannot be a served model name; rename it to"
            " letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def choose(model_path: str | None) -> ModelChoice:
    """Decide which model to serve; raises SandboxError for a path that is unusable.

    Cheap (no imports of torch, nothing written), so bad input fails before installing.
    """
    given = model_path or os.environ.get("SERVESCOPE_SANDBOX_MODEL") or ""
    if given:
        choice = _choose_path(given)
        for name in (choice.name, *choice.ggufs):
            _served_name(name, given)
        return choice
    for repo in HF_CANDIDATES:
        for snap in _snapshots(repo):
            if _is_hf_dir(snap):
                ggufs: dict[str, Path] = {}
                for gguf_snap in _snapshots(f"{repo}-GGUF"):
                    ggufs.update(_ggufs_in(gguf_snap))
                return ModelChoice("hf-cache", repo, hf_dir=snap, ggufs=ggufs)
    return ModelChoice("generated", TINY_NAME)


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


def prepare(where: Home, choice: ModelChoice, report: Report) -> ModelSet:
    """Make the files ``choice`` needs (cached) and return what the engines serve."""
    log = where.logs / "models.log"
    if choice.kind == "generated":
        target = where.models / TINY_NAME
        recipe = _recipe()
        if _cached(target, recipe):
            report("models", f"reusing {where.rel(target)} (recipe {recipe})")
        else:
            report("models", f"generating {TINY_NAME} into {where.rel(target)} (log {log.name})")
            started = time.monotonic()

            def make(tmp: Path) -> list[Path]:
                gen = [str(where.python("vllm")), str(SCRIPTS_DIR / "_gen_tiny.py")]
                _run([*gen, str(tmp / "hf")], log, f"generating {TINY_NAME}")
                _write_ggufs(where, tmp / "hf", tmp / "gguf", TINY_NAME, log)
                return [tmp / "hf" / "model.safetensors", *(tmp / "gguf").glob("*.gguf")]

            _build(where, target, recipe, make)
            report("models", f"generated {TINY_NAME} in {time.monotonic() - started:.1f} s")
        ggufs = {f"{TINY_NAME}-{q}": target / "gguf" / f"{TINY_NAME}-{q}.gguf" for q in QUANTS}
        return ModelSet(TINY_NAME, "generated", hf_dir=target / "hf", ggufs=ggufs)

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
    if choice.kind == "generated":
        return set() if _cached(where.models / TINY_NAME, _recipe()) else {"vllm", "llama"}
    return {"vllm", "llama"} if choice.needs_conversion() else set()
