"""The verdict in plain words, computed from a run document (results.run_document).

Per lane, how it scales with load, from its lowest and highest finished levels:

- per-user speed kept = tokens/s p50 at the highest load ÷ at the lowest;
- effective parallelism = output throughput at the highest load ÷ at the lowest.

A lane *batches* when each user keeps most of its speed (≥ 60%) as users are added; it
*queues* when throughput stays flat (parallelism ≤ 1.5) while each user slows down: the
server works on about one request at a time and the rest wait (the seed log's Ollama at 5
requests; servebench's "works on about 1 at once"); in between it *partly batches*. Rate
runs (open loop) say the highest rate the lane kept up with and where its requests
queued. Where the data cannot tell (one level, levels too close, nothing completed), the
verdict says so and names no class: "unknown" is an answer, a guess is not.

Across lanes (`run_verdict_lines`): with an SLO, which lane serves the most load within it
(its capacity, lib/analysis/load_levels.lane_capacity); without, which has the highest
output throughput at the highest level every lane ran and the best per-user speed at the
lowest. The words and the engine settings are lib/analysis/verdict_words.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lib.analysis.lane_memory import engine_kind
from lib.analysis.verdict_words import (
    dur,
    dur_pair,
    engine_setting,
    pct,
    req_s,
    sig2,
    times,
    tok_s,
    users,
)
from lib.core import outcome
from lib.core.load_pattern import RATE, rate_label
from lib.core.slo import Slo

BATCHES, PARTLY, QUEUES, UNKNOWN = "batches", "partly", "queues", "unknown"
SPEED_KEPT_BATCHES = 0.6  # each user keeps this share of its speed: the engine batches
PARALLEL_QUEUES = 1.5  # throughput grows no more than this: one request at a time
# Rate runs estimate requests at once from one request's speed at the lowest rate, which
# varies with each prompt's prefill: a server that runs one request at a time read 1.8
# on the sandbox's llama-cpp-python (English preset). Below 2 is not evidence of batching.
RATE_AT_ONCE_QUEUES = 2.0
# Closed loop: loads closer than this cannot tell the two apart (a queueing server at 4 vs 6
# users still keeps 4/6 = 67% of its speed).
MIN_SPREAD = 2.0
# Open loop: a rate is kept up with while none of its requests fails and TTFT p50 stays
# within 2× (+100 ms) of the lowest rate's (a growing queue shows there first).
TTFT_GROWTH, TTFT_SLACK_MS = 2.0, 100.0
QUEUE_SLOPE_MIN_MS = 50.0  # Ollama's own queue growth worth a clause, per extra user
EVEN = 1.05  # lanes within 5% of each other are "about even"


def _p50(level: Mapping[str, Any], key: str) -> float | None:
    return (level.get(key) or {}).get("p50")


def _usable(level: Mapping[str, Any]) -> bool:
    """A finished level with completed requests and the figures the verdict compares."""
    return (
        level.get("status") in (outcome.COMPLETED, outcome.PARTIAL)
        and (level.get("completed") or 0) > 0
        and (_p50(level, "tokens_per_s") or 0) > 0  # divided by: never 0 or missing
        and level.get("output_throughput") is not None
    )


def _load(level: Mapping[str, Any]) -> float | None:
    """Users at once, or req/s (None: all at once); older documents have no `load`."""
    if "load" in level:
        return level["load"]
    return level.get("concurrency")


def _at(level: Mapping[str, Any]) -> str:
    """Where a level sits, for a sentence: "8 users" or "2 req/s"."""
    if level.get("load_mode") == RATE:
        return rate_label(level.get("load"))
    return users(_load(level) or 0)


def _verdict(lane: Mapping[str, Any], scaling: str, sentence: str, **figures: Any) -> dict:
    kind = engine_kind(lane)
    relevant = scaling in (QUEUES, PARTLY) or figures.get("fell_behind_at") is not None
    return {
        "lane": lane["name"],
        "kind": kind,
        "scaling": scaling,
        "sentence": sentence,
        "setting": engine_setting(kind, lane.get("engine_info")) if relevant else None,
        "figures": figures,
    }


def lane_verdicts(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One verdict per lane, in the document's order:
    {lane, kind, scaling (batches|partly|queues|unknown), sentence, setting, figures}."""
    return [lane_verdict(lane) for lane in document.get("lanes", [])]


