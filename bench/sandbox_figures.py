"""Figures for the sandbox engines: start-up times, vLLM batching, GGUF variant speed.

    python bench/sandbox_figures.py [--keep-running] [--json PATH]

Restarts the sandbox (``python -m sandbox down`` then ``up``) to time each engine's start,
then measures with the benchmark CLI (``python -m lib.cli run``):

- vLLM output throughput at concurrency 1 and 8 (256 tokens with ignore_eos, 32 requests
  per level), and their ratio (continuous batching);
- each llama.cpp GGUF variant at concurrency 1 (TTFT and end-to-end latency from the CLI).
  llama-cpp-python streams carry no token usage, so tokens/s of each variant is taken
  from non-streamed requests: usage.completion_tokens / wall time, prompt included.

Prints a markdown table (the one in BENCHMARKS.md, "Sandbox engines") and stops the
engines at the end unless --keep-running. Exit status: 0 done, 2 the sandbox or the CLI
failed (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Write a long story about a river that flows through a quiet town."
VLLM_REQUESTS = 32
VLLM_MAX_TOKENS = 256
GGUF_REQUESTS = 8
GGUF_MAX_TOKENS = 128


class Failed(Exception):
    """A step failed; the message is printed on one line."""


def sandbox(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sandbox ARGS``; progress lines go to stderr as they come."""
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise Failed(f"python -m sandbox {' '.join(args)} exited {result.returncode}")
    return result


def cli(workdir: Path, *args: str) -> dict[str, Any]:
    """Run the benchmark CLI and return its output JSON."""
    out = workdir / f"run-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "lib.cli", "run", *args, "--quiet"]
    command += ["--db", str(workdir / "bench.db"), "--output-json", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        raise Failed(f"lib.cli run exited {result.returncode}: {tail[0]}")
    return json.loads(out.read_text(encoding="utf-8"))


def usage_tokens_per_s(base_url: str, model: str, n: int) -> float:
    """Mean of completion_tokens / wall time over ``n`` non-streamed chat requests."""
    rates = []
    with httpx.Client(timeout=300) as client:
        for i in range(n + 1):
            started = time.perf_counter()
            response = client.post(
                f"{base_url}/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "max_tokens": GGUF_MAX_TOKENS,
                    "temperature": 0,
                    "seed": 0,
                },
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i == 0:
                continue  # the first request after a model switch loads the file
            rates.append(response.json()["usage"]["completion_tokens"] / elapsed)
    return sum(rates) / len(rates)


def measure(workdir: Path) -> dict[str, Any]:
    """Restart the sandbox and take every figure."""
    sandbox("down", timeout=120)
    started = time.monotonic()
    sandbox("up")
    up_s = time.monotonic() - started
    status = json.loads(sandbox("status", "--json", timeout=60).stdout)["engines"]
    vllm = next(e for e in status if e["name"].startswith("vllm"))
    llama = next(e for e in status if e["name"].startswith("llama"))

    run = cli(
        workdir,
        *("--engine", "openai", "--base-url", vllm["base_url"], "--model", vllm["models"][0]),
        *("--prompt", PROMPT, "--concurrency", "1,8", "--requests", str(VLLM_REQUESTS)),
        *("--warmup", "2", "--max-tokens", str(VLLM_MAX_TOKENS), "--ignore-eos"),
        *("--temperature", "0", "--seed", "0"),
    )
    levels = {lv["concurrency"]: lv for lv in run["lanes"][0]["levels"]}

    lanes: list[str] = []
    for model in llama["models"]:
        lanes += ["--lane", "openai", llama["base_url"], model]
    gguf_run = cli(
        workdir,
        *lanes,
        *("--prompt", PROMPT, "--concurrency", "1", "--requests", str(GGUF_REQUESTS)),
        *("--warmup", "1", "--max-tokens", str(GGUF_MAX_TOKENS), "--temperature", "0"),
    )
    variants = []
    for lane in gguf_run["lanes"]:
        level = lane["levels"][0]
        variants.append(
            {
                "model": lane["model"],
                "size_mb": _gguf_size_mb(lane["model"]),
                "ttft_p50_ms": level["ttft_ms"]["p50"],
                "e2el_p50_ms": level["e2el_ms"]["p50"],
                "completed": level["completed"],
                "tokens_per_s": usage_tokens_per_s(llama["base_url"], lane["model"], 4),
            }
        )
    vllm_single = usage_tokens_per_s(vllm["base_url"], vllm["models"][0], 4)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "up_s": up_s,
        "startup_s": {e["name"]: e["startup_s"] for e in status},
        "vllm": {
            "model": vllm["models"][0],
            "c1_output_throughput": levels[1]["output_throughput"],
            "c8_output_throughput": levels[8]["output_throughput"],
            "ratio": levels[8]["output_throughput"] / levels[1]["output_throughput"],
            "c1_tpot_p50_ms": levels[1]["tpot_ms"]["p50"],
            "c8_tpot_p50_ms": levels[8]["tpot_ms"]["p50"],
            "c1_ttft_p50_ms": levels[1]["ttft_ms"]["p50"],
            "c8_ttft_p50_ms": levels[8]["ttft_ms"]["p50"],
            "nonstream_tokens_per_s": vllm_single,
        },
        "gguf": variants,
    }


