"""Telemetry: pure parsers, the recorder's HTTP polling (httpx.MockTransport), NVML
through a faked pynvml, the real no-GPU path of this machine, and process attribution.

No test sleeps: the recorder's sampling round (`tick`) is called directly with the
monotonic time it should believe, and the one threaded test waits on an Event.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pynvml
import pytest

from lib.core.records import Sample
from lib.telemetry import (
    MetricsFormatError,
    NvmlSampler,
    TelemetryRecorder,
    TelemetryTarget,
    classify_process,
    gpu_snapshot,
    hardware_info,
    identify_process,
    parse_llamacpp_metrics,
    parse_ollama_ps,
    parse_vllm_metrics,
    root_url,
)
from lib.telemetry.hardware import _cpu_info, _mem_total_bytes

DATA = Path(__file__).parents[1] / "data"
GIB = 1024**3
MIB = 1024**2


def by_name(samples: list[Sample]) -> dict[str, Sample]:
    """Samples keyed by name; fails on duplicates so tests notice unexpected series."""
    out: dict[str, Sample] = {}
    for s in samples:
        assert s.name not in out, f"duplicate sample {s.name}"
        out[s.name] = s
    return out


# --- vLLM text shaped as engine_apis.md §2.4 (vLLM V1, two data-parallel engines) ------

VLLM_TWO_ENGINES = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 1.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="qwen"} 0.25
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="qwen"} 1.0
vllm:num_preemptions_total{engine="1",model_name="qwen"} 0.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen"} 100.0
vllm:prompt_tokens_total{engine="1",model_name="qwen"} 50.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="qwen"} 1.7640e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen"} 700.0
vllm:generation_tokens_total{engine="1",model_name="qwen"} 300.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="qwen"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="qwen"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="qwen"} 0.3
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",\
gpu_memory_utilization="0.92",num_gpu_blocks="27000"} 1.0
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="1",\
gpu_memory_utilization="0.92",num_gpu_blocks="27000"} 1.0
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
"""


def vllm_text(prompt: float, generation: float, kv: float = 0.1) -> str:
    """A one-engine vLLM /metrics body with the given counter values."""
    return f"""\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="m"}} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="m"}} 0.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{block_size="16",engine="0",gpu_memory_utilization="0.9"}} 1.0
"""


def test_vllm_parser_on_text_captured_from_a_real_vllm_server() -> None:
    """tests/data/telemetry_vllm_metrics*.txt: GET /metrics of the sandbox's vLLM 0.32.0
    (CPU build, tiny-qwen2) taken twice, 0.05 s apart, while 64 chat requests ran."""
    samples = parse_vllm_metrics((DATA / "telemetry_vllm_metrics.txt").read_text(), t=1.0)
    (info,) = [s for s in samples if s.name == "cache_config_info"]
    named = by_name([s for s in samples if s.name != "cache_config_info"])
    assert {name: s.value for name, s in named.items()} == {
        "num_requests_running": 50.0,
        "num_requests_waiting": 0.0,  # not the *_by_reason series beside it
        "kv_cache_usage_perc": pytest.approx(0.02746917348309119),
        "num_preemptions_total": 0.0,
        "prompt_tokens_total": 24376.0,
        "generation_tokens_total": 163239.0,
    }
    assert all(s.labels == {"model_name": "tiny-qwen2"} for s in named.values())
    assert info.value == 1.0
    assert {
        k: info.labels[k] for k in ("gpu_memory_utilization", "block_size", "num_gpu_blocks")
    } == {
        "gpu_memory_utilization": "0.92",
        "block_size": "128",
        "num_gpu_blocks": "8192",
    }
    assert info.labels["cache_dtype"] == "auto" and info.labels["engine"] == "0"
    assert info.labels["kv_cache_memory_bytes"] == "1073741824"


def test_recorder_deltas_on_real_vllm_text() -> None:
    texts = iter(
        [
            (DATA / name).read_text()
            for name in ("telemetry_vllm_metrics.txt", "telemetry_vllm_metrics_later.txt")
        ]
    )
    server = FakeServer({"/metrics": lambda r: next(texts)})
    sink = Collect()
    rec = recorder([TelemetryTarget("vllm", "openai", "http://127.0.0.1:8000/v1")], server, sink)
    rec.tick(now=0.0)
    rec.tick(now=1.0)
    first, second = (
        by_name([s for s in b if s.name != "cache_config_info"]) for _, b in sink.calls
    )
    assert first["generation_tokens_total_delta"].value == 0  # the baseline round
    assert second["generation_tokens_total_delta"].value == 183389 - 163239
    assert second["prompt_tokens_total_delta"].value == 0
    assert second["num_requests_running"].value == 37
    assert [n.count("cache_config_info") for n in sink.names("vllm")] == [1, 0]


