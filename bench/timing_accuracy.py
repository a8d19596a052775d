"""Timing accuracy and client capacity of the engine adapters, against scripted servers.

The scripted server runs in its own process (the other core) and records, on the same
monotonic clock as the client, when each request arrived and when it wrote each
output chunk. Two kinds of error are reported:

- vs nominal: the client's TTFT / TPOT against the script (TTFT 150 ms after receipt,
  20 ms between chunks of 1 and 2 tokens). This is what a user reads; it includes the
  time the client needs to send the request and any lateness of the server's timer.
- measurement lag: client chunk time − server write time, the client's own error.

Clients: the OpenAI adapter's transports (`aiohttp`, the default; `httpx`, openai-python
over httpx2 with the adapter's SSE reader; `openai-aiohttp`, openai-python's own aiohttp
extra with the same reader, for comparison only), openai-python's stream objects (`sdk`)
and ollama-python. Part `accuracy`: concurrency 1 and 32. Part `capacity`: 32–256
concurrent streams at 20k chunks/s, and 256 streams at growing chunk rates, reporting
chunks/s received, lag and CPU use. Every point is run for each transport back to back,
so ratios within one run compare like with like on a noisy machine; `--repeat` runs the
sweep again and prints medians.

    .venv/bin/python bench/timing_accuracy.py                 # both parts, ~4 min
    .venv/bin/python bench/timing_accuracy.py --part capacity --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from lib.core.metrics import request_metrics
from lib.core.records import Prompt, RequestResult, Sampling
from lib.engines.ollama import OllamaEngine
from lib.engines.openai_compat import OpenAICompatEngine
from tests.scripted.core import token_plan

ROOT = Path(__file__).resolve().parent.parent
PATTERN = (1, 2)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Server:
    """A scripted server subprocess (openai or ollama flavour)."""

    def __init__(self, kind: str, ttft_ms: float, gap_ms: float) -> None:
        module = (
            "tests.scripted.openai_server" if kind == "openai" else "tests.scripted.ollama_server"
        )
        cmd = [sys.executable, "-m", module, "--port", "0", "--ttft-ms", str(ttft_ms)]
        cmd += ["--gap-ms", str(gap_ms), "--pattern", ",".join(map(str, PATTERN))]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.kind, self.ttft_ms, self.gap_ms = kind, ttft_ms, gap_ms

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def truth(self) -> dict[str, dict[str, Any]]:
        """Recorded chat requests by prompt text; clears the server's log."""
        records = httpx.get(self.url + "/_scripted/requests", timeout=60).json()
        httpx.post(self.url + "/_scripted/reset", timeout=10)
        out = {}
        for rec in records:
            if rec["path"] in ("/v1/chat/completions", "/api/chat"):
                out[rec["body"]["messages"][0]["content"]] = rec
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make(kind: str, url: str, parser: str, transport: str) -> Any:
    if kind == "ollama":
        return OllamaEngine(url)
    if transport != "openai-aiohttp":
        return OpenAICompatEngine(url, flavor="vllm", parser=parser, transport=transport)
    # Comparison only: openai-python's aiohttp extra (httpx2 over aiohttp) under the
    # adapter's httpx-path reader. The httpx2 request hook still sees each request, but
    # the httpcore trace that dates the write never fires: t0 falls back to the moment
    # before the call, so TTFT here includes client-side request building.
    import httpx2
    import openai

    engine = OpenAICompatEngine(url, flavor="vllm", parser=parser, transport="httpx")
    limits = httpx2.Limits(max_connections=2048, max_keepalive_connections=2048)
    engine._client = openai.AsyncOpenAI(
        base_url=engine.base_url,
        api_key="EMPTY",
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(limits=limits),
    )
    return engine


