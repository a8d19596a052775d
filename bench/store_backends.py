"""What each store backend takes: request rows/s at 256 streams through the run's writer,
and the dashboard's redraw time with 10,000 requests stored (issue 17, point 5).

1. Writes. lib/store/writer.StoreWriter as the runner drives it: 256 asyncio tasks on one
   event loop each hand finished requests' rows to `add_request` (rows of ~2.6 KB: a
   232-character answer, 100 inter-token gaps), and telemetry batches arrive every second
   (4 keys x 20 samples), while the writer thread commits whatever is queued in one
   transaction. Two loads, each on a fresh database:
   - closed: every stream hands its next row as soon as its last one is committed, so up
     to 256 rows wait at once: the most rows/s the store takes at 256 streams;
   - paced: 256 streams hand --paced-rate rows/s between them on a schedule, not waiting
     (500/s: every stream finishing a request each half second, more than a real engine
     serves at 256 streams): how long a row waits from `add_request` to its commit.
   Backends: a SQLite file (the store's own settings: WAL, synchronous=NORMAL); a
   PostgreSQL 15 server started here (tests/postgres_server.py, durable: fsync and
   synchronous_commit at their defaults) reached over TCP on the loopback, as a team's
   postgresql:// URL reaches it; and the same server through a proxy process per
   --delays entry (one more hop, plus that many ms each way: a stand-in for a database
   on another machine; each link's round trip is measured and printed). Backends take
   turns within each round, the order flipped every round. `--coalesce` also measures a
   writer that merges a batch's rows into one executemany (a subclass here).
2. Dashboard. A synthetic 3-lane run of --rows requests (bench/dashboard_cpu.py's, stored
   with store.add_requests in bulk; rows as above, or its lean rows with --lean-rows) on
   each backend: the Results page's live panel while the run is shown running (one new
   row before each redraw, every figure rebuilt; and nothing new), then the run
   finished, its Results page and the History page, cold (caches cleared) and warm,
   through Streamlit's AppTest (server-side script time). Medians of --redraws per
   round; backends in turn each round.

    .venv/bin/python bench/store_backends.py                 # ~4 min on 2 cores
    .venv/bin/python bench/store_backends.py --rounds 5 --coalesce --json out.json
    .venv/bin/python bench/store_backends.py --skip dashboard --delays 0,1 --coalesce

Every process started here (the PostgreSQL server, the proxy, the dashboard's children)
is stopped here, by its own handle.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script

from lib import store  # noqa: E402
from lib.store.writer import StoreWriter  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

STREAMS = 256
WARM_S = 1.0  # left out of each window: the connection's first statements
TEXT = (
    "인공지능 기술은 최근 몇 년 사이 빠르게 발전하며 산업 전반에 큰 변화를 가져오고 있다. "
    "The model serving stack matters as much as the model: batching, KV cache and "
    "scheduling decide latency under load. 전문가들은 앞으로도 이러한 흐름이 계속될 것으로 "
    "전망하며, 기업들은 추론 비용을 줄이기 위한 다양한 방법을 찾고 있다. "
)


# --- rows -------------------------------------------------------------------------------


def timings(rng: random.Random, n: int = 512) -> list[tuple[float, list[float]]]:
    """TTFTs and inter-token gaps made once: the rows reuse them, so the benchmark's own
    random numbers do not take the CPU the writer needs."""
    return [(rng.uniform(40, 400), [rng.uniform(8.0, 30.0) for _ in range(100)]) for _ in range(n)]


def request_row(
    run_id: str, stream: int, idx: int, made: tuple[float, list[float]]
) -> dict[str, Any]:
    """A finished request as the runner records it (tests/store/test_store.py's shape)."""
    ttft, itl = made
    e2el = ttft + sum(itl)
    t_send = time.time()
    return {
        "run_id": run_id,
        "lane_idx": stream % 3,
        "concurrency": STREAMS,
        "idx": stream * 1_000_000 + idx,
        "warmup": False,
        "prompt_idx": 0,
        "t_send": t_send - e2el / 1000,
        "t_done": t_send,
        "t_scheduled": None,
        "ttft_ms": ttft,
        "ttfat_ms": ttft,
        "reasoning_ms": None,
        "e2el_ms": e2el,
        "tpot_ms": (e2el - ttft) / 100,
        "tokens_per_s": 101 / e2el * 1000,
        "itl_ms": itl,
        "prompt_tokens": 24,
        "output_tokens": 101,
        "token_source": "server",
        "output_text": TEXT,
        "finish_reason": "length",
        "error": None,
        "server": {"eval_ms": e2el - ttft, "prompt_eval_ms": ttft / 2},
        "quality": {"flags": []},
    }


def sample_batch(t: float, rng: random.Random) -> list[dict[str, Any]]:
    """One telemetry round of one key: 20 series (GPU and engine gauges)."""
    return [
        {"t": t, "source": "engine", "name": f"gauge_{i}", "value": rng.random() * 100,
         "labels": {"gpu": str(i % 4)}}
        for i in range(20)
    ]  # fmt: skip


def seed_run(db: str, run_id: str) -> None:
    with store.opened(db) as conn:
        store.create_run(conn, run_id, {"concurrency": [STREAMS]}, "store bench", {})
        for li in range(3):
            store.add_lane(conn, run_id, li, f"lane {li}", "openai", "http://x/v1", "m", {}, {})


# --- the writer, timed -------------------------------------------------------------------


class TimedWriter(StoreWriter):
    """The run's writer, stamping each request row's commit (after its batch's
    transaction) and counting ops per commit. `coalesce` merges consecutive add_requests
    ops of a batch into one (what the writer itself could do)."""

    def __init__(self, db: str, on_commit: Callable[[list[dict[str, Any]], float], None],
                 coalesce: bool = False) -> None:  # fmt: skip
        self.on_commit = on_commit
        self.coalesce = coalesce
        self.batch_ops: list[int] = []
        super().__init__(db)  # starts the thread: attributes first

    def _write(self, conn: Any, ops: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> Any:
        rows = [row for op, args in ops if op is store.add_requests for row in args[0]]
        if self.coalesce:
            ops = merged(ops)
        conn = super()._write(conn, ops)
        if self._error is None:
            self.batch_ops.append(len(ops))
            self.on_commit(rows, time.perf_counter())
        return conn


def merged(ops: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[Any]:
    """Consecutive add_requests ops as one (order kept)."""
    out: list[Any] = []
    for op, args in ops:
        if op is store.add_requests and out and out[-1][0] is store.add_requests:
            out[-1] = (op, (out[-1][1][0] + list(args[0]),))
        else:
            out.append((op, (list(args[0]),) if op is store.add_requests else args))
    return out


async def drive(db: str, mode: str, seconds: float, rate: float, coalesce: bool) -> dict[str, Any]:
    """One load on one fresh database: rows/s committed, submit-to-commit latency."""
    run_id = f"w-{mode}"
    seed_run(db, run_id)
    loop = asyncio.get_running_loop()
    rng = random.Random(1)
    made = timings(rng)
    committed: list[tuple[float, float]] = []  # (submitted, committed)

    def on_commit(rows: list[dict[str, Any]], now: float) -> None:
        committed.extend((row["_submitted"], now) for row in rows)
        waiting = [row["_done"] for row in rows if "_done" in row]
        if waiting:
            loop.call_soon_threadsafe(_resolve, waiting)

    writer = TimedWriter(db, on_commit, coalesce)
    t0 = time.perf_counter()
    t_end = t0 + seconds
    submitted = 0

    def submit(stream: int, idx: int, done: asyncio.Future[None] | None) -> None:
        nonlocal submitted
        row = request_row(run_id, stream, idx, made[submitted % len(made)])
        row["_submitted"] = time.perf_counter()  # extra keys: add_requests reads its columns
        if done is not None:
            row["_done"] = done
        writer.add_request(row)
        submitted += 1

    async def closed(stream: int) -> None:
        idx = 0
        while time.perf_counter() < t_end:
            done = loop.create_future()
            submit(stream, idx, done)
            await done
            idx += 1

    async def paced(stream: int) -> None:
        period = STREAMS / rate
        due, idx = t0 + stream * period / STREAMS, 0
        while due < t_end:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            submit(stream, idx, None)
            due, idx = due + period, idx + 1

    async def telemetry() -> None:
        while time.perf_counter() < t_end:
            for key in (None, 0, 1, 2):
                writer.submit(store.add_samples, run_id, key, sample_batch(time.time(), rng))
            await asyncio.sleep(1.0)

    stream = closed if mode == "closed" else paced
    await asyncio.gather(telemetry(), *(stream(i) for i in range(STREAMS)))
    writer.close()
    with store.opened(db) as conn:
        stored = store.count_measured(conn).get(run_id, 0)
    waits = sorted(1000 * (c - s) for s, c in committed if s >= t0 + WARM_S)
    return {
        "rows_per_s": commit_rate(committed, t0 + WARM_S, t_end),
        "wait_p50_ms": waits[len(waits) // 2] if waits else None,
        "wait_p99_ms": waits[int(len(waits) * 0.99)] if waits else None,
        "ops_per_commit": statistics.mean(writer.batch_ops) if writer.batch_ops else 0,
        "all_rows_stored": stored == submitted,
    }


def commit_rate(committed: list[tuple[float, float]], start: float, end: float) -> float:
    """Rows/s committed between `start` and `end`: from the first commit in the window to
    the last, the rows of all but the first (a slow link commits a few large batches in a
    few seconds: counting whole batches in a fixed window would be too coarse)."""
    batches: dict[float, int] = {}
    for _, at in committed:
        if start <= at <= end:
            batches[at] = batches.get(at, 0) + 1
    times = sorted(batches)
    if len(times) < 2:
        return sum(batches.values()) / (end - start)
    return sum(batches[t] for t in times[1:]) / (times[-1] - times[0])


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


# --- a slower link: a proxy adding a delay each way ------------------------------------

# Runs in its own process so its work does not take the benchmark's GIL. Each direction
# forwards what it reads `delay` seconds later, in order.
PROXY_CODE = textwrap.dedent(
    """
    import asyncio, sys
    listen, target, delay = 0, int(sys.argv[1]), float(sys.argv[2]) / 1000

    async def pipe(reader, writer):
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        async def pump():
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(pump())
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await task

    async def handle(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w),
                             return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


def start_proxy(target_port: int, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROXY_CODE, str(target_port), str(delay_ms)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        stop(proc)
        raise SystemExit(f"the delay proxy did not start: {line!r}")
    return proc, int(line.split()[1])


def round_trip_ms(db: str, n: int = 200) -> float:
    """Median time of one small store read (a run that is not there) on one connection:
    the link's round trip plus the server's index lookup."""
    conn = store.connect(db)
    try:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            store.get_run(conn, "no-such-run")
            times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)
    finally:
        conn.close()


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def writes(args: argparse.Namespace, pg: PostgresServer, folder: Path) -> dict[str, Any]:
    """Every backend and load in turn, --rounds times; medians and ranges."""
    backends: dict[str, Callable[[str], str]] = {
        "sqlite": lambda name: str(folder / f"{name}.db"),
        "postgresql": pg.create_database,
    }
    proxies: list[subprocess.Popen[str]] = []
    loads = [("closed", False), ("paced", False)] + ([("closed", True)] if args.coalesce else [])
    trials: dict[str, list[dict[str, Any]]] = {}
    try:
        for delay in args.delays:
            proc, port = start_proxy(pg.port, delay)
            proxies.append(proc)
            backends[f"postgresql proxy+{delay:g}ms"] = functools.partial(
                proxied, pg.create_database, f":{pg.port}/", f":{port}/"
            )
        rtt = {name: round(round_trip_ms(make(f"rtt{i}")), 3) for i, (name, make) in
               enumerate(backends.items())}  # fmt: skip
        print(f"round trip, ms: {rtt}", flush=True)
        for r in range(args.rounds):
            for b, name in enumerate(backends if r % 2 == 0 else reversed(backends)):
                for mode, coalesce in loads:
                    key = f"{name} {mode}{' coalesced' if coalesce else ''}"
                    db = backends[name](f"b{b}_r{r}_{mode}{int(coalesce)}")
                    found = asyncio.run(drive(db, mode, args.seconds, args.paced_rate, coalesce))
                    trials.setdefault(key, []).append(found)
                    print(f"round {r + 1} {key}: " + ", ".join(
                        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in found.items()
                    ), flush=True)  # fmt: skip
    finally:
        for proc in proxies:
            stop(proc)
    return {"round_trip_ms": rtt, "writes": {k: summarise(v) for k, v in trials.items()}}


def proxied(create: Callable[[str], str], direct: str, via: str, name: str) -> str:
    """A new database's URL through the proxy's port."""
    return create(name).replace(direct, via)


def summarise(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of each figure over the rounds."""
    out: dict[str, Any] = {"rounds": len(trials)}
    for key in trials[0]:
        values = [t[key] for t in trials]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = round(statistics.median(values), 2)
            out[f"{key}_range"] = [round(min(values), 2), round(max(values), 2)]
        else:
            out[key] = values
    return out


# --- the dashboard at 10,000 requests ----------------------------------------------------


def dashboard(args: argparse.Namespace, pg: PostgresServer, folder: Path) -> dict[str, Any]:
    """Live redraws while the run shows running, then Results and History of it finished;
    backends in turn each round (the order flipped every round)."""
    from bench import dashboard_cpu as dc

    dbs = {"sqlite": str(folder / "dashboard.db"), "postgresql": pg.create_database("dashboard")}
    runs, seed_s = {}, {}
    for name, db in dbs.items():
        t = time.perf_counter()
        if args.lean_rows:  # as bench/dashboard_cpu.py stores them: no gaps, one character
            runs[name] = dc.synthetic_live_run(db, args.rows)
        else:
            runs[name] = dc.synthetic_live_run(db, args.rows, itl_points=100, text=TEXT)
        seed_s[name] = round(time.perf_counter() - t, 2)
    found: dict[str, dict[str, list[float]]] = {name: {} for name in dbs}

    def take(name: str, figures: dict[str, float], prefix: str = "") -> None:
        for key, value in figures.items():
            found[name].setdefault(prefix + key.removeprefix("results_"), []).append(value)

    # A placeholder process stands in for each run's process: the live view asks whether
    # a process naming the run is alive.
    holders = {name: holder(runs[name]) for name in dbs}
    try:
        for name, db in dbs.items():
            with store.opened(db) as conn:
                store.update_run(conn, runs[name], pid=holders[name].pid)
        for r in range(args.rounds):
            for name in dbs if r % 2 == 0 else reversed(dbs):
                spec = {"mode": "live", "run_id": runs[name], "repeat": args.redraws,
                        "grow": dc.GROW}  # fmt: skip
                take(name, dc.apptest(ROOT, dbs[name], spec))
                print(f"round {r + 1} {name} live: {found[name]}", flush=True)
    finally:
        for proc in holders.values():
            stop(proc)
    for name, db in dbs.items():
        with store.opened(db) as conn:
            store.update_run(conn, runs[name], status="completed", finished_at=time.time())
            store.close_levels(conn, runs[name], "completed", time.time())
    pages = {
        "results": ROOT / "app_pages" / "results.py",
        "history": ROOT / "app_pages" / "history.py",
    }
    for r in range(args.rounds):
        for name in dbs if r % 2 == 0 else reversed(dbs):
            for page, path in pages.items():
                spec = {"mode": "results", "page": str(path), "run_id": runs[name],
                        "repeat": args.redraws}  # fmt: skip
                take(name, dc.apptest(ROOT, dbs[name], spec), f"{page}_")
        print(f"round {r + 1} pages done", flush=True)
    summary = {
        name: {k: {"median": round(statistics.median(v), 3), "range": [min(v), max(v)]}
               for k, v in figures.items()}
        for name, figures in found.items()
    }  # fmt: skip
    rows = f"{args.rows} {'lean' if args.lean_rows else 'realistic'}"
    return {"dashboard_rows": rows, "seed_s": seed_s, "dashboard": summary}


def holder(run_id: str) -> subprocess.Popen[bytes]:
    """A process whose command line names the run (jobs.process_alive looks for it)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", run_id], stdin=subprocess.PIPE
    )


def table(result: dict[str, Any]) -> str:
    """The medians (and ranges) as Markdown rows, ready for BENCHMARKS.md."""
    lines = []
    if "writes" in result:
        lines += ["| backend, load | rows/s | wait p50 ms | wait p99 ms | ops/commit |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for key, f in result["writes"].items():
            cells = [f"{num(f[k])} ({num(f[k + '_range'][0])}–{num(f[k + '_range'][1])})"
                     for k in ("rows_per_s", "wait_p50_ms", "wait_p99_ms")]  # fmt: skip
            stored = "" if all(f["all_rows_stored"]) else " **rows lost**"
            lines.append(f"| {key}{stored} | {' | '.join(cells)} | {f['ops_per_commit']:.0f} |")
    if "dashboard" in result:
        names = list(result["dashboard"])
        lines += ["", f"| redraw, s | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
        for key in result["dashboard"][names[0]]:
            cells = []
            for name in names:
                f = result["dashboard"][name][key]
                cells.append(f"{f['median']:.2f} ({f['range'][0]:.2f}–{f['range'][1]:.2f})")
            lines.append(f"| {key} | {' | '.join(cells)} |")
    return "\n".join(lines)


def num(value: float) -> str:
    """A figure with the digits that mean something: 12,345 / 123 / 1.2."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load and backend")
    parser.add_argument("--paced-rate", type=float, default=500.0, help="rows/s, paced load")
    parser.add_argument(
        "--delays", type=lambda v: [float(d) for d in v.split(",") if d], default=[0.0],
        help="a proxied PostgreSQL per delay, ms each way (comma-separated; '' for none)",
    )  # fmt: skip
    parser.add_argument("--coalesce", action="store_true", help="also a coalescing writer")
    parser.add_argument("--rows", type=int, default=10_000, help="requests of the dashboard run")
    parser.add_argument(
        "--lean-rows", action="store_true",
        help="the dashboard run's rows without inter-token gaps or answer text",
    )  # fmt: skip
    parser.add_argument("--redraws", type=int, default=3, help="per round, dashboard")
    parser.add_argument("--skip", action="append", default=[], choices=["writes", "dashboard"])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="servescope-storebench-"))
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M")}
    try:
        with PostgresServer(durable=True) as pg:
            if "writes" not in args.skip:
                result |= writes(args, pg, folder)
            if "dashboard" not in args.skip:
                result |= dashboard(args, pg, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