def test_vllm_parser_aggregates_engines_and_strips_prefix() -> None:
    samples = parse_vllm_metrics(VLLM_TWO_ENGINES, t=12.5)
    info = [s for s in samples if s.name == "cache_config_info"]
    named = by_name([s for s in samples if s.name != "cache_config_info"])

    assert set(named) == {
        "num_requests_running",
        "num_requests_waiting",
        "kv_cache_usage_perc",
        "num_preemptions_total",
        "prompt_tokens_total",
        "generation_tokens_total",
    }
    assert named["num_requests_running"].value == 5.0  # summed over engines
    assert named["num_requests_waiting"].value == 1.0
    assert named["kv_cache_usage_perc"].value == pytest.approx(0.375)  # mean of fractions
    assert named["prompt_tokens_total"].value == 150.0
    assert named["generation_tokens_total"].value == 1000.0
    assert named["num_preemptions_total"].value == 1.0
    for s in named.values():
        assert s.source == "vllm" and s.t == 12.5
        assert s.labels == {"model_name": "qwen"}
    # cache config: one per engine, value 1, config in the labels
    assert [s.labels["engine"] for s in info] == ["0", "1"]
    assert all(s.value == 1.0 for s in info)
    assert info[0].labels["gpu_memory_utilization"] == "0.92"
    assert info[0].labels["num_gpu_blocks"] == "27000"


def test_vllm_parser_falls_back_to_gpu_cache_usage_on_old_servers() -> None:
    old = '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name="m"} 0.42\n'
    assert [(s.name, s.value) for s in parse_vllm_metrics(old)] == [("gpu_cache_usage_perc", 0.42)]
    both = (
        old
        + '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name="m"} 0.4\n'
    )
    assert [(s.name, s.value) for s in parse_vllm_metrics(both)] == [("kv_cache_usage_perc", 0.4)]


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>404 Not Found</body></html>",
        "vllm:num_requests_running{engine=0 1.0",  # broken label set
        "# TYPE python_gc_objects_collected_total counter\npython_gc_objects_collected_total 1\n",
        "",
        "<html>" + "x" * 5000,
        'vllm:num_requests_running{engine="' + "x" * 5000,  # the error quotes the line
    ],
)
def test_vllm_parser_rejects_junk_and_foreign_metrics(text: str) -> None:
    with pytest.raises(MetricsFormatError) as err:
        parse_vllm_metrics(text)
    assert len(str(err.value)) < 200  # it ends up in status(): one short line


def test_llamacpp_parser_keeps_llamacpp_series() -> None:
    text = (DATA / "telemetry_llamacpp_metrics.txt").read_text()
    named = by_name(parse_llamacpp_metrics(text, t=3.0))
    assert named["prompt_tokens_total"].value == 1480
    assert named["tokens_predicted_total"].value == 2560
    assert named["requests_processing"].value == 2
    assert named["requests_deferred"].value == 1
    assert named["n_busy_slots_per_decode"].value == pytest.approx(1.97)
    assert all(s.source == "llama.cpp" and s.t == 3.0 for s in named.values())
    assert not any(name.startswith("llamacpp:") for name in named)
    with pytest.raises(MetricsFormatError):
        parse_llamacpp_metrics(VLLM_TWO_ENGINES)  # right format, wrong engine


