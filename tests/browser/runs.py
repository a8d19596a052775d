"""Runs made with the CLI against the scripted engine pair, for the browser tests that
open a finished run's Results page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.browser.engines import OLLAMA_MODEL, VLLM_MODEL

ROOT = Path(__file__).resolve().parents[2]


def rate_run(urls: dict[str, str], db: Path, out: Path, label: str, *extra: str) -> str:
    """Both lanes at 2 and 8 req/s, evenly spaced, six requests of 8 tokens a level, plus
    `extra` CLI options (a target, say); the run id."""
    command = [sys.executable, "-m", "lib.cli", "run", "--quiet"]
    command += ["--lane", "ollama", urls["ollama"], OLLAMA_MODEL]
    command += ["--lane", "openai", urls["vllm"], VLLM_MODEL]
    command += ["--prompt", "인공지능 기술에 관한 짧은 뉴스 기사를 써 주세요.", "--rate", "2,8"]
    command += ["--arrival", "constant", "--requests", "6", "--max-tokens", "8", *extra]
    command += ["--label", label, "--db", str(db), "--output-json", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=120)
    return json.loads(out.read_text())["run_id"]
