"""The verdict in plain words, on hand-built run documents: batching, queueing (Ollama with
its own queue time growing 1 s per user), partly batching, open-loop rates, too little
data (one level, levels too close, a failed lane), and the lanes compared with and
without an SLO."""

from __future__ import annotations

from typing import Any

import pytest

from lib.analysis import verdict
from lib.analysis.verdict_words import dur, dur_pair, pct, sig2, times


def dist(p50: float | None) -> dict[str, float | None]:
    return {"mean": p50, "p50": p50, "p90": p50, "p99": p50}


def level(
    load: float | None,
    tps: float,
    out: float,
    ttft: float = 100.0,
    *,
    mode: str = "concurrency",
    status: str = "completed",
    completed: int = 8,
    failed: int = 0,
    achieved: float | None = None,
    served: float | None = None,
    queue_ms: float | None = None,
) -> dict[str, Any]:
    """A level as results.run_document gives it, with only what the verdict reads. A rate
    level answers as fast as requests arrived unless `served` says otherwise."""
    server = {"queue_ms": queue_ms} if queue_ms is not None else None
    arrived = achieved if achieved is not None else load
    if served is None:
        served = arrived if mode == "rate" and arrived else out / 100.0
    return {
        "concurrency": int(load) if mode == "concurrency" and load else 1,
        "load_mode": mode,
        "load": load,
        "achieved_rate": achieved if achieved is not None else load,
        "status": status,
        "completed": completed,
        "failed": failed,
        "output_throughput": out if completed else None,
        "request_throughput": served if completed else None,
        "tokens_per_s": dist(tps if completed else None),
        "ttft_ms": dist(ttft if completed else None),
        "requests": [{"error": None, "server": server} for _ in range(completed)],
    }


def lane(name: str, kind: str, levels: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "engine": kind, "engine_info": {"kind": kind}, "levels": levels, **extra}


def one(lane_doc: dict[str, Any]) -> dict[str, Any]:
    (v,) = verdict.lane_verdicts({"lanes": [lane_doc]})
    return v


BATCHING = lane("vLLM", "vllm", [level(1, 40.0, 40.0, 120.0), level(8, 36.8, 276.0, 180.0)])
QUEUEING = lane(
    "Ollama",
    "ollama",
    # One slot: each extra user adds one service time (1 s) to everyone's wait.
    [
        level(c, 40.0 / c, 40.0, 150.0 + 1000.0 * (c - 1), queue_ms=1000.0 * (c - 1))
        for c in (1, 2, 4, 8)
    ],
)


def test_a_batching_lane_keeps_its_speed_and_multiplies_throughput():
    v = one(BATCHING)
    assert v["scaling"] == "batches" and v["kind"] == "vllm"
    assert v["sentence"] == (
        "batches: at 8 users each keeps 92% of its single-user speed; throughput ×6.9"
    )
    assert v["setting"] is None  # nothing to change
    assert v["figures"]["speed_kept"] == pytest.approx(0.92)
    assert v["figures"]["parallelism"] == pytest.approx(6.9)


def test_a_queueing_ollama_lane_names_its_queue_and_its_setting():
    v = one(QUEUEING)
    assert v["scaling"] == "queues"
    assert v["sentence"] == (
        "queues: serves about 1 request at a time — at 8 users each waits ~7.2 s before its "
        "first token (150 ms alone); Ollama's own queue time grows ~1 s per extra user"
    )
    assert v["figures"]["queue_slope_ms_per_user"] == pytest.approx(1000.0)
    assert "OLLAMA_NUM_PARALLEL" in v["setting"] and "OLLAMA_MAX_QUEUE" in v["setting"]


def test_partly_batching_says_how_many_at_a_time():
    v = one(lane("srv", "openai", [level(1, 40.0, 40.0), level(8, 15.0, 120.0, 900.0)]))
    assert v["scaling"] == "partly"
    assert v["sentence"].startswith("partly batches: serves about 3 requests at a time")
    assert "38% of its single-user speed; throughput ×3" in v["sentence"]
    assert v["setting"].startswith("the server's batch/parallel setting")


@pytest.mark.parametrize(
    ("kind", "info", "words"),
    [
        ("vllm", {}, "--max-num-seqs"),
        ("llama.cpp", {}, "--parallel (-np)"),
        ("llama.cpp", {"server": "llama-cpp-python"}, "one request at a time whatever"),
    ],
)
def test_each_engine_gets_its_own_setting(kind, info, words):
    doc = lane("x", kind, QUEUEING["levels"])
    doc["engine_info"] |= info
    v = one(doc)
    assert v["scaling"] == "queues" and words in v["setting"]
    assert "Ollama's own queue" not in v["sentence"]  # only Ollama reports its queue