def test_ollama_ps_parser() -> None:
    payload = (DATA / "telemetry_ollama_ps.json").read_text()
    samples = parse_ollama_ps(payload, t=7.0)
    qwen = by_name([s for s in samples if s.labels == {"model": "qwen2.5:7b-instruct-q4_K_M"}])
    llama = by_name([s for s in samples if s.labels == {"model": "llama3.2:3b"}])
    assert len(samples) == len(qwen) + len(llama)

    assert qwen["size"].value == 6654289920
    assert qwen["size_vram"].value == 6654289920
    assert qwen["gpu_share"].value == 1.0  # "100% GPU" in `ollama ps`
    assert qwen["context_length"].value == 4096
    # 2026-11-24T02:35:10.123456789Z; Python keeps microseconds
    assert qwen["expires_at"].value == pytest.approx(1795487710.123456, abs=1e-6)
    assert llama["gpu_share"].value == 0.75
    # +09:00 offset honoured: 11:30 in Seoul is 02:30 UTC
    assert llama["expires_at"].value == 1795487400.0
    assert all(s.source == "ollama" and s.t == 7.0 for s in samples)
    # dicts and bytes are accepted as well as text
    assert parse_ollama_ps(json.loads(payload), t=7.0) == samples


def test_ollama_ps_parser_edge_cases() -> None:
    assert parse_ollama_ps('{"models": []}') == []
    zero_time = {
        "models": [{"model": "m", "size": 0, "size_vram": 0, "expires_at": "0001-01-01T00:00:00Z"}]
    }
    named = by_name(parse_ollama_ps(zero_time))
    assert set(named) == {"size", "size_vram"}  # no expiry, no share of a zero size
    for bad in ("not json", '{"error": "x"}', "[1, 2]"):
        with pytest.raises(MetricsFormatError):
            parse_ollama_ps(bad)


# --- the recorder's HTTP side, through httpx.MockTransport -----------------------------


class FakeServer:
    """Answers the recorder's GETs from per-path scripts; counts requests per path."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.calls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        answer = self.routes.get(path)
        if answer is None:
            return httpx.Response(404, text="Not Found")
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, text=answer)


class Collect:
    """A sink that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[Sample]]] = []

    def __call__(self, key: str | None, samples: list[Sample]) -> None:
        self.calls.append((key, samples))

    def names(self, key: str | None = None) -> list[list[str]]:
        return [[s.name for s in samples] for k, samples in self.calls if k == key]


def recorder(targets: list[TelemetryTarget], server: FakeServer, sink: Any) -> TelemetryRecorder:
    rec = TelemetryRecorder(targets, sink, gpu=False, transport=httpx.MockTransport(server))
    rec._open()  # what start() does before its first round, without the thread
    return rec


def test_root_url() -> None:
    assert root_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert root_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert root_url("http://h:11434") == "http://h:11434"
    assert root_url("http://h/proxy/vllm/v1") == "http://h/proxy/vllm"


def test_vllm_target_deltas_and_config_once() -> None:
    values = iter([(100, 1000), (130, 1400), (130, 1900)])

    def metrics(request: httpx.Request) -> str:
        prompt, gen = next(values)
        return vllm_text(prompt, gen)

    server = FakeServer({"/metrics": metrics})
    sink = Collect()
    rec = recorder([TelemetryTarget("lane-a", "vllm", "http://vllm:8000/v1")], server, sink)
    for now in (0.0, 1.0, 2.0):
        rec.tick(now=now)

    assert server.calls == {"/metrics": 3}  # root URL, not /v1/metrics
    assert [k for k, _ in sink.calls] == ["lane-a"] * 3
    rounds = [
        by_name([s for s in samples if s.name != "cache_config_info"]) for _, samples in sink.calls
    ]
    assert [r["generation_tokens_total_delta"].value for r in rounds] == [0, 400, 900]
    assert [r["prompt_tokens_total_delta"].value for r in rounds] == [0, 30, 30]
    assert [r["num_preemptions_total_delta"].value for r in rounds] == [0, 0, 0]
    assert rounds[2]["generation_tokens_total"].value == 1900  # raw counter kept too
    assert [n.count("cache_config_info") for n in sink.names("lane-a")] == [1, 0, 0]
    assert rec.status() == {"lane-a/metrics": "ok"}


def test_counter_reset_keeps_growth_seen_before_restart() -> None:
    values = iter([100, 150, 20, 30])
    server = FakeServer({"/metrics": lambda r: vllm_text(0, next(values))})
    sink = Collect()
    rec = recorder([TelemetryTarget("v", "vllm", "http://v:8000")], server, sink)
    for now in range(4):
        rec.tick(now=float(now))
    deltas = [
        s.value
        for _, samples in sink.calls
        for s in samples
        if s.name == "generation_tokens_total_delta"
    ]
    assert deltas == [0, 50, 70, 80]  # 50 before the restart, then 20 and 30 after it