def lane_verdict(lane: Mapping[str, Any]) -> dict[str, Any]:
    levels = lane.get("levels") or []
    usable = [lv for lv in levels if _usable(lv)]
    if not levels:
        return _verdict(lane, UNKNOWN, "no level measured yet: nothing to judge")
    if not usable:
        if all(lv.get("status") == outcome.FAILED for lv in levels):
            return _verdict(
                lane, UNKNOWN, "every level failed (see the failures): nothing to judge"
            )
        return _verdict(
            lane, UNKNOWN, "no level finished with completed requests: nothing to judge"
        )
    if usable[0].get("load_mode") == RATE:
        return _rate_verdict(lane, usable)
    return _closed_verdict(lane, usable)


def _failures(levels: Sequence[Mapping[str, Any]]) -> str:
    """ "; 3 of 8 requests failed at 8 users" for levels that finished with failures."""
    bits = [
        f"{lv['failed']} of {lv['failed'] + lv['completed']} requests failed at {_at(lv)}"
        for lv in levels
        if lv.get("failed")
    ]
    return "; " + ", ".join(bits) if bits else ""


def _closed_verdict(lane: Mapping[str, Any], usable: list[Mapping[str, Any]]) -> dict[str, Any]:
    usable = sorted(usable, key=lambda lv: _load(lv) or 0)
    if len(usable) < 2:
        only = usable[0]
        return _verdict(
            lane,
            UNKNOWN,
            f"one level measured ({_at(only)}): how it scales needs two, e.g. --concurrency 1,8",
            low=_load(only),
            high=_load(only),
        )
    low, high = usable[0], usable[-1]
    c_low, c_high = float(_load(low) or 0), float(_load(high) or 0)
    if c_low <= 0 or c_high / c_low < MIN_SPREAD:
        return _verdict(
            lane,
            UNKNOWN,
            f"{_at(low)} and {_at(high)} are too close to tell batching from queueing: "
            "run loads at least 2× apart, e.g. --concurrency 1,8",
            low=c_low,
            high=c_high,
        )
    kept = _p50(high, "tokens_per_s") / _p50(low, "tokens_per_s")
    parallel = (
        high["output_throughput"] / low["output_throughput"] if low["output_throughput"] else None
    )
    ttft_low, ttft_high = _p50(low, "ttft_ms"), _p50(high, "ttft_ms")
    slope = _ollama_queue_slope(lane, usable)
    figures = {
        "mode": "concurrency",
        "low": c_low,
        "high": c_high,
        "speed_kept": kept,
        "parallelism": parallel,
        "tokens_per_s_low": _p50(low, "tokens_per_s"),
        "tokens_per_s_high": _p50(high, "tokens_per_s"),
        "output_throughput_low": low["output_throughput"],
        "output_throughput_high": high["output_throughput"],
        "ttft_p50_low_ms": ttft_low,
        "ttft_p50_high_ms": ttft_high,
        "queue_slope_ms_per_user": slope,
    }
    single = c_low == 1
    base = "single-user" if single else f"{sig2(c_low)}-user"
    growth = f"throughput {times(parallel)}" if parallel is not None else "throughput unknown"
    failed = _failures(usable)
    if parallel is not None and parallel <= PARALLEL_QUEUES and kept < SPEED_KEPT_BATCHES:
        how = (
            "serves about 1 request at a time"
            if single
            else f"throughput stops growing past {users(c_low)} ({growth})"
        )
        wait = ""
        if ttft_high is not None:
            alone = f" ({dur(ttft_low)} alone)" if single and ttft_low is not None else ""
            wait = (
                f" — at {users(c_high)} each waits ~{dur(ttft_high)} before its first token{alone}"
            )
        queue = ""
        if slope is not None and slope >= QUEUE_SLOPE_MIN_MS:
            queue = f"; Ollama's own queue time grows ~{dur(slope)} per extra user"
        return _verdict(lane, QUEUES, f"queues: {how}{wait}{queue}{failed}", **figures)
    if kept >= SPEED_KEPT_BATCHES:
        sentence = (
            f"batches: at {users(c_high)} each keeps {pct(kept)} of its {base} speed; {growth}"
        )
        return _verdict(lane, BATCHES, sentence + failed, **figures)
    how = f"serves about {round(parallel or 0)} requests at a time — " if single else ""
    sentence = (
        f"partly batches: {how}at {users(c_high)} each keeps {pct(kept)} of its {base} "
        f"speed; {growth}"
    )
    queue = ""
    if slope is not None and slope >= QUEUE_SLOPE_MIN_MS:
        queue = f"; Ollama's own queue time grows ~{dur(slope)} per extra user"
    return _verdict(lane, PARTLY, sentence + queue + failed, **figures)


