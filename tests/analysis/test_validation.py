"""lib/analysis/validation.py: each level's checks of its own numbers, by hand and through
real runs against scripted servers (a bursty stream, a stalled client loop)."""

from __future__ import annotations

import asyncio
import time

from lib.analysis import results, validation
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.load import runner
from lib.load.runner import execute_run, prepare_lanes
from tests.scripted import OpenAIScript, OpenAIServer


def req(ttft=50.0, gaps=(10.0,) * 9, tokens=10, error=None, t_send=0.0, **extra):
    """A stored request row: E2E = TTFT + the gaps, as the engines measure it."""
    e2el = ttft + sum(gaps)
    return {
        "t_send": t_send,
        "t_done": t_send + e2el / 1000,
        "ttft_ms": ttft,
        "e2el_ms": e2el,
        "itl_ms": list(gaps),
        "output_tokens": tokens,
        "token_source": "server",
        "error": error,
        **extra,
    }


def client(p99=2.0, peak=5.0, recorded=None, tokens=None, c=4):
    labels = {"concurrency": str(c)}
    out = [
        {"source": "client", "name": "loop_lag_p99_ms", "value": p99, "labels": labels},
        {"source": "client", "name": "loop_lag_max_ms", "value": peak, "labels": labels},
    ]
    if recorded is not None:
        out += [
            {"source": "client", "name": "recorded_requests", "value": recorded, "labels": labels},
            {
                "source": "client",
                "name": "recorded_output_tokens",
                "value": tokens,
                "labels": labels,
            },
        ]
    return out


def by_name(checks):
    return {c["check"]: c for c in checks}


# --- streaming ---------------------------------------------------------------------------


def test_a_level_where_a_third_arrived_in_one_burst_fails_streaming():
    smooth = [req() for _ in range(6)]
    burst = [req(ttft=400.0, gaps=(0.1,) * 9) for _ in range(3)]
    got = validation.streaming(smooth + burst)
    assert got["status"] == "fail"
    assert got["detail"].startswith("3 of 9 streams arrived in one burst")
    assert "not per-token" in got["detail"]
    one = validation.streaming([*smooth, *smooth[:3], burst[0]])  # 1 of 10
    assert one["status"] == "warn" and one["detail"].startswith("1 of 10 streams")
    assert validation.streaming(smooth)["status"] == "pass"


def test_streaming_is_not_measurable_without_enough_tokens_or_answers():
    short = [req(gaps=(0.0,), tokens=2) for _ in range(4)]
    got = validation.streaming([*short, req(error="boom")])
    assert got["status"] == "unmeasurable"
    assert "no completed request with 5 or more output tokens" in got["detail"]


# --- the client --------------------------------------------------------------------------


def test_client_lag_decides_whether_the_client_kept_up():
    rows = [req(t_send=0.0), req(t_send=0.0), req(t_send=0.1), req(t_send=0.1)]
    fig = validation.client_figures(client(p99=150.0, peak=300.0), 4)
    got = validation.client_kept_up(rows, 4, fig)
    assert got["status"] == "fail"
    assert got["detail"].startswith("Client did not keep up: event-loop lag p99 150.0 ms")
    assert "requests in flight on average for 4 asked" in got["detail"]
    assert validation.client_kept_up(rows, 4, {"loop_lag_p99_ms": 30.0})["status"] == "warn"
    assert validation.client_kept_up(rows, 4, {"loop_lag_p99_ms": 1.0})["status"] == "pass"
    old = validation.client_kept_up(rows, 4, {})
    assert old["status"] == "unmeasurable" and "was not sampled" in old["detail"]


def test_client_figures_are_the_levels_own():
    samples = client(p99=9.0, c=1) + client(p99=99.0, c=4)
    assert validation.client_figures(samples, 1)["loop_lag_p99_ms"] == 9.0
    assert validation.client_figures(samples, 4)["loop_lag_p99_ms"] == 99.0


