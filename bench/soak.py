"""Soak: 2,000 requests at concurrency 64 against a scripted vLLM server, with the
dashboard's live view of the run open in headless Chromium the whole time.

Checks what a long demo needs (issue item 5): no lost records (rows in the store ==
measured requests + warm-ups, each index once, none failed) and no memory growth in the
dashboard process, whose RSS is read from /proc every few seconds while the page redraws
every second; then while the finished view is reloaded (a full render each time); then
in a live view at full data whose rows no longer grow (the finished run shown as running
again), which tells a per-redraw leak from memory that follows the data. The run is
started the way the Run page starts one (lib.load.jobs.start: its own process); the engine
is tests/scripted/openai_server.py in its own process.

    .venv/bin/python bench/soak.py                       # 2000 requests at c=64, ~5 min
    .venv/bin/python bench/soak.py --requests 500 --json soak.json

Every process started here is stopped here, by its own handle.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script

from lib import store  # noqa: E402
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling  # noqa: E402
from lib.load import jobs  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
MODEL = "soak-model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int | None) -> float | None:
    """Resident set size of a process in MiB, from /proc (None once it is gone)."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steady_live_view(
    page: Any, db: Path, run_id: str, dashboard_pid: int, seconds: float, period_s: float
) -> tuple[list[tuple[float, float]], float | None]:
    """The live view at full data without the data growing: the finished run is shown as
    running again (a placeholder process that names the run stands in for its process,
    so the dashboard's liveness check passes) and the page redraws every second.
    Returns the dashboard's RSS samples and the CPU seconds it spent meanwhile."""
    with store.opened(db) as conn:
        before = store.get_run(conn, run_id)
    placeholder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", run_id], stdin=subprocess.PIPE
    )
    series: list[tuple[float, float]] = []
    try:
        with store.opened(db) as conn:
            store.update_run(conn, run_id, status="running", pid=placeholder.pid)
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        cpu0, t0 = cpu_s(dashboard_pid), time.monotonic()
        while (now := time.monotonic() - t0) < seconds:
            if (mb := rss_mb(dashboard_pid)) is not None:
                series.append((now, mb))
            page.wait_for_timeout(period_s * 1000)
        cpu1 = cpu_s(dashboard_pid)
    finally:
        with store.opened(db) as conn:
            store.update_run(conn, run_id, status=before["status"], pid=before["pid"])
        stop(placeholder)
    busy = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return series, busy


