"""servescope's capacity search beside servebench's `find-capacity` on one endpoint, the
same workload and the same SLO, rounds interleaved (servescope, servebench, servescope…)
so both see the same machine.

servebench (PyPI, Apache-2.0) is the closest peer (anchors.md); it is installed in a
scratch venv, never in requirements.txt:

    python3.11 -m venv /tmp/sbvenv && /tmp/sbvenv/bin/pip install servebench
    .venv/bin/python bench/capacity_peers.py --servebench /tmp/sbvenv/bin/servebench \\
        --url http://127.0.0.1:8000/v1 --model qwen2.5-coder-0.5b-q4_k_m-to-bf16

Workload: synthetic prompts of --input-len tokens (each tool sizes them with the server's
tokenizer; both land at 157-158 prompt tokens with the chat template on the sandbox's
Qwen), --output-len tokens with ignore_eos, --requests per load, concurrency search from 1.
Printed: each tool's capacity per round and TTFT p50 / SLO share per load tried.
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

ROOT = Path(__file__).resolve().parent.parent


def run_servescope(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "lib.cli", "capacity", "--engine", "openai",
        "--base-url", args.url, "--model", args.model,
        "--input-tokens", str(args.input_len), "--output-tokens", str(args.output_len),
        "--requests", str(args.requests), "--max", str(args.max), "--warmup", "1",
        "--slo-ttft-ms", str(args.slo_ttft_ms), "--slo-tpot-ms", str(args.slo_tpot_ms),
        "--db", str(out.with_suffix(".db")), "--output-json", str(out), "--quiet",
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    lane = json.loads(out.read_text())["lanes"][0]
    levels = {
        lv["concurrency"]: (lv["ttft_ms"]["p50"], lv["slo"]["attainment"]) for lv in lane["levels"]
    }
    return {
        "capacity": lane["capacity"]["value"],
        "levels": levels,
        "s": time.monotonic() - started,
    }


def run_servebench(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        args.servebench, "find-capacity", "--url", args.url, "--model", args.model,
        "--max", str(args.max), "--num-requests", str(args.requests), "--warmup", "1",
        "--input-len", str(args.input_len), "--output-len", str(args.output_len), "--ignore-eos",
        "--slo-ttft-ms", str(args.slo_ttft_ms), "--slo-tpot-ms", str(args.slo_tpot_ms),
        "--tolerance", "0.01", "--out", str(out),
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    levels = {}
    for lv in data["levels"]:
        reqs = [r for r in lv["requests"] if r.get("ok")]
        ttfts = sorted(r["ttft"] * 1000 for r in reqs if r.get("ttft") is not None)
        met = lv["summary"].get("slo_attainment") if isinstance(lv.get("summary"), dict) else None
        levels[int(lv["value"])] = (ttfts[len(ttfts) // 2] if ttfts else None, met)
    capacity = data.get("capacity")
    value = capacity.get("capacity") if isinstance(capacity, dict) else capacity
    return {"capacity": value, "levels": levels, "s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servebench", required=True, help="path to the servebench command")
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max", type=int, default=16)
    parser.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for tool, fn in (("servescope", run_servescope), ("servebench", run_servebench)):
                result = fn(args, Path(tmp) / f"{tool}-{n}.json")
                rows.append({"round": n + 1, "tool": tool, **result})
                print(json.dumps(rows[-1], default=str), flush=True)
    print(
        "\n| round | tool | capacity (users) | TTFT p50 ms by users (share within SLO) | wall s |"
    )
    print("|---:|---|---:|---|---:|")
    for r in rows:
        cells = ", ".join(
            f"{c}: {t:.0f}" + (f" ({a:.0%})" if a is not None else "")
            for c, (t, a) in sorted(r["levels"].items())
            if t is not None
        )
        print(f"| {r['round']} | {r['tool']} | {r['capacity']} | {cells} | {r['s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