def test_in_flight_is_time_weighted():
    # Two requests of 1 s over 2 s: one in flight on average.
    rows = [{"t_send": 0.0, "t_done": 1.0}, {"t_send": 1.0, "t_done": 2.0}]
    assert validation.in_flight(rows) == 1.0


# --- tokens ------------------------------------------------------------------------------


def test_tokens_per_chunk_missing_counts_and_ignore_eos():
    two_a_chunk = [req(gaps=(10.0,) * 4, tokens=10) for _ in range(3)]  # 5 chunks, 10 tokens
    got = validation.tokens(two_a_chunk, {})
    assert got["status"] == "warn"
    assert "30 output tokens in 15 chunks (2.00 a chunk)" in got["detail"]
    assert "ITL is per chunk here" in got["detail"]
    ok = validation.tokens([req(), req()], {"ignore_eos": True, "max_tokens": 10})
    assert ok["status"] == "pass" and "ignore_eos honoured (10 tokens each)" in ok["detail"]
    short = validation.tokens([req(), req(tokens=7)], {"ignore_eos": True, "max_tokens": 10})
    assert short["status"] == "warn"
    assert "ignore_eos asked but 1 of 2 answers stopped before 10 tokens" in short["detail"]
    uncounted = validation.tokens([req(), req(tokens=None)], {})
    assert uncounted["status"] == "warn" and "1 request without a count" in uncounted["detail"]


def test_the_servers_second_count_is_compared():
    agree = [req(server={"predicted_n": 10}), req(server={"eval_count": 10})]
    got = validation.tokens(agree, {})
    assert got["status"] == "pass" and "second count agrees on all 2" in got["detail"]
    off = validation.tokens([req(server={"predicted_n": 12}), req()], {})
    assert off["status"] == "warn"
    assert "two counts disagree on 1 of 1 requests (e.g. 10 vs 12 in its timings)" in off["detail"]


def test_no_token_counts_is_not_measurable_never_passed():
    got = validation.tokens([req(tokens=None), req(tokens=None)], {})
    assert got["status"] == "unmeasurable"
    assert "the server sent no token counts" in got["detail"]
    assert validation.tokens([req(error="x")], {})["status"] == "unmeasurable"


# --- consistency -------------------------------------------------------------------------


def test_consistency_compares_e2el_and_the_clients_count():
    rows = [req(), req(), req(error="boom", tokens=None)]
    fig = validation.client_figures(client(recorded=3, tokens=20), 4)
    got = validation.consistency(rows, fig)
    assert got["status"] == "pass"
    assert "E2E = TTFT + ITL for all 2 completed requests" in got["detail"]
    assert "all 3 recorded requests and 20 tokens are stored" in got["detail"]
    lost = validation.consistency(rows[:1], fig)
    assert lost["status"] == "fail"
    assert (
        "the client recorded 3 requests and 20 tokens, the store holds 1 and 10" in lost["detail"]
    )
    bad = req()
    bad["e2el_ms"] += 12.0
    skew = validation.consistency([bad, req()], {})
    assert skew["status"] == "fail"
    assert "E2E differs from TTFT + ITL for 1 of 2 requests (by up to 12.0 ms)" in skew["detail"]


# --- Ollama ------------------------------------------------------------------------------


def test_ollama_generation_time_against_eval_duration():
    # 10 tokens, 90 ms from first to last chunk; eval_duration 100 ms covers all 10.
    agree = [req(server={"eval_ms": 100.0}) for _ in range(3)]
    got = validation.ollama_server_time(agree)
    assert got["status"] == "pass" and "agrees with Ollama's eval_duration by 0.0%" in got["detail"]
    slow = [req(server={"eval_ms": 60.0}) for _ in range(3)]  # client 90 vs server 54
    assert validation.ollama_server_time(slow)["status"] == "fail"
    # Short answers: 4 ms apart is the machine's scheduling, not a disagreement.
    short = [req(gaps=(2.0,) * 9, server={"eval_ms": 15.6}) for _ in range(3)]  # 18 vs 14
    assert validation.ollama_server_time(short)["status"] == "pass"
    cut = validation.ollama_server_time(
        [*agree, req(error="stream ended without done (Ollama cut the answer off)")]
    )
    assert cut["status"] == "fail"
    assert "1 stream cut off without done, counted as failed." in cut["detail"]


