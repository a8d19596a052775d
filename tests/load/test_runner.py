"""The runner against scripted servers: closed loop, warm-ups, timeouts, parallel lanes."""

from __future__ import annotations

import asyncio
import json

import pytest

from lib import store
from lib.analysis.results import run_document
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load.runner import execute_run, prepare_lanes
from tests.scripted import OpenAIScript, OpenAIServer


def _config(*servers: OpenAIServer, **kw) -> RunConfig:
    base = {
        "lanes": [LaneSpec(engine="openai", base_url=s.base_url, model="m") for s in servers],
        "prompts": [Prompt.from_text("one"), Prompt.from_text("two"), Prompt.from_text("three")],
        "concurrency": [1, 4],
        "requests": 8,
        "warmup": 2,
        "sampling": Sampling(max_tokens=6),
    }
    base.update(kw)
    return RunConfig(**base)


async def _run(config: RunConfig, db, **kw) -> str:
    lanes = await prepare_lanes(config)
    return await execute_run(config, lanes, db=db, **kw)


def test_closed_loop_keeps_concurrency_in_flight(tmp_path):
    script = OpenAIScript(ttft_ms=30, gap_ms=10, models=["m"])
    with OpenAIServer(script) as server:
        run_id = asyncio.run(_run(_config(server), tmp_path / "s.db"))
        recorded = server.recorded("/v1/chat/completions")
    with store.opened(tmp_path / "s.db") as conn:
        recs = store.get_requests(conn, run_id, include_warmup=True)
    warm = [r for r in recs if r["warmup"]]
    assert len(warm) == 2 and {r["concurrency"] for r in warm} == {0}
    c4 = sorted((r for r in recs if r["concurrency"] == 4), key=lambda r: r["t_send"])
    assert len(c4) == 8
    # Requests cycle through the prompts.
    assert sorted(r["prompt_idx"] for r in c4) == [0, 0, 0, 1, 1, 1, 2, 2]
    # Closed loop at c=4: the first four go out together, the fifth only after one ended.
    first_done = min(r["t_done"] for r in c4[:4])
    assert c4[3]["t_send"] < first_done <= c4[4]["t_send"] + 1e-3
    assert len(recorded) == 2 + 8 + 8


def test_hung_request_is_timed_out_and_the_run_goes_on(tmp_path):
    script = OpenAIScript(ttft_ms=20, gap_ms=5, models=["m", "fault-hang"])
    with OpenAIServer(script) as server:
        config = _config(server, concurrency=[2], requests=2, warmup=0, timeout_s=1.0)
        config.lanes.append(LaneSpec(engine="openai", base_url=server.base_url, model="fault-hang"))
        run_id = asyncio.run(_run(config, tmp_path / "s.db"))
    with store.opened(tmp_path / "s.db") as conn:
        ok = store.get_requests(conn, run_id, lane_idx=0)
        hung = store.get_requests(conn, run_id, lane_idx=1)
        run = store.get_run(conn, run_id)
    assert all(r["error"] is None for r in ok) and len(ok) == 2
    assert len(hung) == 2 and all("timed out" in r["error"].lower() for r in hung)
    # Bounded by the timeout plus the runner's grace, never forever.
    assert all(r["t_done"] - r["t_send"] < 1.0 + 5.0 for r in hung)
    # One lane fine, one whose every request timed out: not a plain "completed".
    assert run["status"] == "completed with failures"
    assert "c=2 failed: 2 of 2 failed: timed out after 1 s" in run["error"]
    with store.opened(tmp_path / "s.db") as conn:
        levels = {lv["lane_idx"]: lv for lv in store.get_levels(conn, run_id)}
    assert levels[0]["status"] == "completed" and levels[0]["error"] is None
    assert levels[1]["status"] == "failed"
    assert levels[1]["error"] == "2 of 2 failed: timed out after 1 s"


def test_lanes_parallel_overlap_in_time(tmp_path):
    script = OpenAIScript(ttft_ms=30, gap_ms=20, models=["m"])
    with (
        OpenAIServer(script) as a,
        OpenAIServer(OpenAIScript(ttft_ms=30, gap_ms=20, models=["m"])) as b,
    ):
        config = _config(a, b, concurrency=[1], requests=3, warmup=0, lanes_parallel=True)
        run_id = asyncio.run(_run(config, tmp_path / "s.db"))
    with store.opened(tmp_path / "s.db") as conn:
        lane0 = store.get_requests(conn, run_id, lane_idx=0)
        lane1 = store.get_requests(conn, run_id, lane_idx=1)
    assert lane0[0]["t_send"] < max(r["t_done"] for r in lane1)
    assert lane1[0]["t_send"] < max(r["t_done"] for r in lane0)
    assert script is not None


