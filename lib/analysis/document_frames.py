"""pandas DataFrames of a finished run's results document: lanes, settings, answer
checks, server-side timings and answers by prompt. No Streamlit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from lib.analysis.telemetry_frames import hardware_rows
from lib.core import metrics
from lib.core.load_pattern import CONCURRENCY, RATE, CapacitySearch, rate_label
from lib.core.slo import Slo

OLLAMA_SERVER_KEYS: tuple[str, ...] = (
    "load_ms",
    "prompt_eval_ms",
    "queue_ms",
    "eval_ms",
    "eval_tokens_per_s",
)


def lane_info_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Each lane's engine and model as the endpoint reported them."""
    out = []
    for lane in document.get("lanes", []):
        info, model = lane.get("engine_info") or {}, lane.get("model_info") or {}
        out.append(
            {
                "lane": lane["name"],
                "engine": info.get("kind") or lane.get("engine"),
                "version": info.get("version"),
                "api": lane.get("engine"),
                "base_url": lane.get("base_url"),
                "model": lane.get("model"),
                "quantization": model.get("quantization"),
                "parameter_size": model.get("parameter_size"),
                "context_length": model.get("context_length"),
                "digest": model.get("digest"),
            }
        )
    return pd.DataFrame.from_records(
        out,
        columns=[
            "lane",
            "engine",
            "version",
            "api",
            "base_url",
            "model",
            "quantization",
            "parameter_size",
            "context_length",
            "digest",
        ],
    )


def settings_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """The run's settings, its hardware and the tool version, as setting/value rows."""
    settings = dict(document.get("settings") or {})
    env = document.get("environment") or {}
    rows: list[tuple[str, str]] = []
    labels = {
        "max_tokens": "Max tokens",
        "temperature": "Temperature",
        "top_p": "Top-p",
        "seed": "Seed",
        "ignore_eos": "Ignore EOS",
        "concurrency": "Concurrency levels",
        "requests": "Requests per level",
        "warmup": "Warm-up requests per lane",
        "timeout_s": "Timeout per request (s)",
        "lanes_parallel": "Lanes at the same time",
        "num_ctx": "Ollama num_ctx",
        "prompts": "Prompts",
    }
    # How the run loaded its lanes, its targets and its synthetic prompts, in words: their
    # raw dicts ("mode: rate, rates: 2.0, 8.0, –, …") are left out below.
    load = settings.pop("load", None) or {}
    slo = settings.pop("slo", None)
    capacity = settings.pop("capacity", None)
    synthetic = settings.pop("synthetic", None)
    given = set(settings)
    for key, label in labels.items():
        if key not in settings:
            continue
        value = settings.pop(key)
        if key == "concurrency":
            rows.extend(load_rows(load, capacity, value) + slo_rows(slo))
        elif key == "prompts":
            rows.append((label, _text(value)))
            rows.extend(synthetic_rows(synthetic))
        else:
            rows.append((label, _text(value)))
    # A document without those two keys (older, hand-made) still says what it ran.
    if "concurrency" not in given:
        rows.extend(load_rows(load, capacity, None) if load or capacity else [])
        rows.extend(slo_rows(slo))
    if "prompts" not in given:
        rows.extend(synthetic_rows(synthetic))
    for key, value in settings.items():
        rows.append((key, _text(value)))
    hardware = env.get("hardware") or {}
    for key, value in hardware.items() if isinstance(hardware, dict) else []:
        if key == "gpu":  # a dict of GPUs: model and memory per GPU, the driver
            rows.extend(hardware_rows(hardware))
            continue
        if key.endswith("_bytes") and isinstance(value, int | float):
            key, value = key.removesuffix("_bytes") + " (GB)", f"{value / 1e9:.1f}"
        rows.append((f"Hardware: {key}", _text(value)))
    if env.get("tool_version"):
        rows.append(("servescope version", str(env["tool_version"])))
    return pd.DataFrame(rows, columns=["setting", "value"])


def load_rows(
    load: Mapping[str, Any], capacity: Mapping[str, Any] | None, levels: Any
) -> list[tuple[str, str]]:
    """The run's load as setting rows: its concurrency levels (closed loop, as always),
    its request rates, or its capacity search; an open-loop run's arrivals beside them."""
    rows: list[tuple[str, str]] = []
    open_loop = load.get("mode") == RATE
    if capacity:
        spec = CapacitySearch(**capacity)
        open_loop = spec.mode == RATE
        rows.append(("Capacity search", _search_text(spec)))
    elif open_loop:
        rows.append(("Request rates", rates_text(load.get("rates") or [])))
    else:
        rows.append(("Concurrency levels", _text(levels)))
    if not open_loop:
        return rows  # arrivals, cap and ramp only pace open-loop levels
    poisson = load.get("arrival", "poisson") == "poisson"
    rows.append(("Arrivals", "Poisson (random gaps)" if poisson else "constant (even gaps)"))
    if poisson:
        rows.append(("Burstiness", f"{load.get('burstiness', 1.0):g} (1 = Poisson, < 1 burstier)"))
    cap = load.get("max_concurrency")
    rows.append(("Max requests in flight", str(cap) if cap else "no cap"))
    if load.get("ramp_from") is not None:
        rows.append(("Ramp", f"from {load['ramp_from']:g} req/s up to each level's rate"))
    rows.append(("Arrivals seed", _text(load.get("seed"))))
    return rows