def test_ollama_target_polls_api_ps() -> None:
    server = FakeServer({"/api/ps": (DATA / "telemetry_ollama_ps.json").read_text()})
    sink = Collect()
    rec = recorder([TelemetryTarget("olla", "ollama", "http://o:11434/v1")], server, sink)
    rec.tick(now=0.0)
    assert server.calls == {"/api/ps": 1}
    ((key, samples),) = sink.calls
    assert key == "olla" and {s.source for s in samples} == {"ollama"}
    assert rec.status() == {"olla/api/ps": "ok"}


def test_llamacpp_without_metrics_flag_is_quiet_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    not_supported = httpx.Response(
        501,
        json={
            "error": {
                "code": 501,
                "message": "This server does not support metrics endpoint. "
                "Start it with `--metrics`",
                "type": "not_supported_error",
            }
        },
    )
    server = FakeServer({"/metrics": not_supported})
    sink = Collect()
    rec = recorder([TelemetryTarget("lcpp", "llama.cpp", "http://l:8080/v1")], server, sink)
    with caplog.at_level(logging.INFO):
        # retry after 5 s, then 10, 20, 40, then every 60 s
        for now in [0, 1, 4.9, 5, 6, 14.9, 15, 35, 75, 135, 194, 195]:
            rec.tick(now=float(now))
    attempts = [0, 5, 15, 35, 75, 135, 195]
    assert server.calls["/metrics"] == len(attempts)
    assert sink.calls == []
    assert rec.status() == {
        "lcpp/metrics": "unavailable: metrics not enabled (start llama-server with --metrics)"
    }
    assert caplog.records == []  # expected state: nothing at INFO or above


def test_slow_missing_and_malformed_endpoints_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    routes = {
        "/slow/metrics": slow,
        "/junk/metrics": "<html>hello</html>",
        "/down/metrics": refused,
    }
    server = FakeServer(routes)
    sink = Collect()
    targets = [
        TelemetryTarget("slow", "vllm", "http://h/slow/v1"),
        TelemetryTarget("junk", "vllm", "http://h/junk"),
        TelemetryTarget("none", "vllm", "http://h/none"),
        TelemetryTarget("down", "openai", "http://h/down/v1"),
    ]
    rec = recorder(targets, server, sink)
    with caplog.at_level(logging.INFO):
        rec.tick(now=0.0)
    status = rec.status()
    assert status["slow/metrics"] == "unavailable: timed out after 0.5 s"
    assert status["junk/metrics"] == "unavailable: no vllm: series in the response"
    assert status["none/metrics"] == "unavailable: HTTP 404: no /none/metrics endpoint"
    assert status["down/metrics"].startswith("unavailable: ConnectError")
    assert sink.calls == []
    assert caplog.records == []


def test_endpoint_recovers_and_loss_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    junk = 'vllm:num_requests_running{engine="0" 1.0\n'  # label set never closed
    answers = iter([junk, vllm_text(1, 1), junk, junk])
    server = FakeServer({"/metrics": lambda r: next(answers)})
    sink = Collect()
    rec = recorder([TelemetryTarget("v", "vllm", "http://v")], server, sink)
    with caplog.at_level(logging.INFO):
        rec.tick(now=0.0)
        assert rec.status()["v/metrics"].startswith("unavailable: malformed Prometheus text")
        rec.tick(now=5.0)  # the retry succeeds
        assert rec.status()["v/metrics"] == "ok"
        rec.tick(now=6.0)  # polled at full rate again, and fails
        rec.tick(now=11.0)
    assert server.calls["/metrics"] == 4
    assert len(sink.calls) == 1
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # ok -> unavailable only


def test_a_parser_bug_marks_the_series_unavailable_instead_of_raising() -> None:
    server = FakeServer({"/metrics": "vllm:anything 1\n"})
    rec = recorder([TelemetryTarget("v", "vllm", "http://v")], server, Collect())

    def broken(text: str, t: float) -> list[Sample]:
        raise KeyError("model_name")

    rec._series[0].parse = broken
    rec.tick(now=0.0)
    assert rec.status() == {"v/metrics": "unavailable: KeyError: 'model_name'"}


