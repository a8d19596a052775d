"""TelemetryRecorder: samples NVML and engine endpoints at ~1 Hz beside a benchmark.

It runs in a daemon thread of the benchmark's own process and only ever reads: every
failure (engine down, endpoint missing, slow or malformed, no GPU) turns into a status
entry, never an exception, and a failing endpoint is retried at a lower rate so it costs
the benchmark nothing. HTTP uses a sync httpx client with short timeouts; the thread
never shares it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lib.core.records import Sample
from lib.telemetry.nvml import NvmlSampler
from lib.telemetry.parsers import (
    LLAMACPP_DELTA_COUNTERS,
    VLLM_DELTA_COUNTERS,
    VLLM_INFO,
    MetricsFormatError,
    detect_metrics_dialect,
    parse_llamacpp_metrics,
    parse_ollama_ps,
    parse_vllm_metrics,
)

log = logging.getLogger(__name__)


class _QuietPolls(logging.Filter):
    """Drops httpx's per-request INFO line for the recorder's own polls.

    httpx logs every request at INFO; at 1 Hz per endpoint that would bury the run's
    log. Only requests made inside `_polling` (a thread-local flag) are dropped, so the
    benchmark's own httpx logging is untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_polling, "active", False)


_polling = threading.local()
_quiet_filter = _QuietPolls()

Sink = Callable[[str | None, list[Sample]], None]
TARGET_KINDS = ("vllm", "ollama", "llama.cpp", "openai")
DELTA_SUFFIX = "_delta"  # e.g. "generation_tokens_total_delta": growth since start()
# A failing endpoint is retried after 5 s, then 10, 20, and at most every 60 s.
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


@dataclass
class TelemetryTarget:
    """An engine endpoint to poll. base_url as the runner has it (may end in /v1)."""

    key: str  # the sink receives samples under this key (the lane's name, say)
    kind: str  # "vllm" | "ollama" | "llama.cpp" | "openai"
    base_url: str


def root_url(base_url: str) -> str:
    """The server root: OpenAI-style base URLs end in /v1, /metrics and /api/ps don't."""
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _parse_any_metrics(text: str, t: float) -> list[Sample]:
    # A generic OpenAI-compatible target may be vLLM or llama.cpp under another name.
    dialect = detect_metrics_dialect(text)
    if dialect == "vllm":
        return parse_vllm_metrics(text, t)
    if dialect == "llama.cpp":
        return parse_llamacpp_metrics(text, t)
    raise MetricsFormatError("no vllm: or llamacpp: series at /metrics")


_ENDPOINTS: dict[str, tuple[str, Callable[[str, float], list[Sample]]]] = {
    "vllm": ("/metrics", parse_vllm_metrics),
    "llama.cpp": ("/metrics", parse_llamacpp_metrics),
    "openai": ("/metrics", _parse_any_metrics),
    "ollama": ("/api/ps", parse_ollama_ps),
}


@dataclass
class _Series:
    """One polled endpoint of one target, with its retry and delta state."""

    target: TelemetryTarget
    status_key: str
    url: str
    parse: Callable[[str, float], list[Sample]]
    next_due: float = 0.0  # monotonic seconds
    failures: int = 0
    info_sent: bool = False
    # (name, labels) -> [first value, last value, offset added by counter resets]
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = field(
        default_factory=dict
    )


def _with_deltas(series: _Series, samples: list[Sample]) -> list[Sample]:
    """Drop repeated cache_config_info and add `<counter>_delta` samples."""
    out: list[Sample] = []
    saw_info = False
    for s in samples:
        if s.source == "vllm" and s.name == VLLM_INFO:
            # Static config: stored once per recorder, not once a second.
            if not series.info_sent:
                out.append(s)
                saw_info = True
            continue
        out.append(s)
        tracked = (s.source == "vllm" and s.name in VLLM_DELTA_COUNTERS) or (
            s.source == "llama.cpp" and s.name in LLAMACPP_DELTA_COUNTERS
        )
        if not tracked:
            continue
        key = (s.name, tuple(sorted(s.labels.items())))
        state = series.counters.get(key)
        if state is None:
            state = series.counters[key] = [s.value, s.value, 0.0]
        elif s.value < state[1]:
            # The server restarted and its counter began again at 0: keep the growth
            # seen before the restart.
            state[2] += state[1]
        state[1] = s.value
        delta = s.value + state[2] - state[0]
        out.append(
            Sample(t=s.t, source=s.source, name=s.name + DELTA_SUFFIX, value=delta, labels=s.labels)
        )
    if saw_info:
        series.info_sent = True
    return out


