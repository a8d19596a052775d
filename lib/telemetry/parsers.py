"""Pure parsers: engine telemetry payloads in, `Sample` lists out. No I/O, no clock.

Every parser takes the time `t` to stamp on its samples so the caller owns the clock
and tests can pass a constant.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from lib.core.records import Sample

VLLM_PREFIX = "vllm:"
LLAMACPP_PREFIX = "llamacpp:"

# vLLM series we keep, named as the engine exposes them minus "vllm:". Counters carry
# prometheus_client's "_total" suffix. Histograms are left out: the client side measures
# latency itself, and bucket series would multiply the stored rows many times over.
VLLM_GAUGES = ("num_requests_running", "num_requests_waiting")
VLLM_FRACTIONS = ("kv_cache_usage_perc", "gpu_cache_usage_perc")  # 0-1, not percent
VLLM_COUNTERS = ("num_preemptions_total", "prompt_tokens_total", "generation_tokens_total")
VLLM_INFO = "cache_config_info"

# Counters whose growth since the recorder started is worth a series of its own.
VLLM_DELTA_COUNTERS = VLLM_COUNTERS
LLAMACPP_DELTA_COUNTERS = ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total")

# Labels that tell engine instances apart; values are aggregated over them.
_INSTANCE_LABELS = ("engine",)


class MetricsFormatError(ValueError):
    """The payload is not the Prometheus text (or JSON) the engine is documented to send."""


def _line_metric_name(line: str) -> str | None:
    """The metric a Prometheus text line is about (HELP/TYPE or sample), else None."""
    line = line.strip()
    if line.startswith(("# HELP ", "# TYPE ")):
        parts = line.split(None, 3)
        return parts[2] if len(parts) > 2 else None
    if not line or line.startswith("#"):
        return None
    return line.split("{", 1)[0].split(None, 1)[0]


def _only_metrics(text: str, names: set[str]) -> str:
    """The lines of `text` about the metrics in `names`.

    vLLM's /metrics runs to hundreds of lines (histograms): prometheus_client took 17 ms
    over all of the captured 0.32 text, GIL held, every second inside the benchmark's
    process; picking these few lines first brings the whole parse_vllm_metrics to about
    1.3 ms (best of 5 on this 2-core machine).
    """
    return "\n".join(line for line in text.splitlines() if _line_metric_name(line) in names)


def _iter_prometheus_samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    # Imported here so NVML-only users (bench/gpu_check.py on a bare GPU box) need
    # nothing beyond nvidia-ml-py.
    from prometheus_client.parser import text_string_to_metric_families

    # prometheus_client renames the samples of a counter declared without "_total"
    # (llama.cpp's n_busy_slots_per_decode, n_tokens_max) to "<name>_total"; undo that so
    # names stay as the engine wrote them.
    declared_counters = {
        parts[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(parts := line.split()) >= 4 and parts[3] == "counter"
    }
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name
                if (
                    name.endswith("_total")
                    and name not in declared_counters
                    and name[: -len("_total")] in declared_counters
                ):
                    name = name[: -len("_total")]
                yield name, dict(sample.labels), float(sample.value)
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on junk
        # The error quotes the offending line, which may be a whole HTML page: cut it.
        raise MetricsFormatError(f"malformed Prometheus text: {str(exc)[:100]}") from exc


def parse_vllm_metrics(text: str, t: float = 0.0) -> list[Sample]:
    """Parse vLLM's `/metrics` text into samples with source "vllm".

    Names are the engine's minus the `vllm:` prefix (e.g. "kv_cache_usage_perc",
    "generation_tokens_total"). Values are aggregated per `model_name` over engine
    instances (data parallel): counters and request gauges are summed, KV-cache usage
    fractions averaged (each engine has its own equally sized KV pool, so the mean is the
    overall fraction). `gpu_cache_usage_perc` is kept only when `kv_cache_usage_perc` is
    absent (servers before the rename). `cache_config_info` comes out as one sample of
    value 1 per engine instance, its labels holding the cache config (gpu_memory_
    utilization, block_size, num_gpu_blocks, cache_dtype...).

    Raises MetricsFormatError when the text is not Prometheus text or holds no `vllm:`
    series (some other server answering on that port).
    """
    wanted = set(VLLM_GAUGES) | set(VLLM_FRACTIONS) | set(VLLM_COUNTERS)
    # A sample line named vllm:... is what tells vLLM from another server on the port.
    if not any(
        (_line_metric_name(line) or "").startswith(VLLM_PREFIX) for line in text.splitlines()
    ):
        raise MetricsFormatError("no vllm: series in the response")
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    info: list[Sample] = []
    selected = _only_metrics(text, {VLLM_PREFIX + n for n in (*wanted, VLLM_INFO)})
    for full_name, labels, value in _iter_prometheus_samples(selected):
        name = full_name[len(VLLM_PREFIX) :]
        if name == VLLM_INFO:
            info.append(Sample(t=t, source="vllm", name=name, value=1.0, labels=labels))
        elif name in wanted:
            groups[(name, labels.get("model_name", ""))].append(value)

    has_new_kv = any(name == "kv_cache_usage_perc" for name, _ in groups)
    samples: list[Sample] = []
    for (name, model), values in groups.items():
        if name == "gpu_cache_usage_perc" and has_new_kv:
            continue
        value = sum(values) / len(values) if name in VLLM_FRACTIONS else sum(values)
        labels = {"model_name": model} if model else {}
        samples.append(Sample(t=t, source="vllm", name=name, value=value, labels=labels))
    samples.sort(key=lambda s: (s.name, sorted(s.labels.items())))
    return samples + info


def parse_llamacpp_metrics(text: str, t: float = 0.0) -> list[Sample]:
    """Parse llama-server's `/metrics` text (`llamacpp:` names) into source "llama.cpp".

    Every `llamacpp:` sample is kept, named without the prefix, labels as given (router
    mode may label per model). Raises MetricsFormatError on junk or when no `llamacpp:`
    series is present.
    """
    samples: list[Sample] = []
    for full_name, labels, value in _iter_prometheus_samples(text):
        if not full_name.startswith(LLAMACPP_PREFIX) or full_name.endswith("_created"):
            continue
        name = full_name[len(LLAMACPP_PREFIX) :]
        samples.append(Sample(t=t, source="llama.cpp", name=name, value=value, labels=labels))
    if not samples:
        raise MetricsFormatError("no llamacpp: series in the response")
    return samples


def detect_metrics_dialect(text: str) -> str | None:
    """Which engine wrote this `/metrics` text: "vllm", "llama.cpp" or None."""
    # A substring test is enough to route the text to the right parser; the parser
    # itself then validates the format.
    if VLLM_PREFIX in text:
        return "vllm"
    if LLAMACPP_PREFIX in text:
        return "llama.cpp"
    return None


def _rfc3339_to_epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # Go writes up to 9 fractional digits and "Z"; Python 3.11 reads both.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.year <= 1:  # Go's zero time: no expiry known
        return None
    if parsed.tzinfo is None:  # not expected from Ollama; don't guess the local zone
        return None
    return parsed.timestamp()


def parse_ollama_ps(payload: str | bytes | dict[str, Any], t: float = 0.0) -> list[Sample]:
    """Parse Ollama's `GET /api/ps` answer into samples with source "ollama".

    Per loaded model (labels {"model"}): `size` and `size_vram` (bytes), `context_length`,
    `expires_at` (epoch seconds; left out when Ollama gives the zero time), and the
    derived `gpu_share` = size_vram / size (1.0 is what `ollama ps` shows as "100% GPU").
    An empty model list gives no samples. Raises MetricsFormatError on a payload that is
    not the documented shape.
    """
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise MetricsFormatError(f"not JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise MetricsFormatError('expected {"models": [...]}')

    samples: list[Sample] = []
    for entry in payload["models"]:
        if not isinstance(entry, dict):
            continue
        model = str(entry.get("model") or entry.get("name") or "")

        def add(name: str, value: Any, model: str = model) -> None:
            # bool is an int subclass; a bool here would be a shape error, not a number
            if isinstance(value, int | float) and not isinstance(value, bool):
                samples.append(
                    Sample(
                        t=t, source="ollama", name=name, value=float(value), labels={"model": model}
                    )
                )

        size, size_vram = entry.get("size"), entry.get("size_vram")
        add("size", size)
        add("size_vram", size_vram)
        add("context_length", entry.get("context_length"))
        add("expires_at", _rfc3339_to_epoch(entry.get("expires_at")))
        if isinstance(size, int | float) and isinstance(size_vram, int | float) and size > 0:
            add("gpu_share", size_vram / size)
    return samples
