"""Per-request and aggregate metrics, as `vllm bench serve` defines them.

Pure functions: raw timestamps in, numbers out. Definitions:

- t0: just before the request is sent.
- ttft_ms: t0 -> first output-bearing chunk (reasoning, content or tool call), as vLLM.
- ttfat_ms: time to first answer token, t0 -> first answer chunk (content or tool call):
  what a user waits for when a model reasons first; equal to ttft_ms without reasoning.
  None when no answer chunk arrived (e.g. cut off while reasoning).
- reasoning_ms: first reasoning chunk -> first answer chunk; None without reasoning or
  without an answer.
- e2el_ms: t0 -> last output-bearing chunk.
- itl_ms: gaps between consecutive output-bearing chunks.
- tpot_ms: (e2el - ttft) / (output_tokens - 1), only where output_tokens > 1.
- output_tokens: counted by the server, never by chunks.
- per level: duration_s (first send -> last finish), request_throughput,
  output_throughput (output tokens / duration), mean/p50/p90/p99 of each latency
  (ttft, ttfat, tpot, itl, e2el) and of tokens_per_s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lib.core.records import RequestResult

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


def request_metrics(result: RequestResult) -> dict[str, Any]:
    """Client-side metrics of one request.

    ttft and e2el are None when no output-bearing chunk arrived (an error before the
    first token, or an empty answer); ttfat is None when no answer chunk arrived and
    reasoning_ms when there was no reasoning or no answer; tpot is None unless the server
    counted more than one output token; tokens_per_s is the user's view, output_tokens /
    e2el.
    """
    times = result.chunk_times
    ttft_ms = (times[0] - result.t_send) * 1000.0 if times else None
    answer, reasoning = result.t_first_answer, result.t_first_reasoning
    if answer is None and reasoning is None and times:
        answer = times[0]  # chunks not told apart: all answer (RequestResult)
    ttfat_ms = (answer - result.t_send) * 1000.0 if answer is not None else None
    reasoning_ms = None
    if answer is not None and reasoning is not None:
        reasoning_ms = (answer - reasoning) * 1000.0
    e2el_ms = (times[-1] - result.t_send) * 1000.0 if times else None
    itl_ms = [(b - a) * 1000.0 for a, b in itertools.pairwise(times)]
    return {
        "ttft_ms": ttft_ms,
        "ttfat_ms": ttfat_ms,
        "reasoning_ms": reasoning_ms,
        "e2el_ms": e2el_ms,
        "itl_ms": itl_ms,
        "tpot_ms": tpot_ms(ttft_ms, e2el_ms, result.output_tokens),
        "tokens_per_s": tokens_per_second(result.output_tokens, e2el_ms),
    }


def tpot_ms(
    ttft_ms: float | None, e2el_ms: float | None, output_tokens: int | None
) -> float | None:
    """Time per output token after the first: (e2el - ttft) / (output_tokens - 1)."""
    if ttft_ms is None or e2el_ms is None or output_tokens is None or output_tokens <= 1:
        return None
    return (e2el_ms - ttft_ms) / (output_tokens - 1)


def tokens_per_second(output_tokens: int | None, e2el_ms: float | None) -> float | None:
    """A user's view of speed: output tokens over the request's whole latency."""
    if not output_tokens or not e2el_ms or e2el_ms <= 0:
        return None
    return output_tokens / (e2el_ms / 1000.0)


def distribution(values: Iterable[float | None]) -> dict[str, float | None]:
    """Mean, p50, p90 and p99 (linear interpolation, as numpy and vLLM use)."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    keys = ["mean", *(f"p{p}" for p in PERCENTILES)]
    if not clean:
        return dict.fromkeys(keys)
    arr = np.asarray(clean, dtype=float)
    out: dict[str, float | None] = {"mean": float(arr.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(arr, p))
    return out


def level_summary(
    requests: Sequence[Mapping[str, Any]], concurrency: int | None = None
) -> dict[str, Any]:
    """Aggregate one level's measured requests (warm-ups already left out).

    Each request mapping carries t_send and t_done (seconds on one clock), the
    per-request metrics above, output_tokens, prompt_tokens and error. Failed requests
    count towards `failed` and the level's duration but not towards latencies or
    throughput; ITL pools every gap of every completed request, as vLLM does.
    """
    done = [r for r in requests if not r.get("error")]
    failed = len(requests) - len(done)
    sends = [r["t_send"] for r in requests if r.get("t_send") is not None]
    ends = [r["t_done"] for r in requests if r.get("t_done") is not None]
    duration_s = (max(ends) - min(sends)) if sends and ends else None
    out_tokens = sum(r.get("output_tokens") or 0 for r in done)
    in_tokens = sum(r.get("prompt_tokens") or 0 for r in done)
    uncounted = sum(1 for r in done if r.get("output_tokens") is None)
    itl: list[float] = []
    for r in done:
        itl.extend(r.get("itl_ms") or [])
    rate = (lambda n: n / duration_s) if duration_s and duration_s > 0 else (lambda n: None)
    return {
        "concurrency": concurrency,
        "completed": len(done),
        "failed": failed,
        "duration_s": duration_s,
        "request_throughput": rate(len(done)),
        "output_throughput": rate(out_tokens),
        "total_output_tokens": out_tokens,
        "total_input_tokens": in_tokens,
        # Requests whose server gave no token count: throughput undercounts them.
        "uncounted_requests": uncounted,
        "ttft_ms": distribution(r.get("ttft_ms") for r in done),
        "ttfat_ms": distribution(r.get("ttfat_ms") for r in done),
        "tpot_ms": distribution(r.get("tpot_ms") for r in done),
        "itl_ms": distribution(itl),
        "e2el_ms": distribution(r.get("e2el_ms") for r in done),
        "tokens_per_s": distribution(r.get("tokens_per_s") for r in done),
    }


def goodput(
    requests: Sequence[Mapping[str, Any]],
    duration_s: float | None,
    ttft_slo_ms: float | None = None,
    tpot_slo_ms: float | None = None,
) -> float | None:
    """Requests per second that completed within the SLOs (ttft <= X and tpot <= Y).

    A request with no tpot (one output token) meets a tpot SLO trivially, as in vLLM.
    """
    if not duration_s or duration_s <= 0:
        return None
    good = 0
    for r in requests:
        if r.get("error") or r.get("ttft_ms") is None:
            continue
        if ttft_slo_ms is not None and r["ttft_ms"] > ttft_slo_ms:
            continue
        tpot = r.get("tpot_ms")
        if tpot_slo_ms is not None and tpot is not None and tpot > tpot_slo_ms:
            continue
        good += 1
    return good / duration_s


def ollama_server_timings(final: Mapping[str, Any]) -> dict[str, float | int | None]:
    """Ollama's own timings from the final chunk (ns in the API, ms here).

    Fields are omitted by the server when zero, so a missing field reads as 0.
    queue ~ total - load - prompt eval - eval: the wait inside the runner's parallel
    slots, which Ollama's own eval rate leaves out.
    """

    def ms(key: str) -> float:
        return (final.get(key) or 0) / 1e6

    total, load, prompt_eval, ev = (
        ms("total_duration"),
        ms("load_duration"),
        ms("prompt_eval_duration"),
        ms("eval_duration"),
    )
    eval_count = final.get("eval_count") or 0
    return {
        "total_ms": total,
        "load_ms": load,
        "prompt_eval_ms": prompt_eval,
        "eval_ms": ev,
        "queue_ms": max(total - load - prompt_eval - ev, 0.0) if total else None,
        "eval_tokens_per_s": (eval_count / (ev / 1000.0)) if ev > 0 else None,
        "prompt_eval_count": final.get("prompt_eval_count") or 0,
        "eval_count": eval_count,
    }