def test_openai_target_detects_engine_from_metrics_text() -> None:
    server = FakeServer(
        {
            "/a/metrics": vllm_text(1, 2),
            "/b/metrics": (DATA / "telemetry_llamacpp_metrics.txt").read_text(),
        }
    )
    sink = Collect()
    targets = [
        TelemetryTarget("a", "openai", "http://h/a/v1"),
        TelemetryTarget("b", "openai", "http://h/b/v1"),
    ]
    recorder(targets, server, sink).tick(now=0.0)
    sources = {key: {s.source for s in samples} for key, samples in sink.calls}
    assert sources == {"a": {"vllm"}, "b": {"llama.cpp"}}
    b = by_name(dict(sink.calls)["b"])
    assert b["tokens_predicted_total_delta"].value == 0


def test_sink_errors_do_not_stop_sampling(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def bad_sink(key: str | None, samples: list[Sample]) -> None:
        calls.append(key)
        raise RuntimeError("database is locked")

    server = FakeServer({"/metrics": lambda r: vllm_text(1, 1)})
    rec = recorder([TelemetryTarget("v", "vllm", "http://v")], server, bad_sink)
    with caplog.at_level(logging.INFO):
        for now in range(3):
            rec.tick(now=float(now))
    assert calls == ["v", "v", "v"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_unknown_target_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="sglang"):
        TelemetryRecorder([TelemetryTarget("x", "sglang", "http://x")], Collect())


def test_thread_samples_then_stop_takes_a_final_round() -> None:
    """start() samples at once, the thread keeps sampling, stop() joins and samples."""
    counter = iter(range(10_000))
    server = FakeServer({"/metrics": lambda r: vllm_text(0, next(counter))})
    from_thread = threading.Event()
    main = threading.get_ident()
    calls: list[tuple[int, list[Sample]]] = []

    def sink(key: str | None, samples: list[Sample]) -> None:
        calls.append((threading.get_ident(), samples))
        if threading.get_ident() != main:
            from_thread.set()

    rec = TelemetryRecorder(
        [TelemetryTarget("v", "vllm", "http://v/v1")],
        sink,
        interval_s=0.01,
        gpu=False,
        transport=httpx.MockTransport(server),
    )
    rec.start()
    assert calls and calls[0][0] == main  # the baseline round ran inside start()
    assert from_thread.wait(timeout=10)
    rec.stop()
    assert rec._thread is None
    last_thread, last_samples = calls[-1]
    assert last_thread == main  # the final round, after the join
    n_before = len(calls)
    rec.stop()  # idempotent
    assert len(calls) == n_before
    delta = by_name([s for s in last_samples if s.name != "cache_config_info"])
    assert delta["generation_tokens_total_delta"].value == len(calls) - 1


# --- NVML through a fake pynvml --------------------------------------------------------


class FakeGpu:
    """Scriptable stand-in for the pynvml calls the sampler makes."""

    def __init__(self, procs: list[Any]) -> None:
        self.used = 1 * GIB
        self.energy_mj = 5_000_000
        self.procs = procs
        self.power_calls = 0
        self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def not_supported(*args: Any, **kw: Any) -> Any:
            self.power_calls += 1
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        def memory(handle: Any, version: Any = None) -> Any:
            return SimpleNamespace(total=80 * GIB, used=self.used, free=80 * GIB - self.used)

        def shutdown() -> None:
            self.shutdowns += 1

        patches = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: 1,
            "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
            "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
            "nvmlSystemGetDriverVersion": lambda: "580.159.04",
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=37, memory=12),
            "nvmlDeviceGetPowerUsage": not_supported,
            "nvmlDeviceGetTotalEnergyConsumption": lambda h: self.energy_mj,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: self.procs,
        }
        for name, fn in patches.items():
            monkeypatch.setattr(pynvml, name, fn)