async def drive(
    engine: Any, model: str, conc: int, tokens: int, tag: str, *, n: int | None, secs: float
) -> list[tuple[str, RequestResult]]:
    """Closed loop: `conc` workers, each sending the next request when one finishes,
    until `n` requests were sent or `secs` passed."""
    results: list[tuple[str, RequestResult]] = []
    counter = itertools.count()
    deadline = time.perf_counter() + secs
    sampling = Sampling(max_tokens=tokens, temperature=0.0, top_p=1.0, seed=0)

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if n is not None and i >= n:
                return
            text = f"{tag}-{i}"
            results.append((text, await engine.chat(model, Prompt.from_text(text), sampling, 60)))

    await asyncio.gather(*(worker() for _ in range(conc)))
    return results


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def analyse(
    results: list[tuple[str, RequestResult]], truth: dict[str, dict[str, Any]], srv: Server
) -> dict[str, Any]:
    ttft_err, tpot_err, tpot_meas, req_out, late, lag, all_late = [], [], [], [], [], [], []
    first_lag: list[float] = []
    errors = chunks = 0
    first_send = min(r.t_send for _, r in results)
    last_chunk = first_send
    for text, r in results:
        rec = truth.get(text)
        if r.error or rec is None or len(rec["sent"]) != len(r.chunk_times) or not r.chunk_times:
            errors += 1
            continue
        m = request_metrics(r)
        sent, n_tok = rec["sent"], r.output_tokens or 0
        chunks += len(r.chunk_times)
        last_chunk = max(last_chunk, r.chunk_times[-1])
        ttft_err.append(m["ttft_ms"] - srv.ttft_ms)
        req_out.append((rec["t_recv"] - r.t_send) * 1000)
        late.append((sent[0] - rec["t_recv"]) * 1000 - srv.ttft_ms)
        lag += [(c - s) * 1000 for c, s in zip(r.chunk_times, sent, strict=True)]
        first_lag.append((r.chunk_times[0] - sent[0]) * 1000)  # the client's own TTFT error
        for i, s in enumerate(sent):
            all_late.append((s - rec["t_recv"]) * 1000 - srv.ttft_ms - i * srv.gap_ms)
        if m["tpot_ms"] is not None:
            nominal = (len(sent) - 1) * srv.gap_ms / (n_tok - 1)
            true_tpot = (sent[-1] - sent[0]) * 1000 / (n_tok - 1)
            tpot_err.append(m["tpot_ms"] - nominal)
            tpot_meas.append(m["tpot_ms"] - true_tpot)
    wall = last_chunk - first_send
    return {
        "requests": len(results),
        "errors": errors,
        "chunks_per_s": chunks / wall if wall > 0 else 0.0,
        "ttft_err_ms": {"p50": pct(ttft_err, 50), "p99": pct(ttft_err, 99)},
        "tpot_err_ms": {"p50": pct(tpot_err, 50), "p99": pct(tpot_err, 99)},
        "tpot_lag_ms": {"p50": pct(tpot_meas, 50), "p99": pct(tpot_meas, 99)},
        "request_out_ms": {"p50": pct(req_out, 50), "p99": pct(req_out, 99)},
        "server_late_first_ms": {"p50": pct(late, 50), "p99": pct(late, 99)},
        "server_late_ms": {"p50": pct(all_late, 50), "p99": pct(all_late, 99)},
        "lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99), "max": max(lag, default=0.0)},
        "first_lag_ms": {"p50": pct(first_lag, 50), "p99": pct(first_lag, 99)},
    }


def expected_rate(conc: int, ttft_ms: float, gap_ms: float, tokens: int) -> float:
    """Chunks/s the script produces in a closed loop if the client kept up perfectly."""
    k = len(token_plan(tokens, PATTERN))
    return conc * k / ((ttft_ms + (k - 1) * gap_ms) / 1000)


def gap_for(rate: float, conc: int, ttft_ms: float, tokens: int) -> float:
    """The gap that makes `conc` closed-loop streams produce `rate` chunks/s."""
    k = len(token_plan(tokens, PATTERN))
    return round((conc * k * 1000 / rate - ttft_ms) / (k - 1), 3)


async def point(
    client: str, conc: int, ttft_ms: float, gap_ms: float, tokens: int, **kw: Any
) -> dict[str, Any]:
    """One measured level: fresh server process, warm-up, closed loop, analysis.
    `client`: "ollama", "sdk" or "raw+<transport>"."""
    kind = "ollama" if client == "ollama" else "openai"
    parser, _, transport = client.partition("+")
    srv = Server(kind, ttft_ms, gap_ms)
    model = "scripted-model" if kind == "openai" else "qwen2.5:7b-instruct-q4_K_M"
    engine = make(kind, srv.url, parser, transport or "httpx")
    load = os.getloadavg()[0]
    try:
        # Warm-up: open every connection once, outside the measurement.
        await drive(engine, model, conc, 2, "warm", n=conc, secs=30)
        srv.truth()
        cpu_c, cpu_s, t0 = time.process_time(), srv.cpu_s(), time.perf_counter()
        results = await drive(engine, model, conc, tokens, "m", **kw)
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu_c
        server_cores = (srv.cpu_s() - cpu_s) / wall
        stats = analyse(results, srv.truth(), srv)
    finally:
        await engine.aclose()
        srv.stop()
    chunks = stats["chunks_per_s"] * wall
    return {
        "engine": kind,
        "client": client,
        "concurrency": conc,
        "gap_ms": gap_ms,
        "expected_chunks_per_s": round(expected_rate(conc, ttft_ms, gap_ms, tokens)),
        **stats,
        "client_cores": round(client_cpu / wall, 2),
        "server_cores": round(server_cores, 2),
        "client_us_per_chunk": round(client_cpu / chunks * 1e6, 1) if chunks else None,
        "loadavg_1m": round(load, 2),
    }