class TelemetryRecorder:
    """Samples GPUs (NVML) and engine endpoints in a background thread.

    The sink gets (target key, samples) per endpoint and (None, samples) for the
    machine-wide NVML readings, from the recorder's thread (and, for the first and last
    round, from the thread calling start()/stop()). It must not block for long.
    """

    def __init__(
        self,
        targets: list[TelemetryTarget],
        sink: Sink,
        interval_s: float = 1.0,
        gpu: bool = True,
        *,
        timeout_s: float = 0.5,
        transport: Any = None,  # an httpx transport; tests pass httpx.MockTransport
        nvml: NvmlSampler | None = None,
    ) -> None:
        """Set up; nothing is opened or polled before start()."""
        for target in targets:
            if target.kind not in TARGET_KINDS:
                raise ValueError(f"unknown telemetry target kind {target.kind!r}")
        self.targets = list(targets)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._sink = sink
        self._transport = transport
        self._nvml = (nvml or NvmlSampler()) if gpu else None
        self._series = []
        for target in self.targets:
            path, parse = _ENDPOINTS[target.kind]
            self._series.append(
                _Series(target, f"{target.key}{path}", root_url(target.base_url) + path, parse)
            )
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._sink_errors = 0

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Open NVML, take the first round (the baseline for deltas and energy) in the
        calling thread, then keep sampling in a daemon thread."""
        if self._thread is not None:
            return
        self._open()
        self._stop.clear()
        self.tick()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        """Open NVML and the HTTP client; tick() may be called from here on."""
        if self._nvml is not None and not self._nvml.available:
            self._nvml.open()
        if self._series and self._client is None:
            import httpx  # here, so GPU-only use needs nothing beyond nvidia-ml-py

            self._client = httpx.Client(timeout=self.timeout_s, transport=self._transport)
            logging.getLogger("httpx").addFilter(_quiet_filter)  # no-op when already added

    def add_target(self, target: TelemetryTarget) -> None:
        """Start polling ``target`` too (an engine started during the run).

        The series list is replaced, never changed in place, so the sampling thread
        always iterates a whole list.
        """
        if target.kind not in TARGET_KINDS:
            raise ValueError(f"unknown telemetry target kind {target.kind!r}")
        path, parse = _ENDPOINTS[target.kind]
        series = _Series(target, f"{target.key}{path}", root_url(target.base_url) + path, parse)
        self.targets = [*self.targets, target]
        self._series = [*self._series, series]
        if self._thread is not None:
            self._open()

    def remove_target(self, key: str) -> None:
        """Stop polling the targets under ``key`` (their engine is being stopped)."""
        self.targets = [t for t in self.targets if t.key != key]
        self._series = [s for s in self._series if s.target.key != key]

    def stop(self) -> None:
        """Stop the thread (within about one interval), take a final round, close."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.tick(final=True)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._nvml is not None:
            self._nvml.close()

    def __enter__(self) -> TelemetryRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, str]:
        """Per series: "ok" or "unavailable: <reason>". Keys: "nvml",
        "nvml/gpu<i>/<metric>", and "<target key>/metrics" or "<target key>/api/ps"."""
        with self._lock:
            merged = dict(self._nvml.status) if self._nvml is not None else {}
            merged.update(self._status)
            return merged

    # --- sampling ---------------------------------------------------------------------

    def _run(self) -> None:
        next_due = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_due - time.monotonic())):
            try:
                self.tick()
            except Exception:  # a bug here must cost telemetry, never the run
                log.exception("telemetry round failed")
            next_due += self.interval_s
            now = time.monotonic()
            if next_due < now:  # a round overran: skip ahead rather than burst
                next_due = now + self.interval_s

    def tick(self, now: float | None = None, final: bool = False) -> None:
        """One sampling round: NVML, then every endpoint that is due.

        `now` is a monotonic time for retry scheduling (tests pass their own). Outside
        the final round, a stop request ends the round early so stop() stays prompt.
        """
        mono = time.monotonic() if now is None else now
        t = time.time()
        if self._nvml is not None and self._nvml.available:
            try:
                with self._lock:  # status() copies the sampler's status dict meanwhile
                    samples = self._nvml.sample(t)
            except Exception as exc:  # never let a driver hiccup kill the thread
                log.debug("NVML sampling failed: %s", exc)
                samples = []
            self._emit(None, samples)
        for series in self._series:
            if self._stop.is_set() and not final:
                break
            if mono < series.next_due:
                continue
            self._poll(series, time.time(), mono)

    def _poll(self, series: _Series, t: float, mono: float) -> None:
        try:
            samples = _with_deltas(series, self._fetch(series, t))
        except Exception as exc:  # _Unavailable, or a parser bug on some engine's text
            if not isinstance(exc, _Unavailable):
                log.debug("telemetry %s failed", series.status_key, exc_info=True)
                exc = _Unavailable(f"{type(exc).__name__}: {exc}")
            series.failures += 1
            retry = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (series.failures - 1))
            series.next_due = mono + retry
            self._set_status(series.status_key, f"unavailable: {exc}")
            return
        series.failures = 0
        series.next_due = 0.0
        self._set_status(series.status_key, "ok")
        self._emit(series.target.key, samples)

    def _fetch(self, series: _Series, t: float) -> list[Sample]:
        import httpx

        if self._client is None:
            raise _Unavailable("recorder not started")
        _polling.active = True
        try:
            response = self._client.get(series.url)
        except httpx.TimeoutException as exc:
            raise _Unavailable(f"timed out after {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _polling.active = False
        code = response.status_code
        if code == 501 and series.target.kind in ("llama.cpp", "openai"):
            raise _Unavailable("metrics not enabled (start llama-server with --metrics)")
        if code == 404:
            raise _Unavailable(f"HTTP 404: no {httpx.URL(series.url).path} endpoint")
        if code != 200:
            raise _Unavailable(f"HTTP {code}")
        try:
            return series.parse(response.text, t)
        except MetricsFormatError as exc:
            raise _Unavailable(str(exc)) from exc

    def _set_status(self, key: str, value: str) -> None:
        with self._lock:
            old = self._status.get(key)
            self._status[key] = value
        if old == value:
            return
        # Only losing a series that worked is worth INFO; the rest (llama.cpp without
        # --metrics, a down engine at start) is expected and stays at DEBUG.
        level = logging.INFO if old == "ok" else logging.DEBUG
        log.log(level, "telemetry %s: %s", key, value)

    def _emit(self, key: str | None, samples: list[Sample]) -> None:
        if not samples:
            return
        try:
            self._sink(key, samples)
        except Exception:
            self._sink_errors += 1
            if self._sink_errors == 1:  # once: a broken sink would otherwise log at 1 Hz
                log.exception("telemetry sink failed; later failures are not logged")


class _Unavailable(Exception):
    """An endpoint gave nothing usable this round; the message goes into status()."""