def _ollama_queue_slope(
    lane: Mapping[str, Any], levels: Sequence[Mapping[str, Any]]
) -> float | None:
    """ms of Ollama's own queue time (metrics.ollama_server_timings) per extra user: the
    least-squares slope of each level's mean over its users at once. None for other
    engines, or with fewer than two levels that carry the timing."""
    if engine_kind(lane) != "ollama":
        return None
    points = []
    for lv in levels:
        waits = [
            r["server"]["queue_ms"]
            for r in lv.get("requests") or []
            if not r.get("error")
            and isinstance(r.get("server"), dict)
            and r["server"].get("queue_ms") is not None
        ]
        if waits and _load(lv) is not None:
            points.append((float(_load(lv)), float(np.mean(waits))))
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return float(np.polyfit(xs, ys, 1)[0])


def _kept_up(level: Mapping[str, Any], ttft0: float | None) -> bool:
    # Arrivals follow the schedule whatever the server does, and a level's completed req/s
    # over a few requests is mostly its last answer's tail: a server falling behind shows
    # as a queue, i.e. time to first token growing (and, past its limits, failures).
    if level.get("failed"):
        return False
    ttft = _p50(level, "ttft_ms")
    if ttft0 is None or ttft is None:
        return True
    return ttft <= max(TTFT_GROWTH * ttft0, ttft0 + TTFT_SLACK_MS)


def _why_behind(level: Mapping[str, Any], ttft0: float | None) -> str:
    """What went wrong at the first rate it did not keep up with."""
    if level.get("failed"):
        return f"{level['failed']} of {level['failed'] + level['completed']} requests failed"
    a, b = dur_pair(ttft0 or 0.0, _p50(level, "ttft_ms") or 0.0)
    return f"TTFT p50 grows from {a} to {b}"


