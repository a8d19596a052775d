"""Metrics on hand-computed cases (definitions as `vllm bench serve`)."""

import pytest

from lib.core import metrics
from lib.core.records import RequestResult


def make(t_send, chunks, tokens, error=None, t_done=None):
    return RequestResult(
        t_send=t_send,
        t_done=t_done if t_done is not None else (chunks[-1] if chunks else t_send),
        chunk_times=chunks,
        output_tokens=tokens,
        token_source="server" if tokens is not None else "none",
        error=error,
    )


def test_request_metrics_hand_computed():
    # Sent at 10.000 s; chunks at +150, +170, +190, +230 ms; the server counted 6 tokens
    # (two chunks carried two tokens each).
    r = make(10.0, [10.150, 10.170, 10.190, 10.230], 6)
    m = metrics.request_metrics(r)
    assert m["ttft_ms"] == pytest.approx(150.0)
    assert m["e2el_ms"] == pytest.approx(230.0)
    assert m["itl_ms"] == pytest.approx([20.0, 20.0, 40.0])
    # (230 - 150) / (6 - 1) = 16 ms: from server tokens, not the 4 chunks.
    assert m["tpot_ms"] == pytest.approx(16.0)
    assert m["tokens_per_s"] == pytest.approx(6 / 0.230)


def test_tpot_needs_more_than_one_token_and_a_server_count():
    assert metrics.request_metrics(make(0.0, [0.1], 1))["tpot_ms"] is None
    assert metrics.request_metrics(make(0.0, [0.1, 0.2], None))["tpot_ms"] is None
    assert metrics.request_metrics(make(0.0, [0.1, 0.2], None))["tokens_per_s"] is None


def test_no_output_chunk_leaves_latencies_empty():
    m = metrics.request_metrics(make(0.0, [], None, error="HTTP 503", t_done=0.05))
    assert m == {
        "ttft_ms": None,
        "ttfat_ms": None,
        "reasoning_ms": None,
        "e2el_ms": None,
        "itl_ms": [],
        "tpot_ms": None,
        "tokens_per_s": None,
    }


def test_reasoning_first_ttft_keeps_vllm_definition_ttfat_waits_for_the_answer():
    # Reasoning chunks at +100 and +140 ms, the first answer chunk at +300 ms.
    r = make(10.0, [10.100, 10.140, 10.300, 10.320], 8)
    r.t_first_reasoning, r.t_first_answer = 10.100, 10.300
    m = metrics.request_metrics(r)
    assert m["ttft_ms"] == pytest.approx(100.0)  # first output of any kind, as vLLM
    assert m["ttfat_ms"] == pytest.approx(300.0)
    assert m["reasoning_ms"] == pytest.approx(200.0)
    assert m["e2el_ms"] == pytest.approx(320.0)
    assert m["tpot_ms"] == pytest.approx((320.0 - 100.0) / 7)  # unchanged by reasoning


def test_ttfat_without_reasoning_or_without_an_answer():
    plain = make(0.0, [0.2, 0.3], 2)
    plain.t_first_answer = 0.2
    m = metrics.request_metrics(plain)
    assert m["ttfat_ms"] == m["ttft_ms"] == pytest.approx(200.0)
    assert m["reasoning_ms"] is None
    # Cut off while still reasoning: output, but no answer.
    thinking = make(0.0, [0.2, 0.3], 2)
    thinking.t_first_reasoning = 0.2
    m = metrics.request_metrics(thinking)
    assert m["ttft_ms"] == pytest.approx(200.0)
    assert m["ttfat_ms"] is None and m["reasoning_ms"] is None
    # A chunk that carried reasoning and answer both (the end of thinking mid-delta).
    both = make(0.0, [0.2], 1)
    both.t_first_reasoning = both.t_first_answer = 0.2
    m = metrics.request_metrics(both)
    assert (m["ttfat_ms"], m["reasoning_ms"]) == (pytest.approx(200.0), 0.0)


def test_chunks_not_told_apart_count_as_answer():
    # A result whose maker did not classify its chunks (first_* left None): all answer.
    m = metrics.request_metrics(make(0.0, [0.15, 0.2], 2))
    assert m["ttfat_ms"] == m["ttft_ms"] == pytest.approx(150.0)
    assert m["reasoning_ms"] is None


