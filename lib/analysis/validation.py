"""Every level checks its own measurements, from the rows it stored (no re-run).

Each check gives pass, warn, fail or unmeasurable with one sentence saying what was
found and what it means for the numbers; nothing reads as passed that was not checked.

- streaming: did the output arrive token by token? A stream whose first and last
  output chunks came within BURST_MS (with more than a handful of tokens) arrived in
  one burst: its TTFT is the whole answer's time and its ITL is empty. Above a third of
  a level's streams, TTFT and ITL are not per-token timings for that level.
- client_kept_up: the load generator's own event-loop lag during the level (sampled by
  lib/load/client_probe.py) and the requests it kept in flight against those asked.
- tokens: server-counted output tokens against output chunks (ITL is per chunk, TPOT
  per token), requests without a count, the server's own second count where it sends one
  (llama.cpp's timings, Ollama's eval_count), and whether ignore_eos was honoured.
- consistency: E2E = TTFT + the sum of ITL per request, and the client's own count of
  the requests and tokens it recorded against the rows read back from the store.
- schedule (open-loop levels): how late requests went out against their arrival
  schedule. Arrivals must not wait for the server; a cap on requests in flight makes
  them wait on purpose, and the check says so.
- ollama_server_time (Ollama lanes): the client's generation time against the server's
  eval_duration; streams Ollama cut off without `done` are failures, counted here too.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lib.analysis.validation_summary import FAIL, PASS, UNMEASURABLE, WARN

# The run-wide summary of these checks is validation_summary's; callers use validation.<name>.
from lib.analysis.validation_summary import problem_level as problem_level
from lib.analysis.validation_summary import problem_lines as problem_lines
from lib.analysis.validation_summary import run_verdict as run_verdict
from lib.analysis.validation_summary import verdict_line as verdict_line
from lib.core.load_pattern import level_label

CHECKS = (
    "streaming",
    "client_kept_up",
    "schedule",
    "tokens",
    "consistency",
    "ollama_server_time",
)

BURST_MS = 5.0  # first to last output chunk within this: the answer came in one burst
MIN_BURST_TOKENS = 5  # fewer tokens than this may honestly fit in one chunk
BURST_WARN = 0.10  # share of a level's streams
BURST_FAIL = 1 / 3
LAG_WARN_MS = 20.0  # the client's event-loop lag, p99
LAG_FAIL_MS = 100.0
TOKENS_PER_CHUNK_WARN = 1.5
CONSISTENCY_TOL_MS = 1.0
OLLAMA_WARN = 0.05  # |client / server generation time - 1|, median over requests
OLLAMA_FAIL = 0.15
# A few milliseconds apart agree whatever the ratio: on short answers the gap is the
# machine's scheduling, not a measurement error.
OLLAMA_ABS_MS = 5.0
SCHEDULE_WARN_MS = 5.0  # open-loop sends behind their schedule, p99: always fine below
SCHEDULE_WARN_SHARE = 0.1  # ... or below this share of the mean time between arrivals
SCHEDULE_FAIL_SHARE = 0.5
SCHEDULE_FAIL_MS = 50.0
CUT_OFF_MARK = "without done"  # lib/engines/ollama.py's reason for a silent cut-off


def check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def _completed(requests: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in requests if not r.get("error")]


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# --- the checks ---------------------------------------------------------------------------


def streaming(requests: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    eligible = [
        r
        for r in _completed(requests)
        if r.get("ttft_ms") is not None
        and r.get("e2el_ms") is not None
        and (r.get("output_tokens") or 0) >= MIN_BURST_TOKENS
    ]
    if not eligible:
        return check(
            "streaming",
            UNMEASURABLE,
            f"Not measurable: no completed request with {MIN_BURST_TOKENS} or more output "
            "tokens counted by the server.",
        )
    bursts = sum(1 for r in eligible if r["e2el_ms"] - r["ttft_ms"] <= BURST_MS)
    share = bursts / len(eligible)
    of = f"{bursts} of {len(eligible)} streams"
    if share >= BURST_FAIL:
        return check(
            "streaming",
            FAIL,
            f"{of} arrived in one burst (first to last chunk within {BURST_MS:g} ms): TTFT "
            "and ITL here are not per-token timings; read E2E latency and throughput.",
        )
    if share >= BURST_WARN:
        return check(
            "streaming",
            WARN,
            f"{of} arrived in one burst (first to last chunk within {BURST_MS:g} ms): "
            "their TTFT is the whole answer's time, which pulls TTFT percentiles up.",
        )
    return check("streaming", PASS, f"{of} arrived in one burst; the rest token by token.")


def in_flight(requests: Sequence[Mapping[str, Any]]) -> float | None:
    """Requests in flight on average over the level (time-weighted), from send/done."""
    spans = [
        (r["t_send"], r["t_done"])
        for r in requests
        if r.get("t_send") is not None and r.get("t_done") is not None
    ]
    if not spans:
        return None
    duration = max(b for _, b in spans) - min(a for a, _ in spans)
    return sum(b - a for a, b in spans) / duration if duration > 0 else None


def client_kept_up(
    requests: Sequence[Mapping[str, Any]],
    concurrency: int,
    client: Mapping[str, float],
    rate_label: str | None = None,
) -> dict[str, str]:
    flight = in_flight(requests)
    asked = min(concurrency, len(requests)) if requests else concurrency
    load = f"{flight:.1f} requests in flight on average for {asked} asked" if flight else ""
    if rate_label is not None:  # open loop: the load is a rate, in flight is what it made
        arrivals = rate_label if rate_label == "all at once" else f"at {rate_label}"
        load = f"{flight:.1f} requests in flight on average, arrivals {arrivals}" if flight else ""
    p99, peak = client.get("loop_lag_p99_ms"), client.get("loop_lag_max_ms")
    if p99 is None:
        return check(
            "client_kept_up",
            UNMEASURABLE,
            "Not measurable: the client's event loop was not sampled in this run (recorded "
            "before servescope sampled it)" + (f"; {load}." if load else "."),
        )
    lag = f"event-loop lag p99 {p99:.1f} ms, max {peak or 0:.0f} ms"
    workers = int(client.get("load_workers") or 1)
    if workers > 1:
        lag += f" over {workers} load processes"
    if p99 >= LAG_FAIL_MS:
        return check(
            "client_kept_up",
            FAIL,
            f"Client did not keep up: {lag}; every latency here includes the client's own "
            "delay" + (f" ({load})." if load else "."),
        )
    if p99 >= LAG_WARN_MS:
        return check(
            "client_kept_up",
            WARN,
            f"Client lagged: {lag}; latencies below ~{p99:.0f} ms are not trustworthy"
            + (f" ({load})." if load else "."),
        )
    return check("client_kept_up", PASS, f"Client kept up: {lag}" + (f"; {load}." if load else "."))


def tokens(requests: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, str]:
    done = _completed(requests)
    counted = [r for r in done if r.get("output_tokens") is not None]
    if not counted:
        why = "no completed request" if not done else "the server sent no token counts"
        return check(
            "tokens",
            UNMEASURABLE,
            f"Not measurable: {why}; throughput and TPOT cannot be checked against chunks.",
        )
    total = sum(r["output_tokens"] for r in counted)
    chunks = sum(len(r.get("itl_ms") or []) + 1 for r in counted if r["output_tokens"])
    per_chunk = total / chunks if chunks else 0.0
    found = [
        f"server counted {total:,} output tokens in {chunks:,} chunks ({per_chunk:.2f} a chunk)"
    ]
    status = PASS
    if per_chunk > TOKENS_PER_CHUNK_WARN:
        status = WARN
        found.append("ITL is per chunk here, TPOT per token")
    missing = len(done) - len(counted)
    if missing:
        status = WARN
        found.append(f"{_n(missing, 'request')} without a count, left out of throughput")
    # A second count from the server itself (llama.cpp's timings.predicted_n, Ollama's
    # eval_count) beside the one the numbers use.
    second = [
        (r["output_tokens"], (r.get("server") or {}).get(key))
        for r in counted
        for key in ("predicted_n", "eval_count")
        if (r.get("server") or {}).get(key) is not None
    ]
    disagree = [(a, b) for a, b in second if a != b]
    if disagree:
        status = WARN
        a, b = disagree[0]
        found.append(
            f"the server's two counts disagree on {len(disagree)} of {len(second)} requests "
            f"(e.g. {a} vs {b} in its timings)"
        )
    elif second:
        found.append(f"the server's own second count agrees on all {len(second)}")
    retokenized = sum(1 for r in counted if r.get("token_source") == "server-tokenizer")
    if retokenized:
        found.append(f"{retokenized} re-counted by the server's tokenizer from the text")
    max_tokens = settings.get("max_tokens")
    if settings.get("ignore_eos") and max_tokens:
        short = sum(1 for r in counted if r["output_tokens"] < max_tokens)
        if short:
            status = WARN
            found.append(
                f"ignore_eos asked but {short} of {len(counted)} answers stopped before "
                f"{max_tokens} tokens"
            )
        else:
            found.append(f"ignore_eos honoured ({max_tokens} tokens each)")
    text = "; ".join(found)
    return check("tokens", status, text[0].upper() + text[1:] + ".")


def consistency(
    requests: Sequence[Mapping[str, Any]], client: Mapping[str, float]
) -> dict[str, str]:
    completed = _completed(requests)
    done = [r for r in completed if r.get("ttft_ms") is not None and r.get("e2el_ms")]
    gaps = [abs(r["e2el_ms"] - r["ttft_ms"] - sum(r.get("itl_ms") or [])) for r in done]
    off = [gap for gap in gaps if gap > CONSISTENCY_TOL_MS]
    found, status = [], PASS
    if off:
        status = FAIL
        found.append(
            f"E2E differs from TTFT + ITL for {len(off)} of {len(done)} requests "
            f"(by up to {max(off):.1f} ms): a timing bug"
        )
    elif done:
        found.append(f"E2E = TTFT + ITL for all {len(done)} completed requests")
    recorded = client.get("recorded_requests")
    if recorded is not None:
        stored = len(requests)
        tok_rec = int(client.get("recorded_output_tokens") or 0)
        tok_stored = sum(r.get("output_tokens") or 0 for r in completed)
        if int(recorded) != stored or tok_rec != tok_stored:
            status = FAIL
            found.append(
                f"the client recorded {int(recorded)} requests and {tok_rec:,} tokens, the "
                f"store holds {stored} and {tok_stored:,}: measurements were lost"
            )
        else:
            found.append(f"all {stored} recorded requests and {tok_stored:,} tokens are stored")
    if not found:
        return check(
            "consistency",
            UNMEASURABLE,
            "Not measurable: no completed request, and no client count in this run.",
        )
    text = "; ".join(found)
    return check("consistency", status, text[0].upper() + text[1:] + ".")


def ollama_server_time(requests: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    cut = sum(1 for r in requests if CUT_OFF_MARK in str(r.get("error") or ""))
    cut_text = f" {_n(cut, 'stream')} cut off without done, counted as failed." if cut else ""
    ratios = []
    for r in _completed(requests):
        server = r.get("server") or {}
        n = r.get("output_tokens") or 0
        eval_ms = server.get("eval_ms") or 0.0
        if n > 1 and eval_ms > 0 and r.get("ttft_ms") is not None and r.get("e2el_ms"):
            # The client sees tokens 2..n after its first; eval_duration covers all n.
            client_ms, server_ms = r["e2el_ms"] - r["ttft_ms"], eval_ms * (n - 1) / n
            agree = abs(client_ms - server_ms) <= OLLAMA_ABS_MS
            ratios.append(1.0 if agree else client_ms / server_ms)
    if not ratios:
        return check(
            "ollama_server_time",
            FAIL if cut else UNMEASURABLE,
            "Not measurable: no completed request with Ollama's eval timings." + cut_text,
        )
    gap = statistics.median(abs(x - 1) for x in ratios)
    status = PASS if gap <= OLLAMA_WARN else WARN if gap <= OLLAMA_FAIL else FAIL
    if cut:
        status = FAIL
    said = "agrees with" if status == PASS else "differs from"
    return check(
        "ollama_server_time",
        status,
        f"Client generation time {said} Ollama's eval_duration by {gap:.1%} (median of "
        f"{len(ratios)})." + cut_text,
    )


# --- a level, a run -----------------------------------------------------------------------


def schedule(requests: Sequence[Mapping[str, Any]], load: Mapping[str, Any]) -> dict[str, str]:
    """Open loop: did each request go out when its arrival was due?"""
    lags = sorted(
        (r["t_send"] - r["t_scheduled"]) * 1000.0
        for r in requests
        if r.get("t_scheduled") is not None and r.get("t_send") is not None
    )
    if not lags:
        return check(
            "schedule", UNMEASURABLE, "Not measurable: no request recorded its scheduled time."
        )
    p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
    worst, count = lags[-1], _n(len(lags), "request")
    text = f"sends behind schedule p99 {p99:.2f} ms, max {worst:.1f} ms over {count}"
    rate = load.get("rate")
    cap = load.get("max_concurrency")
    if cap and p99 >= SCHEDULE_WARN_MS:
        return check(
            "schedule",
            WARN,
            f"Arrivals waited for the cap of {cap} in flight: {text}. The wait is in the "
            "client's queue, before the send; TTFT is timed from the send, so it leaves it out.",
        )
    if not rate:  # all at once: the lag is how long sending them all took
        status = PASS if p99 < SCHEDULE_FAIL_MS * 2 else WARN
        return check("schedule", status, f"All sent at once: the last went out {worst:.1f} ms in.")
    # Lateness matters against the time between arrivals: 30 ms late at 2 req/s leaves
    # the load as asked, 30 ms late at 100 req/s does not.
    gap_ms = 1000.0 / rate
    text += f", against {gap_ms:.0f} ms between arrivals on average"
    late = p99 / gap_ms
    if p99 < SCHEDULE_WARN_MS or late <= SCHEDULE_WARN_SHARE:
        return check("schedule", PASS, f"Arrivals kept to their schedule: {text}.")
    if late <= SCHEDULE_FAIL_SHARE:
        return check(
            "schedule",
            WARN,
            f"Arrivals ran late: {text}; the load was a little lighter and more even than asked.",
        )
    return check(
        "schedule",
        FAIL,
        f"Arrivals fell behind their schedule: {text}; the load was lighter than asked "
        "(a busy client machine, or too high a rate for one process).",
    )


def client_figures(samples: Iterable[Mapping[str, Any]], concurrency: int) -> dict[str, float]:
    """The level's client samples (lib/load/client_probe.py) by name."""
    out: dict[str, float] = {}
    for s in samples:
        labels = s.get("labels") or {}
        if s.get("source") == "client" and labels.get("concurrency") == str(concurrency):
            out[s["name"]] = float(s["value"])
    return out


def level_checks(
    requests: Sequence[Mapping[str, Any]],
    concurrency: int,
    engine_kind: str,
    settings: Mapping[str, Any],
    samples: Iterable[Mapping[str, Any]] = (),
    load: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """The validation block of one level of one lane (`load`: an open-loop level's)."""
    client = client_figures(samples, concurrency)
    open_loop = bool(load and load.get("mode") == "rate")
    rate_label = level_label(dict(load), concurrency) if open_loop and load else None
    out = [
        streaming(requests),
        client_kept_up(requests, concurrency, client, rate_label),
    ]
    if open_loop and load:
        out.append(schedule(requests, load))
    out += [tokens(requests, settings), consistency(requests, client)]
    if engine_kind == "ollama":
        out.append(ollama_server_time(requests))
    return out