def test_quality_flags_are_stored_with_each_request(tmp_path):
    with OpenAIServer(OpenAIScript(ttft_ms=5, gap_ms=1, models=["m"])) as server:
        config = _config(server, concurrency=[1], requests=2, warmup=0)
        config.prompts = [Prompt.from_text("한국어로 답해 주세요.", expect_lang="ko")]
        run_id = asyncio.run(_run(config, tmp_path / "s.db"))
    with store.opened(tmp_path / "s.db") as conn:
        recs = store.get_requests(conn, run_id)
    assert all(r["quality"] is not None and "flags" in r["quality"] for r in recs)


def test_a_failing_sandbox_engine_fails_the_run_with_its_log(tmp_path, monkeypatch):
    """Every request of the only lane fails: the run, its levels and its warm-up are
    failed with the reason, and the sandbox engine's log tail is kept with the run."""
    script = OpenAIScript(ttft_ms=5, gap_ms=1, models=["fault-http503"])
    with OpenAIServer(script) as server:
        home = tmp_path / "sandbox"
        (home / "logs").mkdir(parents=True)
        log = home / "logs" / "llama.log"
        log.write_text("loading model\n\nllama_model_load: error: out of memory\n", "utf-8")
        engine = {"name": "llama", "base_url": server.base_url, "log": str(log), "pid": 0}
        (home / "state.json").write_text(json.dumps({"engines": [engine]}), "utf-8")
        monkeypatch.setenv("SERVESCOPE_SANDBOX_HOME", str(home))
        monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
        config = _config(concurrency=[1, 2], requests=2, warmup=1)
        config.lanes = [LaneSpec(engine="openai", base_url=server.base_url, model="fault-http503")]
        run_id = asyncio.run(_run(config, tmp_path / "s.db"))
    with store.opened(tmp_path / "s.db") as conn:
        run = store.get_run(conn, run_id)
        levels = store.get_levels(conn, run_id)
        (warm,) = store.get_levels(conn, run_id, warmup=True)
    assert run["status"] == "failed"
    assert run["error"] == (
        "vllm:fault-http503 c=1 failed: 2 of 2 failed: HTTP 503: Service Unavailable"
        " (+1 more level)"
    )
    assert [(lv["concurrency"], lv["status"]) for lv in levels] == [(1, "failed"), (2, "failed")]
    assert warm["concurrency"] == 0 and warm["status"] == "failed"
    assert warm["error"] == "1 of 1 failed: HTTP 503: Service Unavailable"
    assert warm["started_at"] <= warm["finished_at"] <= levels[0]["started_at"]
    report = run["env"]["engine_logs"]["0"]
    assert report["name"] == "llama" and report["ready"] is False
    assert report["log"] == str(log)
    assert report["tail"] == ["loading model", "llama_model_load: error: out of memory"]


def test_a_reasoning_lane_stores_and_documents_time_to_first_answer(tmp_path):
    # Two reasoning chunks (30 and 40 ms after receipt), then the answer from 50 ms.
    script = OpenAIScript(ttft_ms=30, gap_ms=10, reasoning_chunks=2, models=["m"])
    with OpenAIServer(script) as server:
        config = _config(server, concurrency=[1], requests=2, warmup=1)
        run_id = asyncio.run(_run(config, tmp_path / "s.db"))
    with store.opened(tmp_path / "s.db") as conn:
        recs = store.get_requests(conn, run_id, include_warmup=True)
    assert len(recs) == 3 and all(r["error"] is None for r in recs)
    for r in recs:
        assert r["ttft_ms"] >= 30 and r["ttfat_ms"] >= 50
        assert r["reasoning_ms"] == pytest.approx(r["ttfat_ms"] - r["ttft_ms"])
        assert r["reasoning_ms"] >= 0  # 20 ms on the server; exact bounds: engine tests
    document = run_document(tmp_path / "s.db", run_id)
    (lane,) = document["lanes"]
    (level,) = lane["levels"]
    assert level["ttfat_ms"]["p50"] >= max(50, level["ttft_ms"]["p50"])
    assert level["ttfat_ms"]["mean"] == pytest.approx(
        sum(r["ttfat_ms"] for r in recs if not r["warmup"]) / 2
    )
    for out in (*level["requests"], *lane["warmup"]):
        assert out["ttfat_ms"] >= 50 and out["reasoning_ms"] is not None
