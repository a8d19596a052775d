"""Check GPU telemetry against a known allocation on a real NVIDIA GPU.

Starts the TelemetryRecorder (GPU only, as a run would), spawns a separate Python
process that holds GPU memory in steps with torch (by default 2, 6 and 20 GiB in total,
each held a few seconds), and checks that

- the device's memory_used_bytes rose by each step, within the tolerance (256 MiB),
  against the child's own baseline (its CUDA context alone);
- process_memory_used_bytes for the child's pid rose by the same, within the tolerance,
  and the sample names that process (pid matches, process label readable; with
  --child-title the child renames itself, as vLLM's EngineCore does, and
  --expect-engine checks the engine it is attributed to).

    python bench/gpu_check.py [--steps 2,6,20] [--hold 4] [--tolerance-mib 256]
                              [--interval 1] [--json PATH]
                              [--child-title VLLM::EngineCore --expect-engine vllm]

Exit status: 0 PASS, 1 FAIL, 2 no NVIDIA GPU here (nothing checked; the reason is
printed on one line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from lib.core.records import Sample
from lib.telemetry import TelemetryRecorder, gpu_snapshot, hardware_info

MIB = 1024**2
GIB = 1024**3

# The child announces each phase on stdout as one JSON line stamped with time.time(),
# the clock Sample.t uses. "alloc" comes before an allocation and "hold" after it (and
# after a synchronize), so samples between a "hold" and the next "alloc" see exactly
# that step.
CHILD = r"""
import json, sys, time
import torch

steps = [float(x) for x in sys.argv[1].split(",")]
hold = float(sys.argv[2])
if len(sys.argv) > 3:  # pose as an engine process (comm only, as vLLM's setproctitle does)
    with open("/proc/self/comm", "w") as f:
        f.write(sys.argv[3])

def say(event, **kw):
    print(json.dumps({"event": event, "t": time.time(), **kw}), flush=True)

torch.zeros(1, device="cuda")  # create the CUDA context: the baseline
torch.cuda.synchronize()
say("ready", device=torch.cuda.get_device_name(0))
time.sleep(hold)
held, total = [], 0
for gib in steps:
    say("alloc", gib=gib)
    n = int(gib * 2**30) - total
    held.append(torch.empty(n, dtype=torch.uint8, device="cuda"))
    total += n
    torch.cuda.synchronize()
    say("hold", gib=gib, torch_reserved=torch.cuda.memory_reserved())
    time.sleep(hold)
say("done")
"""


@dataclass
class Row:
    """One checked step."""

    step_gib: float
    samples: int
    device_delta_mib: float | None
    process_delta_mib: float | None
    process_abs_mib: float | None
    pid_seen: bool
    process_label: str
    engine_label: str
    result: str  # "PASS" or "FAIL: <why>"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def analyze(
    events: list[dict[str, Any]],
    samples: list[Sample],
    child_pid: int,
    tolerance_bytes: float = 256 * MIB,
    margin_s: float = 0.05,
    expect_engine: str | None = None,
) -> list[Row]:
    """Compare the samples with the child's announced steps; one Row per step."""
    by_event: list[tuple[str, float, dict[str, Any]]] = [(e["event"], e["t"], e) for e in events]
    proc = [s for s in samples if s.name == "process_memory_used_bytes"]
    mine = [s for s in proc if s.labels.get("pid") == str(child_pid)]
    # The child's GPU is the one its pid shows up on; without that, assume GPU 0.
    gpu = mine[0].labels.get("gpu", "0") if mine else "0"
    device = [s for s in samples if s.name == "memory_used_bytes" and s.labels.get("gpu") == gpu]

    def window(start: float, end: float, series: list[Sample]) -> list[float]:
        return [s.value for s in series if start < s.t < end - margin_s]

    ready = next((t for name, t, _ in by_event if name == "ready"), None)
    first_alloc = next((t for name, t, _ in by_event if name == "alloc"), None)
    if ready is None or first_alloc is None:
        return []
    base_device = _median(window(ready, first_alloc, device))
    base_proc = _median(window(ready, first_alloc, mine))

    rows = []
    for i, (name, t_hold, event) in enumerate(by_event):
        if name != "hold":
            continue
        t_end = next((t for n, t, _ in by_event[i + 1 :] if n in ("alloc", "done")), time.time())
        dev = window(t_hold, t_end, device)
        own = window(t_hold, t_end, mine)
        expected = event["gib"] * GIB
        labels = next((s.labels for s in mine if t_hold < s.t < t_end), {})
        dev_delta = _median(dev) - base_device if dev and base_device is not None else None
        own_abs = _median(own)
        own_delta = own_abs - base_proc if own_abs is not None and base_proc is not None else None

        problems = []
        if not dev:
            problems.append("no device samples")
        elif dev_delta is None:
            problems.append("no device baseline")
        elif abs(dev_delta - expected) > tolerance_bytes:
            problems.append("device delta off")
        if not own:
            problems.append(f"pid {child_pid} not in the process samples")
        elif own_delta is None:
            problems.append("no process baseline")
        elif abs(own_delta - expected) > tolerance_bytes:
            problems.append("process delta off")
        process_label = labels.get("process", "")
        if own and process_label in ("", "pid not visible"):
            problems.append("process not named")
        if own and expect_engine is not None and labels.get("engine") != expect_engine:
            problems.append(f"engine {labels.get('engine')!r}, expected {expect_engine!r}")
        rows.append(
            Row(
                step_gib=event["gib"],
                samples=len(dev),
                device_delta_mib=dev_delta / MIB if dev_delta is not None else None,
                process_delta_mib=own_delta / MIB if own_delta is not None else None,
                process_abs_mib=own_abs / MIB if own_abs is not None else None,
                pid_seen=bool(own),
                process_label=process_label,
                engine_label=labels.get("engine", ""),
                result="PASS" if not problems else "FAIL: " + "; ".join(problems),
            )
        )
    return rows