def show(row: dict[str, Any]) -> None:
    """One line per level: what a reader compares against the goals."""
    f = lambda d: f"{d['p50']:6.2f}/{d['p99']:6.2f}"  # noqa: E731
    print(
        f"{row['client']:18} c={row['concurrency']:<3} "
        f"gap={row['gap_ms']:<6} exp={row['expected_chunks_per_s']:>6}/s "
        f"got={row['chunks_per_s']:6.0f}/s err={row['errors']}/{row['requests']} "
        f"TTFTerr {f(row['ttft_err_ms'])} TPOTerr {f(row['tpot_err_ms'])} "
        f"lag {f(row['lag_ms'])} 1st-lag {f(row['first_lag_ms'])} "
        f"req-out {f(row['request_out_ms'])} "
        f"srv-late {f(row['server_late_ms'])} cpu {row['client_cores']}/{row['server_cores']} "
        f"{row['client_us_per_chunk']}us/chunk load {row['loadavg_1m']}",
        flush=True,
    )


ACCURACY_EXTRA = ("sdk", "ollama")
# (concurrency, chunks/s): concurrency grows at 20k/s, then the rate grows at 256 streams.
CAPACITY = [(32, 20_000), (64, 20_000), (128, 20_000), (256, 20_000)]
CAPACITY += [(256, 12_500), (256, 25_000), (256, 31_000), (256, 40_000)]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("accuracy", "capacity", "all"), default="all")
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--secs", type=float, default=4.0, help="per capacity point")
    ap.add_argument("--repeat", type=int, default=1, help="run the sweep this many times")
    ap.add_argument(
        "--transports",
        default="aiohttp,httpx",
        help="comma-separated: aiohttp, httpx, openai-aiohttp (needs openai's aiohttp extra)",
    )
    ap.add_argument(
        "--others", action="store_true", help="also sdk and ollama-python in the capacity part"
    )
    ap.add_argument(
        "--points", help="capacity points instead of the default, e.g. 256:25000,512:20000"
    )
    args = ap.parse_args()
    clients = [f"raw+{t}" for t in args.transports.split(",")]
    points = CAPACITY
    if args.points:
        points = [(int(c), int(r)) for c, r in (p.split(":") for p in args.points.split(","))]
    rows: list[dict[str, Any]] = []

    async def run(*a: Any, **kw: Any) -> None:
        rows.append(await point(*a, **kw))
        show(rows[-1])

    for _ in range(args.repeat):
        if args.part in ("accuracy", "all"):
            print("# accuracy: TTFT 150 ms after a role-only chunk, 20 ms gaps, 1/2-token chunks")
            for conc, n in ((1, 20), (32, 96)):
                for client in (*clients, *ACCURACY_EXTRA):
                    await run(client, conc, 150, 20, 16, n=n, secs=60)
        if args.part in ("capacity", "all"):
            print("# capacity: TTFT 50 ms, 96 tokens (64 chunks) per request, closed loop")
            secs, ttft, tokens = args.secs, 50, 96
            for conc, rate in points:
                gap = gap_for(rate, conc, ttft, tokens)
                for client in clients:
                    await run(client, conc, ttft, gap, tokens, n=None, secs=secs)
            if args.others:
                for client in ACCURACY_EXTRA:
                    for rate in (12_500, 20_000):
                        gap = gap_for(rate, 256, ttft, tokens)
                        await run(client, 256, ttft, gap, tokens, n=None, secs=secs)
    if args.repeat > 1:
        summary(rows)
    _save(args.json, rows)


def summary(rows: list[dict[str, Any]]) -> None:
    """Medians over the repeats of each (client, concurrency, gap) point."""
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["client"], row["concurrency"], row["gap_ms"]), []).append(row)
    print("# medians over repeats (ms, p50 unless p99): TTFT err, lag p50/p99, first-chunk lag,")
    print("# request-out; µs of client CPU per chunk")
    for (client, conc, _gap), group in groups.items():
        med = {
            key: statistics.median(get(r) for r in group)
            for key, get in {
                "got": lambda r: r["chunks_per_s"],
                "ttft": lambda r: r["ttft_err_ms"]["p50"],
                "lag50": lambda r: r["lag_ms"]["p50"],
                "lag99": lambda r: r["lag_ms"]["p99"],
                "first": lambda r: r["first_lag_ms"]["p50"],
                "out": lambda r: r["request_out_ms"]["p50"],
                "cpu": lambda r: r["client_us_per_chunk"] or 0.0,
            }.items()
        }
        print(
            f"{client:18} c={conc:<3} exp={group[0]['expected_chunks_per_s']:>6}/s "
            f"got={med['got']:6.0f}/s TTFTerr {med['ttft']:6.2f} "
            f"lag {med['lag50']:6.2f}/{med['lag99']:6.2f} 1st-lag {med['first']:6.2f} "
            f"req-out {med['out']:6.2f} cpu {med['cpu']:5.1f}us n={len(group)}",
            flush=True,
        )


def _save(path: str | None, rows: list[dict[str, Any]]) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
