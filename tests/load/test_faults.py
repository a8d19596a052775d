"""Engine faults through the runner and the CLI: every request is accounted for.

Issue item 1: connection refused, a reset mid-stream, HTTP 503 (Ollama's queue full),
a hang past the timeout, an error object mid-stream (vLLM's, llama.cpp's and Ollama's
shapes), malformed SSE or NDJSON, an engine killed mid-run. Each ends as that request's
one-line error while the run goes on; levels count completed and failed; the CLI exits
1; a run against a hung engine ends within the timeout plus the runner's grace.

The scripted servers (tests/scripted) inject the faults: a model named `fault-<name>`,
or the server's own `script.fault` switched between requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lib import cli, store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load.runner import TIMEOUT_GRACE_S, close_lanes, execute_run, prepare_lanes
from tests.conftest import Scripted
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer
from tests.scripted.ollama_server import model_entry

ROOT = Path(__file__).resolve().parents[2]
OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"

# What each fault reads as on the request, by API dialect (the start of the message).
OPENAI_ERRORS = {
    "http503": "HTTP 503: Service Unavailable",
    "error": "server error mid-stream: scripted failure: engine died",
    "malformed": "malformed SSE data from server",
    "reset": "connection lost mid-stream: ",
    "close": "connection lost mid-stream: ",
    "drop": "no response from http://127.0.0.1:",
    "hang": "timed out after 1 s",
    "hang_headers": "timed out after 1 s",
}
OLLAMA_ERRORS = {
    "http503": "HTTP 503: server busy, please try again. maximum pending requests exceeded",
    "error": "server error mid-stream: an error was encountered while running the model",
    "malformed": "malformed NDJSON line from server",
    "reset": "connection lost mid-stream: ",
    "close": "connection lost mid-stream: ",
    "drop": "connection lost before any output: ",
    "hang": "timed out after 1 s",
    "hang_headers": "timed out after 1 s",
}
# llama.cpp words its error object differently ({"error": {"code", "message", "type"}}).
LLAMACPP_ERRORS = {k: OPENAI_ERRORS[k] for k in ("error", "malformed", "http503")}


def fault_models(faults: Any) -> list[str]:
    return [f"fault-{name}" for name in faults]


@pytest.fixture
def servers(scripted: Scripted) -> tuple[OpenAIServer, OpenAIServer, OllamaServer]:
    """vLLM-, llama.cpp- and Ollama-shaped servers that list a model per fault."""
    vllm = scripted.openai(ttft_ms=10, gap_ms=2, models=["m", *fault_models(OPENAI_ERRORS)])
    llama = scripted.openai(
        flavor="llamacpp", ttft_ms=10, gap_ms=2, models=["m", *fault_models(LLAMACPP_ERRORS)]
    )
    entries = [model_entry(OLLAMA_MODEL)] + [model_entry(m) for m in fault_models(OLLAMA_ERRORS)]
    return vllm, llama, scripted.ollama(ttft_ms=10, gap_ms=2, models=entries)


def one_line(error: str | None) -> bool:
    return bool(error) and "\n" not in error and "\r" not in error and len(error) <= 500


def test_every_fault_is_recorded_and_the_run_goes_on(tmp_path, capsys, servers):
    """One run, a lane per fault and a healthy lane per server, all at the same time."""
    vllm, llama, ollama = servers
    lanes: list[tuple[str, str, str, str | None]] = [  # engine, url, model, expected
        ("openai", vllm.base_url, "m", None),
        ("openai", llama.base_url, "m", None),
        ("ollama", ollama.url, OLLAMA_MODEL, None),
    ]
    lanes += [("openai", vllm.base_url, f"fault-{f}", e) for f, e in OPENAI_ERRORS.items()]
    lanes += [("openai", llama.base_url, f"fault-{f}", e) for f, e in LLAMACPP_ERRORS.items()]
    lanes += [("ollama", ollama.url, f"fault-{f}", e) for f, e in OLLAMA_ERRORS.items()]
    argv = ["run", "--prompt", "한국어로 짧게 답해 주세요.", "--concurrency", "1,2"]
    argv += ["--requests", "2", "--warmup", "1", "--max-tokens", "6", "--timeout", "1"]
    argv += ["--lanes-parallel", "--db", str(tmp_path / "s.db")]
    argv += ["--output-json", str(tmp_path / "r.json")]
    for engine, url, model, _ in lanes:
        argv += ["--lane", engine, url, model]

    code = cli.main(argv)
    out, err = capsys.readouterr()

    assert code == 1  # some requests failed; everything was still written
    # Below the table, one line per failed level with its reason.
    failed_lines = [line for line in out.splitlines() if line.startswith("failures: ")]
    assert len(failed_lines) == (len(lanes) - 3) * 2, out
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert doc["status"] == "completed with failures"
    assert len(doc["lanes"]) == len(lanes)
    for lane, (_, _, model, expected) in zip(doc["lanes"], lanes, strict=True):
        assert lane["model"] == model
        assert [lv["concurrency"] for lv in lane["levels"]] == [1, 2]
        requests = [r for lv in lane["levels"] for r in lv["requests"]] + lane["warmup"]
        assert len(requests) == 2 + 2 + 1  # every request accounted for, warm-up too
        for level in lane["levels"]:
            want = (2, 0) if expected is None else (0, 2)
            assert (level["completed"], level["failed"]) == want, (model, level)
            # Every request of a faulty lane failed: the level and the lane say so.
            assert level["status"] == ("completed" if expected is None else "failed")
            assert (level["error"] is None) == (expected is None), level["error"]
        assert lane["status"] == ("completed" if expected is None else "failed")
        for req in requests:
            if expected is None:
                assert req["error"] is None and req["output_text"], (model, req)
            else:
                assert one_line(req["error"]), (model, req["error"])
                assert req["error"].startswith(expected), (model, req["error"])
    # Per-level counts in the store agree with the document.
    with store.opened(tmp_path / "s.db") as conn:
        counts = store.count_requests(conn, doc["run_id"])
        rows = store.get_requests(conn, doc["run_id"], include_warmup=True)
    assert len(rows) == len(lanes) * 5
    assert sum(c["failed"] for c in counts.values()) == (len(lanes) - 3) * 4
    assert sum(c["completed"] for c in counts.values()) == 3 * 4
    # The CLI said so as it went: a line per failed request, counts per level.
    assert err.count("request failed:") == (len(lanes) - 3) * 4
    assert "failed so far)" in err and "Traceback" not in err


@pytest.mark.parametrize("engine", ["openai", "ollama"])
def test_faults_mid_level_are_counted_and_the_level_goes_on(tmp_path, engine):
    """Faults switched on and off between requests of one level (concurrency 1): each
    request gets its own reason, the ones between succeed, the counts add up."""
    cycle = ["reset", "error", "malformed", "http503", "close", "drop"]
    plan = [f for fault in cycle for f in (None, fault)]  # ok, fault, ok, fault, ...
    errors = OPENAI_ERRORS if engine == "openai" else OLLAMA_ERRORS
    if engine == "openai":
        server: Any = OpenAIServer(OpenAIScript(ttft_ms=5, gap_ms=1, models=["m"]))
        model, url = "m", None
    else:
        server = OllamaServer(OllamaScript(ttft_ms=5, gap_ms=1))
        model, url = OLLAMA_MODEL, None
    events: list[dict[str, Any]] = []

    def progress(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "request":  # the next request (c=1) meets the next fault
            done = sum(e["event"] == "request" for e in events)
            server.script.fault = plan[done] if done < len(plan) else None

    with server:
        url = server.base_url if engine == "openai" else server.url
        server.script.fault = plan[0]
        config = RunConfig(
            lanes=[LaneSpec(engine=engine, base_url=url, model=model)],  # type: ignore[arg-type]
            prompts=[Prompt.from_text("hi")],
            concurrency=[1],
            requests=len(plan),
            warmup=0,
            sampling=Sampling(max_tokens=5),
            timeout_s=5.0,
        )

        async def go() -> str:
            lanes = await prepare_lanes(config)
            try:
                return await execute_run(config, lanes, db=tmp_path / "s.db", progress=progress)
            finally:
                await close_lanes(lanes)

        run_id = asyncio.run(go())
    with store.opened(tmp_path / "s.db") as conn:
        rows = sorted(store.get_requests(conn, run_id), key=lambda r: r["idx"])
        counts = store.count_requests(conn, run_id)
        run = store.get_run(conn, run_id)
    assert [r["idx"] for r in rows] == list(range(len(plan)))
    for row, fault in zip(rows, plan, strict=True):
        if fault is None:
            assert row["error"] is None and row["output_tokens"] == 5, row
        else:
            assert one_line(row["error"]) and row["error"].startswith(errors[fault]), row
    assert counts == {(0, 1): {"completed": len(cycle), "failed": len(cycle)}}
    # Half the requests failed: the run ended, with failures, and says the commonest why.
    assert run["status"] == "completed with failures"
    assert " c=1 completed with failures: 6 of 12 failed: " in run["error"]
    last = [e for e in events if e["event"] == "request"][-1]
    assert (last["completed"], last["failed"]) == (len(cycle), len(cycle))


def test_a_hung_engine_ends_within_the_timeout_plus_the_grace(tmp_path, capsys, servers):
    """Streams that stall mid-way or never answer: every request in flight ends at its
    timeout, so the run ends within timeout + grace however the engine hangs."""
    vllm, _, ollama = servers
    timeout_s = 1.0
    argv = ["run", "--prompt", "hi", "--concurrency", "4", "--requests", "4", "--warmup", "0"]
    argv += ["--timeout", str(timeout_s), "--lanes-parallel", "--max-tokens", "40"]
    argv += ["--db", str(tmp_path / "s.db"), "--output-json", str(tmp_path / "r.json")]
    for fault in ("hang", "hang_headers"):
        argv += ["--lane", "openai", vllm.base_url, f"fault-{fault}"]
        argv += ["--lane", "ollama", ollama.url, f"fault-{fault}"]
    started = time.monotonic()
    code = cli.main(argv)
    elapsed = time.monotonic() - started
    capsys.readouterr()
    assert code == 1
    # Generous for a loaded machine: the bound that matters is "not forever".
    assert elapsed < timeout_s + TIMEOUT_GRACE_S + 10, elapsed
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    for lane in doc["lanes"]:
        (level,) = lane["levels"]
        assert (level["completed"], level["failed"]) == (0, 4)
        assert all(r["error"] == "timed out after 1 s" for r in level["requests"])
    with store.opened(tmp_path / "s.db") as conn:
        rows = store.get_requests(conn, doc["run_id"])
    assert len(rows) == 16
    assert all(r["t_done"] - r["t_send"] < timeout_s + TIMEOUT_GRACE_S for r in rows)


def start_server(kind: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """A scripted server as its own process (it prints READY <port>)."""
    module = "tests.scripted.openai_server" if kind == "openai" else "tests.scripted.ollama_server"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--no-record", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server listens (or exits)
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise AssertionError(f"scripted server did not start: {line!r}")
    return proc, int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.mark.parametrize("engine", ["openai", "ollama"])
def test_engine_killed_mid_run(tmp_path, capsys, engine):
    """SIGKILL the engine's process mid-run: the requests in flight end as 'connection
    lost' or 'no response', the rest as 'cannot connect' (refused); all are recorded."""
    proc, port = start_server(engine, "--ttft-ms", "50", "--gap-ms", "50")
    db = tmp_path / "s.db"
    url = f"http://127.0.0.1:{port}" + ("/v1" if engine == "openai" else "")
    model = "scripted-model" if engine == "openai" else OLLAMA_MODEL
    killed = threading.Event()

    def killer() -> None:
        # Kill once two requests have finished: the run is surely mid-way (16 to go).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with store.opened(db) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            except store.StoreError:
                done = 0
            if done >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=killer, daemon=True)
    try:
        watcher.start()
        code = cli.main(
            [
                "run", "--engine", engine, "--base-url", url, "--model", model,
                "--prompt", "hi", "--concurrency", "2", "--requests", "16", "--warmup", "0",
                "--max-tokens", "20", "--timeout", "10", "--db", str(db),
                "--output-json", str(tmp_path / "r.json"),
            ]
        )  # fmt: skip
        watcher.join(10)
    finally:
        stop(proc)
    _, err = capsys.readouterr()
    assert killed.is_set()
    assert code == 1 and "Traceback" not in err
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    # The run went on to its end; the requests the dead server lost are its failures.
    assert doc["status"] == "completed with failures"
    (level,) = doc["lanes"][0]["levels"]
    assert level["completed"] + level["failed"] == 16 == len(level["requests"])
    assert level["completed"] >= 2 and level["failed"] >= 10
    errors = [r["error"] for r in level["requests"] if r["error"]]
    assert all(one_line(e) for e in errors), errors
    # In flight at the kill: mid-stream, or sent and not yet answered.
    lost = [e for e in errors if e.startswith(("connection lost", "no response from"))]
    # Refused connections read as the client words them: "[Errno 111] Connect call
    # failed" (openai's transport), "All connection attempts failed" (httpx).
    refused = [e for e in errors if e.startswith("cannot connect to") and f":{port}" in e]
    assert lost and refused and len(lost) + len(refused) == len(errors), errors