def rates_text(rates: list[float | None]) -> str:
    """[2.0, 8.0, None] -> "2, 8 req/s, all at once"."""
    finite = [f"{r:g}" for r in rates if r is not None]
    parts = [f"{', '.join(finite)} req/s"] if finite else []
    if any(r is None for r in rates):
        parts.append(rate_label(None))
    return ", ".join(parts) or "–"


def _search_text(spec: CapacitySearch) -> str:
    """ "by request rate: from 1 req/s, doubling up to 64 req/s, then within 10%"."""
    if spec.mode == CONCURRENCY:

        def users(n: float) -> str:
            return f"{n:g} user{'s' if n != 1 else ''}"

        return (
            f"by concurrency: from {users(spec.start)}, doubling up to {spec.max:g}, then "
            f"within {users(spec.step())}"
        )
    return (
        f"by request rate: from {spec.start:g} req/s, doubling up to {spec.max:g} req/s, "
        f"then within {spec.step():.0%}"
    )


def slo_rows(slo: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    targets = Slo.from_dict(slo)
    if targets is None or targets.is_empty():
        return []
    return [("Latency targets (SLO)", targets.describe())]


def synthetic_rows(synthetic: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Synthetic prompts of exact lengths: their tokens and the seed that drew them."""
    if not synthetic:
        return []
    prefix = synthetic.get("shared_prefix_tokens") or 0
    shared = f" ({prefix} shared by every prompt)" if prefix else ""
    out = synthetic.get("output_tokens")
    return [
        ("Synthetic input tokens", f"{synthetic.get('input_tokens')}{shared}"),
        ("Synthetic output tokens", str(out) if out else "up to max tokens"),
        ("Synthetic prompts seed", _text(synthetic.get("seed"))),
    ]


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def quality_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Per lane: answers checked, the drift line ("4/5 drifted to Chinese"), flag counts.

    Lanes whose requests carry no `quality` record are left out.
    """
    from lib import quality  # optional module of another area: imported where used

    out = []
    for lane in document.get("lanes", []):
        checks = [
            r["quality"]
            for level in lane.get("levels", [])
            for r in level.get("requests", [])
            if r.get("quality")
        ]
        if not checks:
            continue
        row: dict[str, Any] = {
            "lane": lane["name"],
            "checked": len(checks),
            "language": quality.drift_summary(checks),
        }
        row |= quality.summarize_flags(checks)
        out.append(row)
    return pd.DataFrame.from_records(out)


def server_timings_frame(document: Mapping[str, Any]) -> pd.DataFrame:
    """Engine-side timings (Ollama) beside the client's view, medians per lane and level."""
    out = []
    for lane in document.get("lanes", []):
        for level in lane.get("levels", []):
            servers = [
                r["server"]
                for r in level.get("requests", [])
                if isinstance(r.get("server"), dict) and not r.get("error")
            ]
            if not any(k in s for s in servers for k in OLLAMA_SERVER_KEYS):
                continue
            row: dict[str, Any] = {
                "lane": lane["name"],
                "concurrency": level["concurrency"],
                "client_ttft_p50_ms": level["ttft_ms"]["p50"],
                "client_e2el_p50_ms": level["e2el_ms"]["p50"],
                "client_tok_per_s_p50": level["tokens_per_s"]["p50"],
            }
            for key in OLLAMA_SERVER_KEYS:
                row[f"server_{key}"] = metrics.distribution(s.get(key) for s in servers)["p50"]
            out.append(row)
    return pd.DataFrame.from_records(out)


def answers_by_prompt(
    document: Mapping[str, Any], concurrency: int | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Answers grouped per prompt, lanes side by side, at one level (default: lowest).

    Returns [{"prompt": text, "answers": {lane: [request, ...]}}] in first-seen prompt
    order, at most `limit` prompts. Texts are returned as they are: untrusted, for
    display as plain text only.
    """
    lanes = document.get("lanes", [])
    if concurrency is None:
        levels = sorted({lv["concurrency"] for lane in lanes for lv in lane.get("levels", [])})
        concurrency = levels[0] if levels else None
    prompts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for lane in lanes:
        for level in lane.get("levels", []):
            if level["concurrency"] != concurrency:
                continue
            for req in level.get("requests", []):
                slot = prompts.setdefault(req.get("prompt") or "", {})
                slot.setdefault(lane["name"], []).append(req)
    out = []
    for text, answers in list(prompts.items())[:limit]:
        out.append({"prompt": text, "answers": answers})
    return out


def levels_of(document: Mapping[str, Any]) -> list[int]:
    """Every concurrency level present in the document, ascending."""
    return sorted(
        {lv["concurrency"] for lane in document.get("lanes", []) for lv in lane.get("levels", [])}
    )
