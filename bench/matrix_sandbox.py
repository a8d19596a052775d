"""The sandbox matrix: every variant of the sandbox model started, measured and stopped by
`python -m lib.cli matrix`, and the figures BENCHMARKS.md quotes.

    .venv/bin/python bench/matrix_sandbox.py [--set max_num_seqs=1,4] [--requests 8]
    .venv/bin/python bench/matrix_sandbox.py --recipes FILE.json --set parallel=1,4

(`--recipes`: your own recipes instead of the sandbox's variants, e.g. llama-server built
from the same llama.cpp, allowed with $SERVESCOPE_ENGINE_EXECUTABLES.)

Runs `matrix --variants sandbox --concurrency 1,4` (the sandbox's own engines need not
be up; their ports are avoided), then prints one Markdown row per cell: start-up time,
the memory row (each phase's resident MiB), the peak, output throughput and TTFT p50 at
each level, and whether anything was left running. A last line checks that no process
carrying a matrix token is alive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "한국어로 두 문장으로 자기소개를 해 주세요."
SHORT = {
    "process started": "start",
    "weights loaded": "weights",
    "KV cache reserved": "KV cache",
    "ready": "ready",
}


def memory_row(process: dict[str, Any]) -> str:
    steps = [p for p in process["phases"] if p["phase"] in SHORT]
    return " → ".join(f"{p['rss_mib']} ({SHORT[p['phase']]} {p['at_s']:.0f} s)" for p in steps)


def left_running() -> list[int]:
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if "SERVESCOPE_ENGINE_TOKEN" in proc.environ():
                left.append(proc.pid)
        except psutil.Error:
            continue
    return left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="as matrix --set")
    parser.add_argument("--recipes", help="a recipes file instead of the sandbox's variants")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "matrix.json"
        cmd = [
            sys.executable, "-m", "lib.cli", "matrix",
            "--concurrency", args.concurrency, "--requests", str(args.requests),
            "--max-tokens", str(args.max_tokens), "--temperature", "0", "--prompt", PROMPT,
            "--db", str(Path(tmp) / "db.sqlite"), "--output-json", str(out), "--quiet",
        ]  # fmt: skip
        cmd += ["--recipes", args.recipes] if args.recipes else ["--variants", "sandbox"]
        for setting in args.set:
            cmd += ["--set", setting]
        started = time.monotonic()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if not out.exists():
            print(result.stderr[-3000:], file=sys.stderr)
            return 1
        doc = json.loads(out.read_text(encoding="utf-8"))
    levels = args.concurrency.split(",")
    head = "| cell | ready (s) | memory row, MiB (phase, s from spawn) | peak MiB |"
    head += "".join(f" tok/s c={c} | TTFT p50 c={c} (ms) |" for c in levels) + " left |"
    print(head)
    print("|" + "---|" * (5 + 2 * len(levels)))
    for lane in doc["lanes"]:
        process = lane["engine_process"]
        row = f"| {lane['name']} | {process['ready_s']} | {memory_row(process)} "
        row += f"| {process['peak_memory_mib']} |"
        for level in lane["levels"]:
            row += f" {level['output_throughput']:.1f} | {level['ttft_ms']['p50']:.0f} |"
        row += f" {len(process['leftover_pids'])} |"
        print(row)
    print(f"\nmatrix wall time {wall:.0f} s, exit {result.returncode}; ", end="")
    print(f"engine processes alive afterwards: {left_running()}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
