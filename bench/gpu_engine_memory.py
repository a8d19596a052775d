"""A launched engine's GPU memory from its first second, checked on a real NVIDIA GPU.

No serving engine can be installed on the device machine, so a stand-in plays one: a
program started from a recipe (as llama-server would be, allowed through
$SERVESCOPE_ENGINE_EXECUTABLES) that holds GPU memory with torch the way an engine does,
in steps it logs as llama.cpp does ("model buffer size", "KV buffer size"), with a child
process holding more (as vLLM's engine core does), and then answers /v1/models.
lib/launch's EngineProcess starts it, samples the process tree (resident memory, and per
process GPU memory from NVML), stamps the phases from the log, and stops it with its
child. Checked:

- peak GPU memory of the tree >= weights + KV cache + the child's share, and no more
  than that plus the CUDA contexts' overhead (--context-mib each, two processes);
- the phases "weights loaded" and "KV cache reserved" were stamped, in that order, each
  with more GPU memory sampled after it than before;
- the first memory sample precedes readiness; nothing is left running.

    python bench/gpu_engine_memory.py [--weights-gib 3] [--kv-gib 8] [--child-gib 2]

Exit status: 0 PASS, 1 FAIL, 2 no NVIDIA GPU or no torch here (one line says why).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


def _hold(gib: float) -> object:
    import torch

    return torch.empty(int(gib * GIB), dtype=torch.uint8, device="cuda")


def child_main(gib: float) -> None:
    """The engine's child: holds its share until killed."""
    held = _hold(gib)  # noqa: F841 (held until the process ends)
    print(f"child: holding {gib} GiB", flush=True)
    while True:
        time.sleep(1)


def engine_main(argv: list[str]) -> None:
    """The stand-in engine, with llama-server's flags: --alias, --port (others ignored)."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    port, alias = int(args["--port"]), args["--alias"]
    weights, kv, child = (float(os.environ[k]) for k in ("SS_WEIGHTS", "SS_KV", "SS_CHILD"))
    held = [_hold(weights)]
    print(f"load_tensors: CUDA0 model buffer size = {weights * 1024:.2f} MiB", flush=True)
    time.sleep(2)
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(child)])
    held.append(_hold(kv))
    print(f"llama_kv_cache: CUDA0 KV buffer size = {kv * 1024:.2f} MiB", flush=True)
    time.sleep(3)  # the child's allocation lands meanwhile

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": [{"id": alias}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    print(f"main: server is listening on http://127.0.0.1:{port}", flush=True)
    try:
        http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
    finally:
        proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-gib", type=float, default=3.0)
    parser.add_argument("--kv-gib", type=float, default=8.0)
    parser.add_argument("--child-gib", type=float, default=2.0)
    parser.add_argument("--context-mib", type=float, default=1024.0, help="per process")
    parser.add_argument("--hold-s", type=float, default=4.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lib.core.recipes import LLAMA_CPP, EngineRecipe
    from lib.launch import phases
    from lib.launch.engine_process import EngineProcess
    from lib.launch.executables import OPERATOR_VAR
    from lib.telemetry.process_memory import nvml_tree_reader

    reader, close = nvml_tree_reader()
    close()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("no torch here: nothing checked")
        return 2
    if reader is None:
        print("no NVIDIA GPU here (NVML): nothing checked")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "llama-server"
        program.write_text(f"#!{sys.executable}\nimport sys, runpy\nsys.argv[0] = {__file__!r}\n"
                           f"runpy.run_path({__file__!r}, run_name='__main__')\n")  # fmt: skip
        program.chmod(0o755)
        os.environ[OPERATOR_VAR] = str(program)
        recipe = EngineRecipe(
            engine=LLAMA_CPP,
            model="stand-in.gguf",
            executable=str(program),
            served_model="gpu-stand-in",
            env={
                "SS_WEIGHTS": str(args.weights_gib),
                "SS_KV": str(args.kv_gib),
                "SS_CHILD": str(args.child_gib),
                "SS_ENGINE": "1",
            },
            ready_timeout_s=180,
        )
        samples: list[object] = []
        proc = EngineProcess(recipe, Path(tmp) / "lane-0.log", samples.extend)
        proc.start()
        try:
            proc.wait_ready()
            time.sleep(args.hold_s)
        finally:
            proc.stop()
        record = proc.record()
        log = (Path(tmp) / "lane-0.log").read_text(errors="replace")
    gpu = [(s.t, s.value / 2**20) for s in samples if s.name == "gpu_memory_used_bytes"]
    expected = (args.weights_gib + args.kv_gib + args.child_gib) * 1024
    ceiling = expected + 2 * args.context_mib
    steps = {p["phase"]: p for p in record["phases"]}
    checks = {
        "peak GPU >= weights + KV + child": (record["peak_gpu_memory_mib"] or 0) >= expected,
        f"peak GPU <= that + 2 x {args.context_mib:.0f} MiB": (record["peak_gpu_memory_mib"] or 0)
        <= ceiling,
        "phases weights then KV cache": list(steps).index(phases.WEIGHTS)
        < list(steps).index(phases.KV_CACHE)
        if phases.WEIGHTS in steps and phases.KV_CACHE in steps
        else False,
        "first sample before ready": record["first_sample_t"] < steps[phases.READY]["t"],
        "GPU samples taken": len(gpu) >= 5,
        "nothing left": record["leftover_pids"] == [] and record["exit_reason"] is not None,
    }
    print(json.dumps({k: record[k] for k in ("ready_s", "peak_memory_mib",
                      "peak_gpu_memory_mib", "exit_reason", "leftover_pids")}))  # fmt: skip
    for p in record["phases"]:
        before = [v for t, v in gpu if t <= p["t"]]
        print(f"  {p['phase']:<18} at {p['at_s']:6.2f} s  rss {p['rss_mib']:>6} MiB  "
              f"gpu {before[-1] if before else 0:>8.0f} MiB")  # fmt: skip
    print(f"  expected GPU {expected:.0f} MiB (+ contexts, at most {ceiling:.0f})")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if not all(checks.values()):
        print(log[-3000:])
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(float(sys.argv[2]))
    elif os.environ.get("SS_ENGINE") == "1":
        engine_main(sys.argv[1:])
    else:
        sys.exit(main())
