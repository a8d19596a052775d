"""What the dashboard itself costs: CPU while it shows a live run, Results render time,
and a live redraw with 10,000 stored requests (issue 12, points 7-9).

1. Live CPU. Three scripted lanes (tests/browser/engines.py: Ollama queueing in one slot
   and vLLM batching; plus a scripted llama.cpp server), `streamlit run app.py` on a free
   port, and a run started as the Run page starts one (lib.load.jobs.start: a process of its
   own, so its CPU is not the dashboard's). Headless Chromium opens the Run page on
   `?run=ID`; the Streamlit process's CPU time (utime + stime from /proc/PID/stat,
   children excluded) is read while the run goes on and then while the finished page
   sits open (idle), as % of one core.
2. Results render: the finished 3-lane run's Results page through AppTest (server-side
   script time: queries, frames, figures, their JSON), caches cleared first (cold) and
   again on a second run of the same session (warm). Median of --repeat.
3. Live redraw at 10k requests: a synthetic 3-lane run with 10,000 requests, shown as
   running (a placeholder process that names the run stands in for its process); the
   Results page's live panel through AppTest, with a new row before each redraw (every
   figure rebuilt: the rebuild throttle is turned off) and without (nothing changed);
   then the same run marked finished, its Results page as in 2. Median of --repeat.

`--app-root DIR` points the dashboard and the AppTest timings at another checkout (a git
worktree of an older commit), so before and after run on the same machine in turn:

    .venv/bin/python bench/dashboard_cpu.py                   # ~60 s run, 3 lanes
    git worktree add /tmp/old HEAD~1
    .venv/bin/python bench/dashboard_cpu.py --app-root /tmp/old --json old.json

Every process started here is stopped here, by its own handle. One script on purpose
(a little over 400 lines): the three measurements share the scripted lanes, the
dashboard process and --app-root's before/after switch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The checkout whose lib is measured: this one, or --app-root's (the script re-runs itself
# with this variable set, so the store, the run and the dashboard are all that checkout's
# own: an older checkout cannot open a store of a newer schema).
APP_ROOT = Path(os.environ.get("DASHBOARD_CPU_APP_ROOT") or ROOT).resolve()
sys.path.insert(0, str(APP_ROOT))  # run as a script

from bench.soak import CHROMIUM, CHROMIUM_ARGS, cpu_s, free_port, stop  # noqa: E402
from lib import store  # noqa: E402
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling  # noqa: E402
from lib.load import jobs  # noqa: E402

OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"
LLAMACPP_MODEL = "qwen2.5-0.5b-instruct-q8_0"
LEVELS = (1, 4)
PROMPT = "인공지능 기술에 관한 짧은 뉴스 기사를 한국어로 써 주세요."


# --- processes ------------------------------------------------------------------------


def start_lanes(ttft_ms: float, gap_ms: float) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """The browser test's engine pair and a scripted llama.cpp server; their URLs."""
    pair = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.engines", "--ttft-ms", str(ttft_ms),
         "--gap-ms", str(gap_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    llama = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted.openai_server", "--port", "0", "--no-record",
         "--flavor", "llamacpp", "--models", LLAMACPP_MODEL, "--ttft-ms", str(ttft_ms),
         "--gap-ms", str(gap_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    procs = [pair, llama]
    first = pair.stdout.readline() if pair.stdout else ""
    second = llama.stdout.readline() if llama.stdout else ""
    found = re.match(r"READY ollama=(\d+) vllm=(\d+)", first)
    if not found or not second.startswith("READY "):
        for proc in procs:
            stop(proc)
        raise SystemExit(f"scripted lanes did not start: {first!r} {second!r}")
    return procs, [
        f"http://127.0.0.1:{found.group(1)}",
        f"http://127.0.0.1:{found.group(2)}/v1",
        f"http://127.0.0.1:{second.split()[1]}/v1",
    ]


def start_dashboard(
    app_root: Path, db: Path, urls: list[str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SERVESCOPE_DB": str(db),
        "SERVESCOPE_SANDBOX": "off",
        "SERVESCOPE_OLLAMA_URL": urls[0],
        "SERVESCOPE_VLLM_URL": urls[1],
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=app_root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 90
    while True:  # the condition is "the server answers its health check"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"streamlit did not come up; see {log}")
        time.sleep(0.25)


def run_config(urls: list[str], requests: int, max_tokens: int) -> RunConfig:
    return RunConfig(
        lanes=[
            LaneSpec(engine="ollama", base_url=urls[0], model=OLLAMA_MODEL, name="Ollama Q4"),
            LaneSpec(engine="openai", base_url=urls[1], model=VLLM_MODEL, name="vLLM AWQ"),
            LaneSpec(engine="openai", base_url=urls[2], model=LLAMACPP_MODEL, name="llama.cpp"),
        ],
        prompts=[Prompt.from_text(PROMPT)],
        concurrency=list(LEVELS),
        requests=requests,
        warmup=1,
        sampling=Sampling(max_tokens=max_tokens),
        timeout_s=60.0,
        label="dashboard cost: 3 lanes in turn",
    )


def requests_for(seconds: float, ttft_ms: float, gap_ms: float, max_tokens: int) -> int:
    """Requests per level so that 3 lanes in turn take about `seconds`.

    Chunks carry 1, 2, 1, 2 … tokens, so a request takes ttft + (2/3 max_tokens) gaps;
    per lane, c=1 sends N in turn and c=4 about N/4 in turn (Ollama queues: N)."""
    e2e = (ttft_ms + gap_ms * (2 * max_tokens / 3)) / 1000
    per_request = (1 + 1) + (1 + 0.25) + (1 + 0.25)  # lane-seconds per N, all three lanes
    return max(int(seconds / (e2e * per_request)), 4)


# --- live CPU in a real browser ---------------------------------------------------------


def live_cpu(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Any], Path, str]:
    from playwright.sync_api import sync_playwright

    db = folder / "store.db"
    lanes, urls = start_lanes(args.ttft_ms, args.gap_ms)
    dashboard = None
    out: dict[str, Any] = {}
    run_id = ""
    try:
        dashboard, url = start_dashboard(args.app_root, db, urls, folder / "streamlit.log")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(url, wait_until="domcontentloaded")  # warm the server's imports
            page.wait_for_selector("text=Start run", timeout=120_000)
            n = args.requests or requests_for(args.seconds, args.ttft_ms, args.gap_ms, args.tokens)
            run_id = jobs.start(run_config(urls, n, args.tokens), db)
            t_start = time.monotonic()
            page.goto(f"{url}/?run={run_id}", wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            cpu0, t0 = cpu_s(dashboard.pid), time.monotonic()
            windows: list[float] = []
            last_cpu, last_t = cpu0, t0
            while True:
                page.wait_for_timeout(args.window_s * 1000)
                now_cpu, now_t = cpu_s(dashboard.pid), time.monotonic()
                windows.append(100 * (now_cpu - last_cpu) / (now_t - last_t))
                last_cpu, last_t = now_cpu, now_t
                with store.opened(db) as conn:
                    run = store.get_run(conn, run_id)
                if run is None or run["status"] not in jobs.ACTIVE:
                    break
                if now_t - t_start > args.limit_s:
                    jobs.cancel(run_id, db)
                    out["stopped"] = f"cancelled after {args.limit_s:.0f} s"
            live_s = last_t - t0
            out["live_s"] = round(live_s, 1)
            out["live_cpu_pct"] = round(100 * (last_cpu - cpu0) / live_s, 1)
            out["live_cpu_pct_windows"] = [round(w, 1) for w in windows]
            out["run_status"] = run["status"] if run else "missing"
            out["requests_per_level"] = n
            # The run's end reruns the page once; then nothing should run at all.
            page.wait_for_selector("text=Full results", timeout=60_000)
            page.wait_for_timeout(3000)
            cpu0, t0 = cpu_s(dashboard.pid), time.monotonic()
            page.wait_for_timeout(args.idle_s * 1000)
            idle_s = time.monotonic() - t0
            out["idle_cpu_pct"] = round(100 * (cpu_s(dashboard.pid) - cpu0) / idle_s, 1)
            body = page.inner_text("body")  # the tiles' wording changed over time
            out["page_shows_done"] = any(
                f"c=4: {n}/{n} {word}" in body for word in ("done", "requests")
            )
            page.screenshot(path=str(folder / "run_done.png"))
            browser.close()
    finally:
        if run_id and jobs.cancel(run_id, db):
            out["cancelled_at_exit"] = True
        stop(dashboard)
        for proc in lanes:
            stop(proc)
    return out, db, run_id


# --- server-side timings through AppTest, in the checkout under test ---------------------

# Runs in a child process in `--app-root` (its own lib): only APIs that both the old and
# the new checkout have. Prints one JSON line.
APPTEST_CODE = textwrap.dedent(
    """
    import json, statistics, sys, time
    sys.path.insert(0, ".")
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    from lib import store

    if hasattr(store, "keep_connections"):  # as app.py does: a dashboard pools them
        store.keep_connections()
    spec = json.loads(sys.argv[1])
    page, run_id, repeat = spec["page"], spec["run_id"], spec["repeat"]
    def session():
        at = AppTest.from_file(page, default_timeout=120)
        at.query_params["run"] = run_id
        return at

    def timed(at):
        t = time.perf_counter()
        at.run()
        dt = time.perf_counter() - t
        assert not at.exception, at.exception
        return dt

    def grow(k):
        # One more finished request of the running level, through the store's own insert
        # (so it is written the same way on SQLite and PostgreSQL).
        now = time.time()
        row = {"run_id": run_id, "lane_idx": spec["grow"]["lane_idx"],
               "concurrency": spec["grow"]["concurrency"], "idx": 100000 + k, "warmup": False,
               "prompt_idx": 0, "t_send": now - 0.6, "t_done": now, "ttft_ms": 60.0,
               "e2el_ms": 600.0, "tpot_ms": 8.6, "tokens_per_s": 106.7, "itl_ms": [],
               "prompt_tokens": 17, "output_tokens": 64, "token_source": "server",
               "output_text": "답", "finish_reason": "length", "error": None}
        with store.opened() as conn:
            store.add_requests(conn, [row])

    # A redraw after new rows must rebuild every figure here, not wait for the live
    # view's rebuild throttle (a checkout that has one).
    try:  # this checkout's layout, or an older one's flat lib/ui.py (--app-root)
        from lib.app import live_view as view
    except ImportError:
        from lib import ui as view
    if hasattr(view, "CHART_MIN_GAP_S"):
        view.CHART_MIN_GAP_S = 0.0
    if hasattr(view, "CHART_BUDGET"):
        view.CHART_BUDGET = 1e9

    out = {}
    if spec["mode"] == "results":
        cold, warm = [], []
        for _ in range(repeat):
            st.cache_data.clear(); st.cache_resource.clear()
            at = session()
            cold.append(timed(at))
            warm.append(timed(at))
        out["results_cold_s"] = statistics.median(cold)
        out["results_warm_s"] = statistics.median(warm)
    else:
        st.cache_data.clear(); st.cache_resource.clear()
        at = session()
        out["live_first_s"] = timed(at)
        changed, same = [], []
        for k in range(repeat):
            grow(k)
            changed.append(timed(at))
            same.append(timed(at))
        out["live_changed_s"] = statistics.median(changed)
        out["live_same_s"] = statistics.median(same)
    print(json.dumps(out))
    """
)


def apptest(app_root: Path, db: str | Path, spec: dict[str, Any]) -> dict[str, float]:
    """Timings of a page through AppTest in a child process (`spec["page"]`, else the
    Results page); `db` is a SQLite path or a PostgreSQL URL."""
    env = {
        **os.environ,
        "SERVESCOPE_DB": str(db),
        "SERVESCOPE_SANDBOX": "off",
        "SERVESCOPE_OLLAMA_URL": "",
        "SERVESCOPE_VLLM_URL": "",
    }
    spec = {"page": str(app_root / "app_pages" / "results.py"), **spec}
    done = subprocess.run(
        [sys.executable, "-c", APPTEST_CODE, json.dumps(spec)],
        cwd=app_root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"AppTest timing failed:\n{done.stderr[-3000:]}")
    return {k: round(v, 3) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def synthetic_live_run(
    db: str | Path, total: int, seed: int = 0, itl_points: int = 0, text: str = "답"
) -> str:
    """A running 3-lane run (lanes in turn) holding `total` measured requests; each with
    `itl_points` inter-token gaps and `text` as its answer (the defaults keep rows small)."""
    rng = random.Random(seed)
    itl = [round(rng.uniform(6, 12), 3) for _ in range(itl_points)]
    run_id = f"live-{total}"
    config = run_config(["http://127.0.0.1:1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"],
                        total // 6, 64)  # fmt: skip
    t = time.time() - 3600
    per_level = total // (3 * len(LEVELS))
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), config.label, {}, status="running")
        store.update_run(conn, run_id, started_at=t)
        for li, spec in enumerate(config.lanes):
            store.add_lane(conn, run_id, li, spec.name, spec.engine, spec.base_url, spec.model,
                           {"kind": spec.engine, "version": "1"}, {})  # fmt: skip
            for c in LEVELS:
                rows, start = [], t
                for i in range(per_level):
                    ttft = rng.uniform(20, 80) * (1 + c / 4)
                    e2el = ttft + rng.uniform(400, 700)
                    send = start + (i // c) * 0.6
                    rows.append(
                        {"run_id": run_id, "lane_idx": li, "concurrency": c, "idx": i,
                         "warmup": False, "prompt_idx": 0, "t_send": send,
                         "t_done": send + e2el / 1000, "ttft_ms": ttft, "e2el_ms": e2el,
                         "tpot_ms": (e2el - ttft) / 63, "tokens_per_s": 64 / e2el * 1000,
                         "itl_ms": itl, "prompt_tokens": 17, "output_tokens": 64,
                         "token_source": "server", "output_text": text, "finish_reason": "length",
                         "error": None if i % 97 else "timeout"}
                    )  # fmt: skip
                store.add_requests(conn, rows)
                end = max(r["t_done"] for r in rows)
                last = li == 2 and c == LEVELS[-1]
                store.set_level(conn, run_id, li, c, "running" if last else "completed", start,
                                None if last else end)  # fmt: skip
                t = end + 1
    return run_id


# Where a live redraw's new row goes: the synthetic run's level still running.
GROW = {"lane_idx": 2, "concurrency": LEVELS[-1]}


def live_10k(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    db = folder / "live10k.db"
    run_id = synthetic_live_run(db, args.live_rows)
    # Stands in for the run's process: jobs.process_alive wants the run id on its cmdline.
    placeholder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", run_id], stdin=subprocess.PIPE
    )
    try:
        with store.opened(db) as conn:
            store.update_run(conn, run_id, pid=placeholder.pid)
        spec = {"mode": "live", "run_id": run_id, "repeat": args.repeat, "grow": GROW}
        out = apptest(args.app_root, db, spec)
    finally:
        stop(placeholder)
    # The same run finished: its Results page at 10,000 requests.
    with store.opened(db) as conn:
        store.update_run(conn, run_id, status="completed", finished_at=time.time() - 60)
        store.close_levels(conn, run_id, "completed", time.time() - 60)
    spec = {"mode": "results", "run_id": run_id, "repeat": args.repeat}
    found = apptest(args.app_root, db, spec)
    return out | {f"{k.replace('results_', 'results_10k_')}": v for k, v in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-root", type=Path, default=ROOT, help="checkout to measure")
    parser.add_argument("--seconds", type=float, default=60.0, help="about how long the run is")
    parser.add_argument("--requests", type=int, default=0, help="per level (default: --seconds)")
    parser.add_argument("--tokens", type=int, default=48, help="max tokens per request")
    parser.add_argument("--ttft-ms", type=float, default=120.0)
    parser.add_argument("--gap-ms", type=float, default=25.0)
    parser.add_argument("--window-s", type=float, default=5.0, help="CPU sampling window")
    parser.add_argument("--idle-s", type=float, default=20.0, help="finished page watched")
    parser.add_argument("--limit-s", type=float, default=300.0, help="cancel the run after")
    parser.add_argument("--live-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=["cpu", "results", "10k"])
    parser.add_argument("--results-db", help="time Results of this store's --results-run")
    parser.add_argument("--results-run")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    args.app_root = args.app_root.resolve()
    if args.app_root != APP_ROOT:  # measure that checkout with its own lib
        env = {**os.environ, "DASHBOARD_CPU_APP_ROOT": str(args.app_root)}
        os.chdir(args.app_root)
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    folder = Path(tempfile.mkdtemp(prefix="servescope-dashcpu-"))
    result: dict[str, Any] = {"app_root": str(args.app_root), "folder": str(folder)}
    db, run_id = (Path(args.results_db), args.results_run) if args.results_db else (None, "")
    if "cpu" not in args.skip:
        live, db, run_id = live_cpu(args, folder)
        result |= live
    if "results" not in args.skip and db and run_id:
        spec: dict[str, Any] = {"mode": "results", "run_id": run_id, "repeat": args.repeat}
        result |= apptest(args.app_root, db, spec)
        result["results_db"], result["results_run"] = str(db), run_id
    if "10k" not in args.skip:
        result |= live_10k(args, folder)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