def test_distribution_linear_interpolation():
    d = metrics.distribution([10.0, 20.0, 30.0, 40.0, None])
    assert d["mean"] == pytest.approx(25.0)
    assert d["p50"] == pytest.approx(25.0)
    assert d["p90"] == pytest.approx(37.0)  # 10 + 0.9 * 3 * 10
    assert d["p99"] == pytest.approx(39.7)
    assert metrics.distribution([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def _rec(t_send, t_done, ttft, e2el, tokens, error=None, itl=(), ttfat=None):
    return {
        "t_send": t_send,
        "t_done": t_done,
        "ttft_ms": ttft,
        "ttfat_ms": ttft if ttfat is None else ttfat,
        "e2el_ms": e2el,
        "tpot_ms": metrics.tpot_ms(ttft, e2el, tokens),
        "tokens_per_s": metrics.tokens_per_second(tokens, e2el),
        "itl_ms": list(itl),
        "output_tokens": tokens,
        "prompt_tokens": 10,
        "error": error,
    }


def test_level_summary_counts_throughput_and_failures():
    recs = [
        _rec(100.0, 101.0, 200.0, 1000.0, 41, itl=[20.0, 30.0]),
        _rec(100.5, 102.0, 300.0, 1500.0, 61, itl=[10.0]),
        _rec(101.0, 104.0, None, None, None, error="timed out after 3 s"),
    ]
    s = metrics.level_summary(recs, concurrency=2)
    assert s["completed"] == 2 and s["failed"] == 1
    assert s["duration_s"] == pytest.approx(4.0)  # first send 100.0 -> last finish 104.0
    assert s["request_throughput"] == pytest.approx(0.5)
    assert s["total_output_tokens"] == 102
    assert s["output_throughput"] == pytest.approx(25.5)
    assert s["ttft_ms"]["mean"] == pytest.approx(250.0)
    assert s["tpot_ms"]["p50"] == pytest.approx((20.0 + 20.0) / 2)  # 800/40 and 1200/60
    assert s["itl_ms"]["mean"] == pytest.approx(20.0)  # pooled gaps 20, 30, 10
    assert s["total_input_tokens"] == 20
    assert s["ttfat_ms"]["mean"] == pytest.approx(250.0)  # no reasoning: as ttft


def test_level_summary_ttfat_distribution_beside_ttft():
    recs = [
        _rec(0.0, 1.0, 100.0, 900.0, 10, ttfat=400.0),
        _rec(0.0, 1.0, 200.0, 900.0, 10, ttfat=600.0),
        _rec(0.0, 1.0, None, None, None, error="reset"),  # failed: left out
    ]
    s = metrics.level_summary(recs, concurrency=2)
    assert s["ttft_ms"]["mean"] == pytest.approx(150.0)
    assert s["ttfat_ms"] == {
        "mean": pytest.approx(500.0),
        "p50": pytest.approx(500.0),
        "p90": pytest.approx(580.0),
        "p99": pytest.approx(598.0),
    }
    assert "reasoning_ms" not in s  # per request only
    # Rows stored before ttfat was recorded read None: an empty distribution.
    old = [{k: v for k, v in r.items() if k != "ttfat_ms"} for r in recs]
    assert metrics.level_summary(old)["ttfat_ms"]["p50"] is None


def test_level_summary_flags_uncounted_tokens():
    s = metrics.level_summary([_rec(0.0, 1.0, 100.0, 900.0, None)], concurrency=1)
    assert s["uncounted_requests"] == 1
    assert s["output_throughput"] == 0.0


def test_goodput_applies_both_slos():
    recs = [
        _rec(0.0, 1.0, 100.0, 1100.0, 11),  # tpot 100
        _rec(0.0, 1.0, 300.0, 800.0, 11),  # ttft too slow
        _rec(0.0, 1.0, 100.0, 2100.0, 11),  # tpot 200 too slow
        _rec(0.0, 1.0, None, None, None, error="reset"),
    ]
    assert metrics.goodput(recs, 2.0, ttft_slo_ms=200, tpot_slo_ms=150) == pytest.approx(0.5)
    assert metrics.goodput(recs, 2.0) == pytest.approx(1.5)
    assert metrics.goodput(recs, 0.0) is None


def test_ollama_server_timings_with_omitted_zero_fields():
    final = {
        "total_duration": 7_338_000_000,
        "prompt_eval_count": 90,
        "prompt_eval_duration": 338_000_000,
        "eval_count": 187,
        "eval_duration": 7_000_000_000,
        # load_duration omitted: zero when the model was already loaded
    }
    t = metrics.ollama_server_timings(final)
    assert t["load_ms"] == 0.0
    assert t["eval_ms"] == pytest.approx(7000.0)
    assert t["eval_tokens_per_s"] == pytest.approx(187 / 7.0)
    assert t["queue_ms"] == pytest.approx(0.0)
    assert metrics.ollama_server_timings({})["eval_tokens_per_s"] is None
