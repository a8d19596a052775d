"""Open-loop schedule accuracy: how late servescope's requests go out against their
arrival schedule, at rising request rates, against a scripted vLLM in its own process.

Issue "Capacity", speed goal: within 1 ms p99 at 200 req/s here. Each rate runs twice per
round, interleaved: with the scheduler as shipped (sleep, then yield to the loop for the
last 1.5 ms: lib/load/arrivals.py) and with a plain asyncio.sleep to the due time, so the
reason for the spin window is measured on the same machine in the same minutes.

Two lags per request: *dispatch*, when the request's task starts against its due time
(the scheduler's own precision; measured here by wrapping the driver's send), and
*wire*, t_send - t_scheduled as stored (t_send is when the adapter wrote the request to
the socket: dispatch plus building the HTTP request), read back through the run document.

    .venv/bin/python bench/open_loop_schedule.py                 # 50, 200, 500 req/s, 2 rounds
    .venv/bin/python bench/open_loop_schedule.py --rates 200 --seconds 20 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script

from bench.soak import MODEL, start_engine, stop  # noqa: E402
from lib.analysis import results  # noqa: E402
from lib.core.load_pattern import LoadPattern  # noqa: E402
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling  # noqa: E402
from lib.load import arrivals, level_drivers  # noqa: E402
from lib.load.runner import close_lanes, execute_run, prepare_lanes  # noqa: E402

SHIPPED = arrivals.SPIN_WINDOW_S
DISPATCH: list[float] = []  # ms late, per request of the level being measured
_OPEN_LOOP = level_drivers.open_loop


async def _timed_open_loop(send: Any, *args: Any) -> None:
    """The shipped driver, its send wrapped to note when each request's task starts."""

    async def noted(idx: int, due: float) -> None:
        DISPATCH.append((time.perf_counter() - due) * 1000.0)
        await send(idx, due)

    await _OPEN_LOOP(noted, *args)


level_drivers.open_loop = _timed_open_loop


def one_level(url: str, db: Path, rate: float, seconds: float, spin: float) -> dict[str, Any]:
    """One open-loop level at `rate` with a spin window of `spin` seconds; the schedule
    lag and what the client saw."""
    arrivals.SPIN_WINDOW_S = spin
    DISPATCH.clear()
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=url, model=MODEL)],
        prompts=[Prompt.from_text("Say hi.")],
        requests=int(rate * seconds),
        warmup=0,
        sampling=Sampling(max_tokens=8),
        load=LoadPattern(mode="rate", rates=[rate], seed=1),
    )

    async def go() -> str:
        lanes = await prepare_lanes(config)
        try:
            return await execute_run(config, lanes, db=str(db))
        finally:
            await close_lanes(lanes)

    run_id = asyncio.run(go())
    level = results.run_document(str(db), run_id)["lanes"][0]["levels"][0]
    lag = level["schedule_lag_ms"]
    dispatch = sorted(DISPATCH)
    client = next(c for c in level["validation"] if c["check"] == "client_kept_up")
    return {
        "rate": rate,
        "spin": spin,
        "requests": level["completed"] + level["failed"],
        "failed": level["failed"],
        "achieved_rate": level["achieved_rate"],
        "dispatch_p50_ms": dispatch[len(dispatch) // 2],
        "dispatch_p99_ms": dispatch[min(len(dispatch) - 1, round(0.99 * (len(dispatch) - 1)))],
        "wire_p50_ms": lag["p50"],
        "wire_p99_ms": lag["p99"],
        "client": client["detail"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,200,500", help="req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--spins", default=f"{SHIPPED},0", help="spin windows to compare, seconds")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    spins = [float(x) for x in args.spins.split(",")]
    engine, url = start_engine(args)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            for _ in range(args.rounds):
                for rate in (float(r) for r in args.rates.split(",")):
                    for spin in spins:
                        row = one_level(url, db, rate, args.seconds, spin)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    finally:
        stop(engine)
    head = (
        "| rate (req/s) | scheduler | requests | achieved (req/s) | dispatch p50 / p99 (ms)"
        " | wire p50 / p99 (ms) |"
    )
    print("\n" + head + "  (medians over rounds)")
    print("|---:|---|---:|---:|---:|---:|")

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    for rate in dict.fromkeys(r["rate"] for r in rows):
        for spin in spins:
            mine = [r for r in rows if r["rate"] == rate and r["spin"] == spin]
            name = f"sleep + yield {spin * 1000:g} ms" if spin else "plain sleep"
            name += " (shipped)" if spin == SHIPPED else ""
            print(
                f"| {rate:g} | {name} | {sum(r['requests'] for r in mine)} "
                f"| {med(mine, 'achieved_rate'):.1f} "
                f"| {med(mine, 'dispatch_p50_ms'):.2f} / {med(mine, 'dispatch_p99_ms'):.2f} "
                f"| {med(mine, 'wire_p50_ms'):.2f} / {med(mine, 'wire_p99_ms'):.2f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