def _rate_verdict(lane: Mapping[str, Any], usable: list[Mapping[str, Any]]) -> dict[str, Any]:
    # "All at once" has no rate to keep up with: it stays out of the scale.
    rated = sorted((lv for lv in usable if lv.get("load") is not None), key=lambda lv: lv["load"])
    if len(rated) < 2:
        where = _at(rated[0]) if rated else "all at once"
        return _verdict(
            lane,
            UNKNOWN,
            f"one rate measured ({where}): where it stops keeping up needs two or more, "
            "e.g. --rate 1,2,4,8",
        )
    low, high = rated[0], rated[-1]
    ttft0 = _p50(low, "ttft_ms")
    kept_up_to, behind = None, None
    for lv in rated:
        if _kept_up(lv, ttft0):
            kept_up_to = lv
        else:
            behind = lv
            break
    kept = _p50(high, "tokens_per_s") / _p50(low, "tokens_per_s")
    # Requests' worth of decoding at once at the highest rate: its output tokens per second
    # over what one request makes at the lowest rate. Above 1.5, it must run several at once.
    at_once = high["output_throughput"] / _p50(low, "tokens_per_s")
    figures = {
        "mode": "rate",
        "low": low["load"],
        "high": high["load"],
        "speed_kept": kept,
        "parallelism": high["output_throughput"] / low["output_throughput"]
        if low["output_throughput"]
        else None,
        "requests_at_once": at_once,
        "ttft_p50_low_ms": ttft0,
        "ttft_p50_high_ms": _p50(high, "ttft_ms"),
        "kept_up_to": kept_up_to["load"] if kept_up_to else None,
        "fell_behind_at": behind["load"] if behind else None,
    }
    if behind is None:
        a, b = dur_pair(ttft0 or 0.0, _p50(high, "ttft_ms") or 0.0)
        keeps = f"keeps up with every rate tried, up to {_at(high)} (TTFT p50 {a} → {b})"
        if at_once > RATE_AT_ONCE_QUEUES:
            sentence = f"batches: {keeps}, about {round(at_once)} requests at once at the top"
            return _verdict(lane, BATCHES, sentence, **figures)
        return _verdict(
            lane,
            UNKNOWN,
            f"{keeps}; these rates never needed two requests at once, so they do not show "
            "whether it batches: try higher rates",
            **figures,
        )
    where = (
        f"keeps up to {_at(kept_up_to)}; at {_at(behind)}"
        if kept_up_to is not None
        else f"falls behind already at {_at(behind)}:"
    )
    keeps = f"{where} {_why_behind(behind, ttft0)}"
    if at_once <= RATE_AT_ONCE_QUEUES:
        return _verdict(
            lane, QUEUES, f"queues: serves about 1 request at a time — {keeps}", **figures
        )
    if kept >= SPEED_KEPT_BATCHES:
        return _verdict(lane, BATCHES, f"batches: {keeps}", **figures)
    how = f"serves about {round(at_once)} requests at a time"
    return _verdict(lane, PARTLY, f"partly batches: {how} — {keeps}", **figures)


# --- across lanes ----------------------------------------------------------------------


def run_verdict_lines(document: Mapping[str, Any]) -> list[str]:
    """The run's comparison of its lanes, one sentence a line (none with fewer than two
    lanes): with an SLO, who serves the most load within it; without, who has the
    highest output throughput at the highest common level and the best per-user speed at
    the lowest. Each lane's own verdict is `lane_verdicts`."""
    lanes = document.get("lanes") or []
    if len(lanes) < 2:
        return []
    slo = Slo.from_dict(document.get("slo"))
    if slo is not None and not slo.is_empty() and any(lane.get("capacity") for lane in lanes):
        return _slo_lines(lanes, slo)
    return _throughput_lines(lanes)


def _amount(value: float | None, reason: str, mode: str, first: bool) -> str:
    if value is None:
        return "none of the loads tried" if first else "none"
    prefix = "at least " if reason == "ceiling" else ""
    if mode == RATE:
        return prefix + req_s(value)
    if not first:
        return prefix + sig2(value)
    if value == 1 and not prefix:
        return "1 user at a time"
    return f"{prefix}{users(value)} at once"