def test_a_lane_from_a_higher_first_level_says_where_throughput_stops():
    v = one(lane("srv", "openai", [level(4, 40.0, 160.0), level(16, 10.0, 165.0, 4000.0)]))
    assert v["scaling"] == "queues"
    assert v["sentence"].startswith("queues: throughput stops growing past 4 users (throughput ×1)")


def test_rate_run_says_where_it_stops_keeping_up():
    levels = [
        level(1, 40.0, 40.0, 100.0, mode="rate"),
        level(2, 39.0, 80.0, 110.0, mode="rate"),
        level(4, 35.0, 150.0, 160.0, mode="rate"),
        level(8, 9.0, 160.0, 12000.0, mode="rate", achieved=7.9),
        level(None, 5.0, 150.0, 30000.0, mode="rate"),  # all at once: no place on the scale
    ]
    v = one(lane("vLLM", "vllm", levels))
    assert v["figures"]["kept_up_to"] == 4 and v["figures"]["fell_behind_at"] == 8
    assert v["scaling"] == "partly"
    assert v["sentence"] == (
        "partly batches: serves about 4 requests at a time — keeps up to 4 req/s; "
        "at 8 req/s TTFT p50 grows from 0.1 s to 12 s"
    )
    assert "--max-num-seqs" in v["setting"]


def test_rate_run_of_a_one_at_a_time_server_queues():
    levels = [level(r, 40.0, 40.0 * r, 100.0, mode="rate") for r in (0.5, 1)]
    levels.append(level(2, 8.0, 41.0, 9000.0, mode="rate"))
    v = one(lane("Ollama", "ollama", levels))
    assert v["scaling"] == "queues"
    assert v["sentence"] == (
        "queues: serves about 1 request at a time — keeps up to 1 req/s; at 2 req/s "
        "TTFT p50 grows from 0.1 s to 9 s"
    )


def test_rates_too_low_to_show_batching_say_so():
    levels = [level(r, 40.0, 4.0 * r, 100.0, mode="rate") for r in (0.5, 1)]
    v = one(lane("x", "vllm", levels))
    assert v["scaling"] == "unknown" and v["setting"] is None
    assert v["sentence"].startswith("keeps up with every rate tried, up to 1 req/s")
    assert "do not show whether it batches" in v["sentence"]


def test_a_rate_with_a_growing_queue_or_failing_is_not_kept_up_with():
    # A seeded draw that arrived below the rate asked, or answers whose completed req/s
    # trails the arrivals over a few requests (the last answer's tail), is no fault of
    # the server: only a growing TTFT or failures say it fell behind.
    fine = [
        level(1, 40.0, 40.0, mode="rate"),
        level(4, 40.0, 60.0, mode="rate", achieved=2.5, served=1.5),
    ]
    assert "keeps up with every rate tried" in one(lane("x", "vllm", fine))["sentence"]
    queued = [level(1, 40.0, 40.0, mode="rate"), level(4, 40.0, 60.0, 900.0, mode="rate")]
    assert one(lane("x", "vllm", queued))["sentence"].endswith(
        "at 4 req/s TTFT p50 grows from 100 ms to 900 ms"
    )
    failing = [level(1, 40.0, 40.0, mode="rate"), level(4, 40.0, 60.0, mode="rate", failed=2)]
    v = one(lane("x", "vllm", failing))
    assert v["sentence"].endswith("at 4 req/s 2 of 10 requests failed")


@pytest.mark.parametrize(
    ("levels", "words"),
    [
        ([level(4, 40.0, 160.0)], "one level measured (4 users)"),
        ([level(4, 40.0, 160.0), level(6, 39.0, 230.0)], "too close to tell"),
        ([level(1, 0, 0, status="failed", completed=0, failed=8)], "every level failed"),
        ([level(1, 0, 0, status="running", completed=0)], "no level finished"),
        ([], "no level measured yet"),
        ([level(2, 40.0, 80.0, mode="rate")], "one rate measured (2 req/s)"),
    ],
)
def test_too_little_data_is_said_plainly_never_guessed(levels, words):
    v = one(lane("x", "ollama", levels))
    assert v["scaling"] == "unknown" and v["setting"] is None
    assert words in v["sentence"]


def test_a_failed_level_is_left_out_and_failures_are_named():
    levels = [
        level(1, 40.0, 40.0),
        level(8, 36.8, 276.0, failed=2),
        level(16, 0, 0, status="failed", completed=0, failed=8),
    ]
    v = one(lane("x", "vllm", levels))
    assert v["figures"]["high"] == 8  # the failed c=16 has nothing to compare
    assert v["sentence"].endswith("; 2 of 10 requests failed at 8 users")


