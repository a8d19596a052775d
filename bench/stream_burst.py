"""Do the sandbox engines really stream? The burst share at concurrency 1, dashboard open.

    .venv/bin/python bench/stream_burst.py [--requests 20] [--max-tokens 96] [--no-dashboard]
                                           [--json PATH]

Needs the sandbox running (``python -m sandbox up``). For each engine it serves (vLLM's
model and llama.cpp's first GGUF variant) one run of N requests at concurrency 1 is started
the way the Run page starts one (``lib.load.jobs.start``: its own process), with the dashboard's
live view of that run open in headless Chromium unless ``--no-dashboard``: on a 2-core
machine the dashboard, the load generator and the engine share the CPU, as in a demo.

Per engine it reports, from the stored requests:
- ``first_before_half``: share of requests whose first token came before half their
  end-to-end latency (the goal: at least 90%);
- ``burst``: share whose whole output arrived within 5 ms (TTFT within 5 ms of E2E, more
  than 8 tokens): a stream delivered in one piece, for which TTFT means nothing;
- TTFT and E2E p50 in ms, and output tok/s p50 per request.

The CPU settings the engines ran with are printed beside (``sandbox status --json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script

from bench.soak import CHROMIUM, CHROMIUM_ARGS, start_dashboard, stop  # noqa: E402
from lib import store  # noqa: E402
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling  # noqa: E402
from lib.load import jobs  # noqa: E402

PROMPT = "LLM 서빙에서 KV 캐시가 무엇인지 초보자도 이해할 수 있게 설명해 주세요."
BURST_MS = 5.0


def sandbox_status() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "sandbox", "status", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(out.stdout)


def shares(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one engine's run (see the module docstring)."""
    done = [r for r in rows if r["error"] is None and r["ttft_ms"] and r["e2el_ms"]]
    if not done:
        return {"completed": 0}
    first = [r["ttft_ms"] < r["e2el_ms"] / 2 for r in done]
    burst = [
        (r["e2el_ms"] - r["ttft_ms"]) <= BURST_MS and (r["output_tokens"] or 0) > 8 for r in done
    ]
    rates = [r["output_tokens"] / (r["e2el_ms"] / 1000) for r in done if r["output_tokens"]]
    return {
        "completed": len(done),
        "first_before_half": round(sum(first) / len(done), 3),
        "burst": round(sum(burst) / len(done), 3),
        "ttft_p50_ms": round(statistics.median(r["ttft_ms"] for r in done), 1),
        "e2el_p50_ms": round(statistics.median(r["e2el_ms"] for r in done), 1),
        "tok_per_s_p50": round(statistics.median(rates), 1) if rates else None,
    }


def run_one(
    db: Path, engine: dict[str, Any], args: argparse.Namespace, page: Any, url: str | None
) -> dict[str, Any]:
    model = engine["models"][0]
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=engine["base_url"], model=model)],
        prompts=[Prompt.from_text(PROMPT)],
        concurrency=[1],
        requests=args.requests,
        warmup=1,
        sampling=Sampling(max_tokens=args.max_tokens, temperature=0.0, seed=0, ignore_eos=True),
        timeout_s=300.0,
        label=f"stream burst {engine['name']}",
    )
    run_id = jobs.start(config, db)
    if page is not None:
        page.goto(f"{url}/?run={run_id}", wait_until="domcontentloaded")
    while True:
        with store.opened(db) as conn:
            run = store.get_run(conn, run_id)
        if run and run["status"] not in jobs.ACTIVE:
            break
        if page is not None:
            page.wait_for_timeout(1000)  # the live view keeps redrawing meanwhile
        else:
            time.sleep(1.0)
    with store.opened(db) as conn:
        rows = store.get_requests(conn, run_id)
    return {"engine": engine["name"], "model": model, "status": run["status"], **shares(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument("--only", help="one engine: vllm or llama.cpp")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    status = sandbox_status()
    engines = [e for e in status.get("engines", []) if e.get("ready")]
    engines = [e for e in engines if args.only in (None, e["name"])]
    if not engines:
        print("stream_burst: no sandbox engine is ready (python -m sandbox up)", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="servescope-burst-"))
    db = folder / "store.db"
    results = []
    dashboard = None
    try:
        if args.no_dashboard:
            results = [run_one(db, e, args, None, None) for e in engines]
        else:
            from playwright.sync_api import sync_playwright

            dashboard, url = start_dashboard(db, engines[0]["base_url"], folder / "st.log")
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                results = [run_one(db, e, args, page, url) for e in engines]
                browser.close()
    finally:
        stop(dashboard)
    report = {
        "dashboard_open": not args.no_dashboard,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "model": (status.get("model") or {}).get("title"),
        "cpu": {e["name"]: e.get("cpu") for e in engines},
        "engines": results,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