def _slo_lines(lanes: Sequence[Mapping[str, Any]], slo: Slo) -> list[str]:
    judged = [lane for lane in lanes if lane.get("capacity")]
    within = slo.describe().replace(", for ", " for ")
    if all(lane["capacity"].get("value") is None for lane in judged):
        return [f"At {within}, no lane met the target at any load tried."]

    def value(lane: Mapping[str, Any]) -> float:
        found = lane["capacity"].get("value")
        return -1.0 if found is None else float(found)

    ordered = sorted(judged, key=value, reverse=True)
    tied = [lane for lane in ordered if value(lane) == value(ordered[0])]
    # Lanes tied at the top: the higher goodput at the highest load they all tried first.
    common = _common_loads(tied)
    top = max(common) if common else None

    def goodput(lane: Mapping[str, Any]) -> float:
        for lv in lane["capacity"].get("levels") or []:
            if lv.get("load") == top and lv.get("goodput") is not None:
                return float(lv["goodput"])
        return -1.0

    ordered = sorted(tied, key=goodput, reverse=True) + ordered[len(tied) :]
    mode = ordered[0]["capacity"].get("mode") or "concurrency"
    parts = []
    for i, lane in enumerate(ordered):
        cap = lane["capacity"]
        amount = _amount(cap.get("value"), cap.get("reason") or "", mode, first=i == 0)
        parts.append(f"{lane['name']} serves {amount}" if i == 0 else f"{lane['name']} {amount}")
    lines = [f"At {within}, " + ", ".join(parts) + "."]
    if len(tied) > 1:
        first, second = ordered[0], ordered[1]
        g1, g2 = goodput(first), goodput(second)
        names = f"{first['name']} and {second['name']} tie"
        if top is None or g1 < 0 or g2 < 0 or g1 == g2:
            lines.append(f"{names}; goodput does not separate them.")
        else:
            lines.append(
                f"{names}; {first['name']} has the higher goodput at "
                f"{_load_words(top, mode)} ({sig2(g1)} vs {sig2(g2)} good req/s)."
            )
    return lines


def _common_loads(lanes: Sequence[Mapping[str, Any]]) -> list[float]:
    sets = [
        {lv["load"] for lv in lane["capacity"].get("levels") or [] if lv.get("load") is not None}
        for lane in lanes
    ]
    return sorted(set.intersection(*sets)) if sets else []


def _load_words(load: float | None, mode: str) -> str:
    if load is None:
        return "no common load"
    return req_s(load) if mode == RATE else users(load)


def _throughput_lines(lanes: Sequence[Mapping[str, Any]]) -> list[str]:
    by_lane = {
        lane["name"]: {_load(lv): lv for lv in lane.get("levels") or [] if _usable(lv)}
        for lane in lanes
    }
    measured = {name: levels for name, levels in by_lane.items() if levels}
    if len(measured) < 2:
        return []  # one lane left with figures: its own verdict says all there is
    common = set.intersection(*(set(levels) for levels in measured.values())) - {None}
    if not common:
        return ["The lanes ran no level in common: nothing to compare side by side."]
    high, low = max(common), min(common)
    first = next(iter(measured.values()))
    lines = [
        _best_line(
            measured,
            high,
            lambda lv: lv["output_throughput"],
            f"At {_at(first[high])}, the highest level every lane ran",
            "the highest output throughput",
        ),
        _best_line(
            measured,
            low,
            lambda lv: _p50(lv, "tokens_per_s"),
            f"At {_at(first[low])}",
            "the best per-user speed (tokens/s p50)",
        ),
    ]
    return [line for line in lines if line]


def _best_line(
    measured: Mapping[str, Mapping[Any, Mapping[str, Any]]],
    load: Any,
    figure: Any,
    where: str,
    what: str,
) -> str:
    values = sorted(
        ((figure(levels[load]), name) for name, levels in measured.items()),
        key=lambda v: v[0],
        reverse=True,
    )
    (best, name), (second, other) = values[0], values[1]
    rest = ", ".join(f"{n} {tok_s(v)}" for v, n in values[1:])
    if second > 0 and best / second < EVEN:
        return f"{where}, {name} and {other} are about even for {what}: {tok_s(best)}, {rest}."
    return f"{where}, {name} has {what}: {tok_s(best)} ({rest})."