def capacity(value: float | None, levels: list[tuple[float, float, bool]], **kw: Any) -> dict:
    """A lane's capacity as load_levels.lane_capacity writes it."""
    reason = kw.get("reason", "found" if value is not None else "none")
    rows = [{"load": x, "goodput": g, "passed": ok} for x, g, ok in levels]
    return {"value": value, "mode": kw.get("mode", "concurrency"), "reason": reason, "levels": rows}


SLO = {"ttft_ms": 500.0, "target": 0.9}


def test_with_an_slo_the_lane_with_the_highest_capacity_wins():
    doc = {
        "slo": SLO,
        "lanes": [
            lane("Ollama", "ollama", [], capacity=capacity(1, [(1, 0.9, True), (8, 0.1, False)])),
            lane("vLLM", "vllm", [], capacity=capacity(8, [(1, 1.0, True), (8, 7.5, True)])),
        ],
    }
    assert verdict.run_verdict_lines(doc) == [
        "At TTFT ≤ 500 ms for 90% of requests, vLLM serves 8 users at once, Ollama 1."
    ]


def test_an_slo_tie_is_broken_by_goodput_at_the_highest_common_load():
    doc = {
        "slo": SLO,
        "lanes": [
            lane(
                "A", "vllm", [], capacity=capacity(4, [(1, 1, True), (4, 3.1, True), (8, 1, False)])
            ),
            lane(
                "B", "vllm", [], capacity=capacity(4, [(1, 1, True), (4, 7.9, True), (8, 2, False)])
            ),
            lane("C", "ollama", [], capacity=capacity(None, [(1, 0.0, False)])),
        ],
    }
    lines = verdict.run_verdict_lines(doc)
    assert lines[0] == (
        "At TTFT ≤ 500 ms for 90% of requests, B serves 4 users at once, A 4, C none."
    )
    # The tied lanes' highest common load is 8 users (C, not tied, does not narrow it).
    assert lines[1] == "B and A tie; B has the higher goodput at 8 users (2 vs 1 good req/s)."


def test_an_slo_no_lane_met_and_a_rate_capacity():
    none = {
        "slo": SLO,
        "lanes": [lane(n, "vllm", [], capacity=capacity(None, [(1, 0, False)])) for n in "AB"],
    }
    assert verdict.run_verdict_lines(none) == [
        "At TTFT ≤ 500 ms for 90% of requests, no lane met the target at any load tried."
    ]
    rate = {
        "slo": SLO,
        "lanes": [
            lane(
                "A",
                "vllm",
                [],
                capacity=capacity(4, [(4, 3.8, True)], mode="rate", reason="ceiling"),
            ),
            lane("B", "ollama", [], capacity=capacity(0.5, [(4, 0.4, False)], mode="rate")),
        ],
    }
    assert verdict.run_verdict_lines(rate) == [
        "At TTFT ≤ 500 ms for 90% of requests, A serves at least 4 req/s, B 0.5 req/s."
    ]


def test_without_an_slo_throughput_at_the_top_and_speed_at_the_bottom():
    doc = {"lanes": [QUEUEING, BATCHING]}  # common levels: 1 and 8
    assert verdict.run_verdict_lines(doc) == [
        "At 8 users, the highest level every lane ran, vLLM has the highest output "
        "throughput: 280 tok/s (Ollama 40 tok/s).",
        "At 1 user, Ollama and vLLM are about even for the best per-user speed (tokens/s "
        "p50): 40 tok/s, vLLM 40 tok/s.",
    ]


def test_without_common_levels_or_with_one_lane_nothing_is_compared():
    apart = {"lanes": [lane("A", "vllm", [level(1, 4, 4)]), lane("B", "vllm", [level(2, 4, 8)])]}
    assert verdict.run_verdict_lines(apart) == [
        "The lanes ran no level in common: nothing to compare side by side."
    ]
    assert verdict.run_verdict_lines({"lanes": [BATCHING]}) == []
    assert verdict.lane_verdicts({"lanes": []}) == []


def test_numbers_are_rounded_for_people_with_units():
    assert [sig2(x) for x in (0.153, 3.24, 12.3, 523.0, 1234.0, 9.96, 0.0)] == [
        "0.15", "3.2", "12", "520", "1200", "10", "0",
    ]  # fmt: skip
    assert (dur(150.0), dur(3240.0), dur_pair(100.0, 12000.0)) == (
        "150 ms", "3.2 s", ("0.1 s", "12 s"),
    )  # fmt: skip
    assert (pct(0.923), times(6.94)) == ("92%", "×6.9")
