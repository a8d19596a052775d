"""How long the report, the card and the exports take, for small and large runs.

A synthetic run is written straight into a fresh store (2 lanes, levels 1/4/16/64,
N measured requests per level, 1 s telemetry with NVML process memory, answers with
quality checks), so the figures measure rendering, not a benchmark. Each output is
made `--repeat` times; the median is reported. With `--open`, each HTML report is also
opened `--repeat` times in headless Chromium (Playwright, /usr/bin/chromium, after one
warm-up open): `text_s` is when its text is shown (DOMContentLoaded), `charts_s` when all
seven charts are drawn, both from the start of navigation (the page's performance clock).

    .venv/bin/python bench/report_render.py                  # 50 and 1000 requests/level
    .venv/bin/python bench/report_render.py --requests 200 --repeat 5 --json out.json
    .venv/bin/python bench/report_render.py --open           # plus open times
    .venv/bin/python bench/report_render.py --open-file OLD.html   # open times of a file
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from lib import quality, report, store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.report import card as report_card
from lib.report import exports

LEVELS = (1, 4, 16, 64)
ANSWER = "인공지능 기술이 빠르게 발전하고 있습니다. 많은 기업이 대규모 언어 모델에 투자합니다. " * 4


def synthetic_run(db: Path, per_level: int, seed: int = 0) -> str:
    """A finished two-lane run with `per_level` measured requests at each of LEVELS."""
    rng = random.Random(seed)
    run_id = f"bench-{per_level}"
    config = RunConfig(
        lanes=[
            LaneSpec(engine="ollama", base_url="http://127.0.0.1:11434", model="qwen2.5:7b"),
            LaneSpec(engine="openai", base_url="http://127.0.0.1:8000/v1", model="Qwen/AWQ"),
        ],
        prompts=[Prompt.from_text("AI 기술에 대한 짧은 뉴스 기사를 써 주세요.")],
        concurrency=list(LEVELS),
        requests=per_level,
        sampling=Sampling(max_tokens=128),
        label=f"render bench, {per_level} requests per level",
    )
    check = quality.check_answer(ANSWER, prompt_text="AI 기술에 대한 짧은 뉴스 기사")
    t = time.time() - 3600
    env = {"hardware": {"gpu": {"available": False, "reason": "synthetic"}}}
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), config.label, env, status="running")
        store.update_run(conn, run_id, started_at=t)
        for li, (engine, kind) in enumerate((("ollama", "ollama"), ("openai", "vllm"))):
            info = {"kind": kind, "version": "0.33.0", "context_length": 8192}
            model = {"quantization": "Q4_K_M" if li == 0 else "AWQ"}
            spec = config.lanes[li]
            store.add_lane(conn, run_id, li, f"{kind}:{spec.model}", engine, spec.base_url,
                           spec.model, info, model)  # fmt: skip
            for c in LEVELS:
                start, rows, samples = t, [], []
                for i in range(per_level):
                    ttft = rng.uniform(20, 80) * (1 + c / 16)
                    itl = [rng.uniform(8, 14) for _ in range(63)]
                    e2el = ttft + sum(itl)
                    send = start + (i // c) * e2el / 1000
                    rows.append(
                        {
                            "run_id": run_id,
                            "lane_idx": li,
                            "concurrency": c,
                            "idx": i,
                            "warmup": False,
                            "prompt_idx": 0,
                            "t_send": send,
                            "t_done": send + e2el / 1000,
                            "ttft_ms": ttft,
                            "e2el_ms": e2el,
                            "tpot_ms": (e2el - ttft) / 127,
                            "tokens_per_s": 128 / e2el * 1000,
                            "itl_ms": itl,
                            "prompt_tokens": 17,
                            "output_tokens": 128,
                            "token_source": "server",
                            "output_text": ANSWER,
                            "finish_reason": "length",
                            "quality": check,
                        }
                    )
                end = max(r["t_done"] for r in rows)
                store.add_requests(conn, rows)
                store.set_level(conn, run_id, li, c, "completed", start, end)
                for s in range(int(end - start) + 2):
                    labels = {"gpu": "0", "pid": str(100 + li), "engine": kind}
                    name, value = "process_memory_used_bytes", 5e9 + li * 6e10
                    samples.append(
                        {
                            "t": start + s,
                            "source": "nvml",
                            "name": name,
                            "value": value,
                            "labels": labels,
                        }
                    )
                store.add_samples(conn, run_id, None, samples)
                t = end + 1
        store.update_run(conn, run_id, status="completed", finished_at=t)
    return run_id


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--no-first-run"]
CHARTS = 7


def open_time(path: Path, repeat: int) -> dict[str, float]:
    """Median seconds from navigation to the report's text and to all charts drawn."""
    from playwright.sync_api import sync_playwright

    # A function, not a string: the report's CSP forbids eval, which string predicates use.
    drawn = f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {CHARTS}"
    text, charts = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for i in range(repeat + 1):  # the first open warms the browser's caches: dropped
                tab = browser.new_page(viewport={"width": 1440, "height": 900})
                tab.goto(path.resolve().as_uri())
                tab.wait_for_function(drawn, timeout=120_000)
                if i:
                    charts.append(tab.evaluate("performance.now()") / 1000)
                    nav = "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
                    text.append(tab.evaluate(nav) / 1000)
                tab.close()
        finally:
            browser.close()
    return {
        "text_s": round(statistics.median(text), 2),
        "charts_s": round(statistics.median(charts), 2),
    }


def measure(per_level: int, repeat: int, open_page: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        run_id = synthetic_run(db, per_level)
        n = per_level * len(LEVELS) * 2
        html_s, page = timed(lambda: report.html_bytes(db, run_id), repeat)
        png_s, png = timed(lambda: report_card.png_bytes(db, run_id), repeat)
        out: dict[str, Any] = {
            "requests": n,
            "html_s": round(html_s, 3),
            "html_mb": round(len(page) / 2**20, 2),
            **({"open": _open_bytes(page, repeat)} if open_page else {}),
            "png_s": round(png_s, 3),
            "png_kb": round(len(png) / 1024),
        }
        for fmt in exports.FORMATS:
            secs, data = timed(lambda f=fmt: exports.export_bytes(db, run_id, f), repeat)
            out[f"{fmt}_s"], out[f"{fmt}_kb"] = round(secs, 3), round(len(data) / 1024)
        return out


def _open_bytes(page: bytes, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        path.write_bytes(page)
        return open_time(path, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, action="append", help="per level (repeatable)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--open", action="store_true", help="also time opening the HTML")
    parser.add_argument("--open-file", action="append", help="only time opening this HTML")
    args = parser.parse_args()
    if args.open_file:
        for name in args.open_file:
            path = Path(name)
            size = {"file": name, "html_mb": round(path.stat().st_size / 2**20, 2)}
            print(json.dumps(size | open_time(path, args.repeat)))
        return
    rows = [measure(n, args.repeat, args.open) for n in (args.requests or [50, 1000])]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
