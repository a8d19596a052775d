"""What both adapters must get right when a model thinks before it answers: the same
assertions for Ollama's `thinking` and vLLM's / llama.cpp's reasoning deltas."""

from __future__ import annotations

import pytest

from lib.core.metrics import request_metrics
from lib.core.records import RequestResult


def assert_reasoning_timed_apart(r: RequestResult, sent: list[float], tol_s: float) -> None:
    """Three reasoning chunks, then the answer (scripted TTFT 30 ms, 8 ms between chunks;
    `sent`: when the server wrote each chunk): TTFT is the first chunk of any kind (vLLM's
    definition), TTFAT the first answer chunk's, the reasoning the time between them."""
    assert r.t_first_reasoning == r.chunk_times[0]
    assert r.t_first_answer == r.chunk_times[3]  # the first content chunk
    assert 0 <= r.t_first_answer - sent[3] <= tol_s
    m = request_metrics(r)
    # TTFT keeps vLLM's definition (first output of any kind); TTFAT is the answer's.
    assert m["ttft_ms"] == pytest.approx((r.chunk_times[0] - r.t_send) * 1000)
    assert m["ttfat_ms"] == pytest.approx((r.chunk_times[3] - r.t_send) * 1000)
    assert m["ttfat_ms"] >= (0.030 + 3 * 0.008) * 1000  # ttft + 3 gaps after receipt
    assert abs(m["reasoning_ms"] - (sent[3] - sent[0]) * 1000) <= tol_s * 1000
    assert m["reasoning_ms"] == pytest.approx(m["ttfat_ms"] - m["ttft_ms"])


def assert_no_reasoning(r: RequestResult) -> None:
    """No reasoning: the first answer chunk is the first chunk, TTFAT equals TTFT."""
    assert r.error is None
    assert (r.t_first_reasoning, r.t_first_answer) == (None, r.chunk_times[0])
    m = request_metrics(r)
    assert m["ttfat_ms"] == m["ttft_ms"] is not None
    assert m["reasoning_ms"] is None