def _gguf_size_mb(alias: str) -> float | None:
    try:
        home = Path(os.environ.get("SERVESCOPE_SANDBOX_HOME") or REPO / ".sandbox")
        state = json.loads((home / "state.json").read_text(encoding="utf-8"))
        return Path(state["model"]["ggufs"][alias]).stat().st_size / 1e6
    except (OSError, KeyError, ValueError):
        return None


def table(figures: dict[str, Any]) -> str:
    """The figures as markdown."""
    v = figures["vllm"]
    start = figures["startup_s"]
    lines = [
        f"Machine: {figures['machine']}; load average at the end "
        + ", ".join(f"{x:.1f}" for x in figures["load_average"]),
        "",
        "| engine | start-up (s) |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in start.items()),
        f"| whole `python -m sandbox up` (installed, models cached) | {figures['up_s']:.1f} |",
        "",
        f"vLLM `{v['model']}`, {VLLM_REQUESTS} requests per level, {VLLM_MAX_TOKENS} tokens "
        "each (ignore_eos), through `python -m lib.cli run`:",
        "",
        "| concurrency | output tok/s | TTFT p50 (ms) | TPOT p50 (ms) |",
        "| ---: | ---: | ---: | ---: |",
        f"| 1 | {v['c1_output_throughput']:.0f} | {v['c1_ttft_p50_ms']:.1f} "
        f"| {v['c1_tpot_p50_ms']:.2f} |",
        f"| 8 | {v['c8_output_throughput']:.0f} | {v['c8_ttft_p50_ms']:.1f} "
        f"| {v['c8_tpot_p50_ms']:.2f} |",
        f"| ratio 8 / 1 | {v['ratio']:.2f}x | | |",
        "",
        f"GGUF variants on llama.cpp, concurrency 1, {GGUF_MAX_TOKENS} tokens; tokens/s from "
        "non-streamed requests (usage / wall time; vLLM for comparison):",
        "",
        "| model | file (MB) | tokens/s | TTFT p50 (ms) | E2E p50 (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for g in figures["gguf"]:
        size = f"{g['size_mb']:.1f}" if g["size_mb"] is not None else "?"
        lines.append(
            f"| {g['model']} | {size} | {g['tokens_per_s']:.0f} | {g['ttft_p50_ms']:.1f} "
            f"| {g['e2el_p50_ms']:.1f} |"
        )
    lines.append(f"| {v['model']} (vLLM) | | {v['nonstream_tokens_per_s']:.0f} | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-running", action="store_true", help="leave the engines up")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="sandbox-figures-") as tmp:
            figures = measure(Path(tmp))
    except (Failed, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        print(f"sandbox_figures: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep_running:
            subprocess.run([sys.executable, "-m", "sandbox", "down"], cwd=REPO, check=False)
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