def test_level_checks_name_the_contract_and_ollama_only_on_ollama():
    rows = [req(server={"eval_ms": 100.0}) for _ in range(4)]
    names = [c["check"] for c in validation.level_checks(rows, 4, "vllm", {}, client())]
    assert names == ["streaming", "client_kept_up", "tokens", "consistency"]
    olla = validation.level_checks(rows, 4, "ollama", {}, client())
    assert [c["check"] for c in olla][-1] == "ollama_server_time"
    assert all(c["status"] in {"pass", "warn", "fail", "unmeasurable"} for c in olla)


def test_run_verdict_counts_checks_made_and_lists_problems():
    lanes = [
        {
            "name": "vLLM",
            "levels": [
                {
                    "concurrency": 5,
                    "validation": [
                        validation.check("streaming", "fail", "9 of 18 streams …"),
                        validation.check("tokens", "pass", "fine"),
                        validation.check("client_kept_up", "unmeasurable", "not sampled"),
                    ],
                }
            ],
        }
    ]
    verdict = validation.run_verdict(lanes)
    assert (verdict["checks"], verdict["made"], verdict["passed"]) == (3, 2, 1)
    assert validation.verdict_line(verdict) == "numbers checked: 1 of 2 passed (1 not measurable)"
    assert validation.problem_lines(verdict) == ["✗ vLLM c=5 streaming: 9 of 18 streams …"]


# --- real runs against scripted servers --------------------------------------------------


def _run(server: OpenAIServer, db, concurrency=(4,), requests=8) -> dict:
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=server.base_url, model="m")],
        prompts=[Prompt.from_text("one")],
        concurrency=list(concurrency),
        requests=requests,
        warmup=0,
        sampling=Sampling(max_tokens=12),
    )

    async def go() -> str:
        lanes = await prepare_lanes(config)
        return await execute_run(config, lanes, db=db)

    return results.run_document(db, asyncio.run(go()))


def _checks(document: dict, c: int) -> dict:
    level = next(lv for lv in document["lanes"][0]["levels"] if lv["concurrency"] == c)
    return by_name(level["validation"])


def test_a_bursty_server_is_flagged_and_a_streaming_one_passes(tmp_path):
    with OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=0, models=["m"])) as bursty:
        doc = _run(bursty, tmp_path / "a.db")
    got = _checks(doc, 4)
    assert got["streaming"]["status"] == "fail", got["streaming"]
    assert got["streaming"]["detail"].startswith("8 of 8 streams arrived in one burst")
    assert got["consistency"]["status"] == "pass", got["consistency"]
    assert "all 8 recorded requests" in got["consistency"]["detail"]
    assert doc["validation"]["problems"][0]["check"] == "streaming"
    # 30 ms between chunks: a busy 2-core machine stalling the client for a whole 15 ms-gap
    # stream (~100 ms) once made its chunks arrive together; 210 ms is far beyond that.
    with OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=30, models=["m"])) as steady:
        fine = _checks(_run(steady, tmp_path / "b.db"), 4)
    assert fine["streaming"]["status"] == "pass", fine["streaming"]
    assert fine["client_kept_up"]["status"] in {"pass", "warn"}, fine["client_kept_up"]


def test_a_stalled_client_loop_is_flagged(tmp_path, monkeypatch):
    """Something in the client blocks its event loop for 150 ms after every answer (here
    the per-answer check): the level says the client did not keep up."""

    def stalling_check(*args, **kwargs):
        time.sleep(0.15)
        return None

    monkeypatch.setattr(runner, "_quality_checker", lambda: stalling_check)
    with OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=10, models=["m"])) as server:
        doc = _run(server, tmp_path / "s.db", concurrency=(2,), requests=6)
    got = _checks(doc, 2)["client_kept_up"]
    assert got["status"] == "fail", got
    assert got["detail"].startswith("Client did not keep up")