def own_comm() -> str:
    return Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_fake_gpu_memory_steps_processes_and_unsupported_power(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = os.getpid()
    gpu = FakeGpu(
        [
            SimpleNamespace(pid=me, usedGpuMemory=512 * 1024**2),
            SimpleNamespace(pid=2**22 + 7, usedGpuMemory=None),  # WDDM-style: no figure
        ]
    )
    gpu.install(monkeypatch)
    sink = Collect()
    rec = TelemetryRecorder([], sink, gpu=True)
    rec._open()

    seen = []
    for used, energy in [(1, 5_000_000), (3, 5_250_000), (9, 6_000_000)]:
        gpu.used, gpu.energy_mj = used * GIB, energy
        rec.tick(now=0.0)
        seen.append(sink.calls[-1])

    for key, _ in seen:
        assert key is None
    gpus = [by_name([s for s in samples if "pid" not in s.labels]) for _, samples in seen]
    assert [g["memory_used_bytes"].value for g in gpus] == [1 * GIB, 3 * GIB, 9 * GIB]
    assert [g["energy_j"].value for g in gpus] == [0.0, 250.0, 1000.0]
    assert gpus[0]["memory_total_bytes"].value == 80 * GIB
    assert gpus[0]["utilization_gpu_pct"].value == 37
    assert "power_w" not in gpus[0]
    assert gpus[0]["memory_used_bytes"].labels == {"gpu": "0", "name": "NVIDIA H100 80GB HBM3"}

    procs = [[s for s in samples if "pid" in s.labels] for _, samples in seen]
    assert all(len(p) == 1 for p in procs)  # the process without a figure is left out
    proc = procs[0][0]
    assert proc.name == "process_memory_used_bytes" and proc.value == 512 * 1024**2
    assert proc.labels == {"gpu": "0", "pid": str(me), "process": own_comm(), "engine": "unknown"}

    status = rec.status()
    assert status["nvml"] == "ok"
    assert status["nvml/gpu0/power"] == "unavailable: Not Supported"
    assert status["nvml/gpu0/memory"] == "ok"
    assert status["nvml/gpu0/processes"] == "ok"
    assert gpu.power_calls == 1  # NotSupported is not asked again


def test_fake_gpu_snapshot_and_hardware_info(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu([SimpleNamespace(pid=os.getpid(), usedGpuMemory=2 * GIB)])
    gpu.install(monkeypatch)
    snap = gpu_snapshot()
    assert snap == {
        "available": True,
        "driver": "580.159.04",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total_bytes": 80 * GIB,
                "memory_used_bytes": 1 * GIB,
                "utilization_gpu_pct": 37.0,
                "power_w": None,
                "processes": [
                    {
                        "pid": os.getpid(),
                        "used_bytes": 2 * GIB,
                        "process": own_comm(),
                        "engine": "unknown",
                    }
                ],
            }
        ],
    }
    assert json.loads(json.dumps(snap)) == snap
    hw = hardware_info()
    assert hw["gpu"] == {
        "available": True,
        "driver": "580.159.04",
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GIB}],
    }
    assert gpu.shutdowns == 2  # each one-shot call releases NVML


def test_recorder_can_start_again_after_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu([])
    gpu.install(monkeypatch)
    sink = Collect()
    rec = TelemetryRecorder([], sink, interval_s=3600, gpu=True)  # only start/stop rounds
    for _ in range(2):
        rec.start()
        gpu.energy_mj += 1000
        rec.stop()
    assert len(sink.calls) == 4 and all(key is None for key, _ in sink.calls)
    assert gpu.shutdowns == 2
    energy = [s.value for _, b in sink.calls for s in b if s.name == "energy_j"]
    assert energy == [0.0, 1.0, 0.0, 1.0]  # joules from each start, not from the first


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no NVIDIA GPU (driver not loaded)"),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA GPU (NVML library not found)"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NVML error: Insufficient Permissions"),
    ],
)
def test_nvml_init_errors_give_clean_reasons(
    monkeypatch: pytest.MonkeyPatch, error: int, reason: str
) -> None:
    def fail() -> None:
        raise pynvml.NVMLError(error)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    assert gpu_snapshot() == {"available": False, "reason": reason}


def test_missing_nvidia_ml_py_is_a_clean_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise
    sampler = NvmlSampler()
    assert sampler.open() is False
    assert sampler.reason == "no NVIDIA GPU (nvidia-ml-py not installed)"