def format_table(rows: list[Row], tolerance_mib: float) -> str:
    """A plain-text PASS/FAIL table."""

    def mib(v: float | None) -> str:
        return f"{v:,.1f}" if v is not None else "-"

    def err(v: float | None, expected: float) -> str:
        return f"{v - expected:+.1f}" if v is not None else "-"

    head = (
        f"{'step':>8} {'expected MiB':>13} {'device Δ MiB':>13} {'err':>8} "
        f"{'process Δ MiB':>14} {'err':>8} {'process MiB':>12} {'pid':>4} {'n':>3} "
        f"{'process / engine':<26} "
        f"result (tolerance ±{tolerance_mib:g} MiB)"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        expected = r.step_gib * 1024
        lines.append(
            f"{r.step_gib:>6g} G {expected:>13,.0f} {mib(r.device_delta_mib):>13} "
            f"{err(r.device_delta_mib, expected):>8} {mib(r.process_delta_mib):>14} "
            f"{err(r.process_delta_mib, expected):>8} {mib(r.process_abs_mib):>12} "
            f"{'yes' if r.pid_seen else 'no':>4} {r.samples:>3} "
            f"{(r.process_label + ' / ' + r.engine_label) if r.pid_seen else '-':<26} {r.result}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the check; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="2,6,20", help="GiB held in total at each step")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds each step is held")
    parser.add_argument("--tolerance-mib", type=float, default=256.0)
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, s")
    parser.add_argument("--json", type=Path, help="write samples, events and rows here")
    parser.add_argument(
        "--child-title",
        help="comm the child sets for itself (e.g. VLLM::EngineCore) to check attribution",
    )
    parser.add_argument("--expect-engine", help="engine label the child must get (e.g. vllm)")
    args = parser.parse_args(argv)
    steps = [float(x) for x in args.steps.split(",")]

    samples: list[Sample] = []
    lock = threading.Lock()

    def sink(key: str | None, batch: list[Sample]) -> None:
        with lock:
            samples.extend(batch)

    recorder = TelemetryRecorder([], sink, interval_s=args.interval, gpu=True)
    recorder.start()
    status = recorder.status()
    if status.get("nvml") != "ok":
        recorder.stop()
        print(f"SKIP: {status.get('nvml', 'unavailable').removeprefix('unavailable: ')}")
        return 2

    print(json.dumps({"hardware": hardware_info()}, indent=1))
    command = [sys.executable, "-c", CHILD, ",".join(map(str, steps)), str(args.hold)]
    if args.child_title:
        command.append(args.child_title)
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    print(f"child pid {child.pid}: steps {steps} GiB, {args.hold:g} s each", flush=True)
    # A hung child (a stuck driver call) must not hang the check: kill it past its budget.
    watchdog = threading.Timer(args.hold * (len(steps) + 1) + 120.0, child.kill)
    watchdog.daemon = True
    watchdog.start()
    events: list[dict[str, Any]] = []
    snapshot: dict[str, Any] | None = None
    assert child.stdout is not None
    for line in child.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            print("child:", line.rstrip())
            continue
        events.append(event)
        print("child:", json.dumps(event), flush=True)
        if event["event"] == "hold" and event["gib"] == steps[-1]:
            snapshot = gpu_snapshot()  # what `lib.cli gpu --json` shows mid-run
    stderr = child.stderr.read() if child.stderr else ""
    child.wait()
    watchdog.cancel()
    recorder.stop()

    if child.returncode != 0:
        print(f"FAIL: the child exited {child.returncode}\n{stderr[-2000:]}")
        return 1

    rows = analyze(
        events, samples, child.pid, args.tolerance_mib * MIB, expect_engine=args.expect_engine
    )
    print("\ngpu_snapshot() during the last step:")
    print(json.dumps(snapshot, indent=1))
    print("\nrecorder status:", json.dumps(recorder.status(), indent=1))
    for name in ("utilization_gpu_pct", "power_w", "energy_j"):
        values = [s.value for s in samples if s.name == name]
        if values:
            print(f"{name}: min {min(values):.1f} max {max(values):.1f} n={len(values)}")
    print()
    print(format_table(rows, args.tolerance_mib))
    ok = bool(rows) and len(rows) == len(steps) and all(r.result == "PASS" for r in rows)
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "events": events,
                    "rows": [asdict(r) for r in rows],
                    "snapshot": snapshot,
                    "samples": [asdict(s) for s in samples],
                },
                indent=1,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