def stop(proc: subprocess.Popen[Any] | None) -> None:
    """Stop one process started here (terminate, then kill)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_engine(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.scripted.openai_server", "--port", "0", "--no-record",
            "--models", MODEL, "--ttft-ms", str(args.ttft_ms), "--gap-ms", str(args.gap_ms),
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""  # blocks until READY or exit
    if not line.startswith("READY "):
        stop(proc)
        raise SystemExit(f"scripted server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[1]}/v1"


def start_dashboard(db: Path, engine_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SERVESCOPE_DB": str(db),
        "SERVESCOPE_SANDBOX": "off",
        "SERVESCOPE_OLLAMA_URL": "",
        "SERVESCOPE_VLLM_URL": engine_url,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                "--server.address", "127.0.0.1", "--server.headless", "true",
                "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
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


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return None
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def summary(series: list[tuple[float, float]]) -> dict[str, Any]:
    values = [v for _, v in series]
    return {
        "start_mb": round(values[0], 1) if values else None,
        "peak_mb": round(max(values), 1) if values else None,
        "end_mb": round(values[-1], 1) if values else None,
        "slope_mb_per_min": (round(s, 2) if (s := slope_mb_per_min(series)) is not None else None),
        "samples": len(values),
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="servescope-soak-"))
    db = folder / "store.db"
    engine = dashboard = None
    result: dict[str, Any] = {"folder": str(folder)}
    try:
        engine, engine_url = start_engine(args)
        dashboard, url = start_dashboard(db, engine_url, folder / "streamlit.log")
        result["dashboard_idle_rss_mb"] = rss_mb(dashboard.pid)  # up, no page open yet
        config = RunConfig(
            lanes=[LaneSpec(engine="openai", base_url=engine_url, model=MODEL, name="soak")],
            prompts=[Prompt.from_text("AI 기술에 대한 짧은 뉴스 기사를 써 주세요.")],
            concurrency=[args.concurrency],
            requests=args.requests,
            warmup=args.warmup,
            sampling=Sampling(max_tokens=args.max_tokens),
            timeout_s=120.0,
            label=f"soak {args.requests} at c={args.concurrency}",
        )
        started = time.monotonic()
        run_id = jobs.start(config, db)
        result["run_id"] = run_id
        dash_rss: list[tuple[float, float]] = []  # (seconds since start, MiB)
        run_rss: list[tuple[float, float]] = []
        phase_end: dict[str, float] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{url}/?run={run_id}", wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            result["page_loaded_s"] = round(time.monotonic() - started, 1)
            status = "pending"
            while True:
                now = time.monotonic() - started
                with store.opened(db) as conn:
                    run = store.get_run(conn, run_id)
                status = run["status"] if run else "missing"
                if (mb := rss_mb(dashboard.pid)) is not None:
                    dash_rss.append((now, mb))
                if run and (mb := rss_mb(run["pid"])) is not None and status in jobs.ACTIVE:
                    run_rss.append((now, mb))
                if status not in jobs.ACTIVE and "run" not in phase_end:
                    phase_end["run"] = now
                    result["run_status"] = status
                if "run" in phase_end and now - phase_end["run"] >= args.tail_s:
                    break
                if now > args.limit_s:
                    result["stopped"] = f"limit of {args.limit_s:.0f} s reached"
                    jobs.cancel(run_id, db)
                    break
                if "run" in phase_end and args.reload:
                    # The finished view no longer redraws by itself: reload it, a full
                    # render of every chart each time, so a per-render leak would show.
                    page.reload(wait_until="domcontentloaded")
                    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
                    result["reloads"] = result.get("reloads", 0) + 1
                page.wait_for_timeout(args.sample_s * 1000)  # the live page keeps redrawing
            body = page.inner_text("body")
            done = f"c={args.concurrency}: {args.requests}/{args.requests} done"
            result["page_shows_done"] = done in body
            if args.steady_s > 0 and result.get("run_status") == "completed":
                steady, busy = steady_live_view(
                    page, db, run_id, dashboard.pid, args.steady_s, args.sample_s
                )
                result["dashboard_rss_steady_live_view"] = summary(steady)
                result["dashboard_cpu_s_steady_live_view"] = (
                    round(busy, 1) if busy is not None else None
                )
            browser.close()
        with store.opened(db) as conn:
            rows = store.get_requests(conn, run_id, include_warmup=True)
            run = store.get_run(conn, run_id)
        measured = [r for r in rows if not r["warmup"]]
        expected = args.requests + args.warmup
        result |= {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rows_stored": len(rows),
            "rows_expected": expected,
            "lost": expected - len(rows),
            "failed": sum(r["error"] is not None for r in rows),
            "distinct_indexes": len({r["idx"] for r in measured}),
            "run_wall_s": round(
                (run["finished_at"] or time.time()) - (run["started_at"] or run["created_at"]), 1
            ),
        }
        if measured:
            span = max(r["t_done"] for r in measured) - min(r["t_send"] for r in measured)
            result["request_throughput"] = round(len(measured) / span, 1) if span else None
        live = [s for s in dash_rss if s[0] <= phase_end.get("run", float("inf"))]
        result["dashboard_rss"] = summary(dash_rss)
        result["dashboard_rss_live_view"] = summary(live)
        result["dashboard_rss_after_run"] = summary(
            [s for s in dash_rss if s[0] > phase_end.get("run", float("inf"))]
        )
        result["run_process_rss"] = summary(run_rss)
        result["rss_series"] = [(round(t, 1), round(mb, 1)) for t, mb in dash_rss]
        return result
    finally:
        if "run_id" in result and jobs.cancel(result["run_id"], db):
            result["cancelled_at_exit"] = True
        stop(dashboard)
        stop(engine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--sample-s", type=float, default=3.0, help="RSS sampling period")
    parser.add_argument("--tail-s", type=float, default=20.0, help="finished view watched")
    parser.add_argument(
        "--steady-s",
        type=float,
        default=90.0,
        help="then the live view at full data, redrawing without new rows (0: skip)",
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="leave the finished view alone instead of reloading it every sample",
    )
    parser.add_argument("--limit-s", type=float, default=280.0, help="cancel the run after")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    result = soak(args)
    series = result.pop("rss_series", [])
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result | {"rss_series": series}, indent=1))
    ok = result.get("lost") == 0 and result.get("failed") == 0 and result.get("page_shows_done")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