def nvml_library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def test_this_machine_without_driver_gives_the_clean_unavailable_state(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pynvml load path. Where the library exists (a GPU box), the same path is
    taken by making ctypes fail to load it, so the assertion is the same everywhere."""
    if nvml_library_loads():
        real_cdll = pynvml.CDLL

        def no_nvml(name: str, *args: Any, **kw: Any) -> Any:
            if "nvidia-ml" in name:
                raise OSError(f"{name}: cannot open shared object file")
            return real_cdll(name, *args, **kw)

        monkeypatch.setattr(pynvml, "CDLL", no_nvml)
        monkeypatch.setattr(pynvml, "nvmlLib", None)
    reason = "no NVIDIA GPU (NVML library not found)"
    sink = Collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with caplog.at_level(logging.INFO):
            assert gpu_snapshot() == {"available": False, "reason": reason}
            rec = TelemetryRecorder([], sink, gpu=True)
            rec.start()
            rec.stop()
            hw = hardware_info()
    assert rec.status() == {"nvml": f"unavailable: {reason}"}
    assert sink.calls == []
    assert hw["gpu"] == {"available": False, "reason": reason}
    assert caplog.records == []


# --- process attribution ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("comm", "argv", "parent", "expected"),
    [
        (
            "VLLM::EngineCor",
            ["VLLM::EngineCore"],
            ("python3", ["python3"]),
            ("VLLM::EngineCore", "vllm"),
        ),
        (
            "VLLM::EngineCor",
            ["VLLM::EngineCore_DP0     "],
            ("", []),
            ("VLLM::EngineCore_DP0", "vllm"),
        ),
        ("VLLM::EngineCor", [], ("", []), ("VLLM::EngineCor", "vllm")),  # cmdline unreadable
        (
            "python3",
            ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "x"],
            ("bash", ["bash"]),
            ("vllm api_server", "vllm"),
        ),
        (
            "vllm",
            ["/venv/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ"],
            ("", []),
            ("vllm api_server", "vllm"),
        ),
        (
            "python",
            ["python", "-m", "llama_cpp.server", "--model", "m.gguf"],
            ("", []),
            ("llama_cpp.server", "llama.cpp"),
        ),
        (
            "ollama",
            ["/usr/bin/ollama", "runner", "--model", "/blobs/sha"],
            ("ollama", ["/usr/bin/ollama", "serve"]),
            ("ollama runner", "ollama"),
        ),
        (
            "llama-server",
            ["/usr/lib/ollama/llama-server", "--model", "x"],
            ("ollama", ["/usr/bin/ollama", "serve"]),
            ("llama-server", "ollama"),
        ),
        (
            "llama-server",
            ["./llama-server", "-m", "x.gguf", "--metrics"],
            ("bash", ["-bash"]),
            ("llama-server", "llama.cpp"),
        ),
        (
            "ollama_llama_se",
            ["/tmp/ollama123/runners/cuda_v12/ollama_llama_server", "--model", "x"],
            ("", []),
            ("ollama_llama_server", "ollama"),
        ),
        (
            "ollama",
            ["/usr/bin/ollama", "serve"],
            ("systemd", ["/sbin/init"]),
            ("ollama serve", "ollama"),
        ),
        ("python3", ["python3", "train.py"], ("bash", ["bash"]), ("python3", "unknown")),
    ],
)
def test_classify_process(
    comm: str, argv: list[str], parent: tuple[str, list[str]], expected: tuple[str, str]
) -> None:
    assert classify_process(comm, argv, *parent) == expected


def fake_proc(root: Path, pid: int, comm: str, argv: list[str], ppid: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nState:\tS (sleeping)\nPPid:\t{ppid}\n")


def test_identify_process_reads_proc_and_parent(tmp_path: Path) -> None:
    fake_proc(tmp_path, 100, "ollama", ["/usr/bin/ollama", "serve"], 1)
    fake_proc(tmp_path, 200, "llama-server", ["/usr/lib/ollama/llama-server", "--port", "4"], 100)
    # setproctitle pads the title with NULs and spaces
    d = tmp_path / "300"
    d.mkdir()
    (d / "comm").write_text("VLLM::EngineCor\n")
    (d / "cmdline").write_bytes(b"VLLM::EngineCore" + b"\0" * 40)
    assert identify_process(200, tmp_path) == ("llama-server", "ollama")
    assert identify_process(300, tmp_path) == ("VLLM::EngineCore", "vllm")  # no status file
    assert identify_process(999, tmp_path) == ("pid not visible", "unknown")
    assert identify_process(os.getpid()) == (own_comm(), "unknown")


# --- hardware_info ---------------------------------------------------------------------

CPUINFO = """\
processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: 0
core id\t\t: 1
"""


def test_hardware_info_parsers_and_real_host(tmp_path: Path) -> None:
    assert _cpu_info(CPUINFO) == ("AMD EPYC 9654 96-Core Processor", 2)  # SMT siblings merged
    assert _cpu_info("processor : 0\nModel : Raspberry Pi 4\n") == ("Raspberry Pi 4", None)
    assert _mem_total_bytes("MemTotal:       16384 kB\nMemFree: 1 kB\n") == 16384 * 1024
    assert _mem_total_bytes("") is None

    (tmp_path / "cpuinfo").write_text(CPUINFO)
    (tmp_path / "meminfo").write_text("MemTotal:       2048 kB\n")
    hw = hardware_info(proc_root=tmp_path)
    assert hw["cpu_model"] == "AMD EPYC 9654 96-Core Processor"
    assert hw["cpu_cores_physical"] == 2
    assert hw["ram_total_bytes"] == 2048 * 1024
    assert hw["cpu_cores_logical"] == os.cpu_count()
    assert hw["python"] == ".".join(map(str, sys.version_info[:3]))
    real = hardware_info()
    assert real["ram_total_bytes"] and real["ram_total_bytes"] > 0
    assert json.loads(json.dumps(real)) == real


# --- bench/gpu_check.py's analysis (its GPU run is on the device, not in CI) -----------


def load_gpu_check() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gpu_check", Path(__file__).parents[2] / "bench" / "gpu_check.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def synthetic_run(pid: int, steps: list[float], noise: int = 0) -> tuple[list[dict], list[Sample]]:
    """Events as the child prints them and samples at 4 Hz, with a 500 MiB context."""
    events = [{"event": "ready", "t": 10.0}]
    held = {10.0: 0.0}
    t = 12.0
    for gib in steps:
        events += [
            {"event": "alloc", "t": t, "gib": gib},
            {"event": "hold", "t": t + 0.1, "gib": gib},
        ]
        held[t + 0.1] = gib
        t += 2.0
    events.append({"event": "done", "t": t})
    samples = []
    for k in range(int((t - 10.0) * 4)):
        st = 10.0 + k * 0.25 + 0.01
        gib = max(v for start, v in held.items() if start <= st)
        proc_bytes = 500 * MIB + gib * GIB
        labels = {"gpu": "0", "name": "H100"}
        samples.append(
            Sample(st, "nvml", "memory_used_bytes", 3 * GIB + proc_bytes + noise, labels)
        )
        samples.append(
            Sample(
                st,
                "nvml",
                "process_memory_used_bytes",
                proc_bytes,
                {"gpu": "0", "pid": str(pid), "process": "python3", "engine": "unknown"},
            )
        )
    return events, samples


def test_gpu_check_analysis_passes_on_exact_steps_and_fails_on_wrong_ones() -> None:
    gc = load_gpu_check()
    events, samples = synthetic_run(4242, [2, 6, 20])
    rows = gc.analyze(events, samples, 4242)
    assert [(r.step_gib, r.result) for r in rows] == [(2, "PASS"), (6, "PASS"), (20, "PASS")]
    assert [r.device_delta_mib for r in rows] == [2048, 6144, 20480]
    assert rows[0].process_abs_mib == 2548 and rows[0].process_label == "python3"
    assert all(r.samples >= 6 for r in rows)
    assert "PASS" in gc.format_table(rows, 256)

    # another pid: the process check fails, the device check still passes
    rows = gc.analyze(events, samples, 999)
    assert all(r.result == "FAIL: pid 999 not in the process samples" for r in rows)
    # the device grew 300 MiB more than the step from the first step on
    drift = [
        Sample(s.t, s.source, s.name, s.value + (300 * MIB if s.t > 12.1 else 0), s.labels)
        if s.name == "memory_used_bytes"
        else s
        for s in samples
    ]
    assert [r.result for r in gc.analyze(events, drift, 4242)] == ["FAIL: device delta off"] * 3
    assert gc.analyze([], samples, 4242) == []
    # attribution: the child shows up as "python3", not as a vLLM engine process
    assert [r.result for r in gc.analyze(events, samples, 4242, expect_engine="vllm")] == [
        "FAIL: engine 'unknown', expected 'vllm'"
    ] * 3
