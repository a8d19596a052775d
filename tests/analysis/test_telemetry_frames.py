"""lib/analysis/telemetry_frames.py: samples to frames, checked by hand.

`seed_telemetry` writes what the seed team saw on their GPU beside `make_seed_run`'s
requests: Ollama's runner holding 5.3 GiB throughout, vLLM's EngineCore appearing with
3 MiB, loading its model (5.8 GiB) and reserving its KV cache (20.9 GiB) before its lane's
first request; vLLM's /metrics and Ollama's /api/ps beside them. The AppTest and chart
tests reuse it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lib import store
from lib.analysis import lane_memory, results
from lib.analysis import telemetry_frames as tf
from lib.core.records import Sample
from lib.telemetry import parse_ollama_ps, parse_vllm_metrics
from tests.analysis.test_frames import LANE_NAMES, T0, make_seed_run

DATA = Path(__file__).parents[1] / "data"
GIB = 2**30
GPU_TOTAL = 51_527_024_640  # an RTX A6000: 49,140 MiB
GPU_NAME = "NVIDIA RTX A6000"
UTIL = "0.435"  # vLLM's budget: 0.435 × 47.99 GiB = 20.9 GiB
OLLAMA_GIB = 5.3
# vLLM's EngineCore from the seed log, by second since the run started (absent before 1 s).
VLLM_GIB = {1: 3 / 1024, 2: 1.5, 3: 3.6, 4: 5.8, 7: 12.0, 8: 20.9}
DRIVER_GIB = 0.4
SECONDS = 41  # make_seed_run's levels run from 0 to 36 s; it finishes at 40 s


def vllm_gib(s: int) -> float | None:
    """The EngineCore's memory at second `s` (None before it exists)."""
    if s < 1:
        return None
    return VLLM_GIB[max(k for k in VLLM_GIB if k <= s)]


def seed_samples(t0: float = T0, seconds: int = SECONDS) -> dict[int | None, list[Sample]]:
    """Samples by lane index (None: machine-wide NVML), one round a second from t0."""
    out: dict[int | None, list[Sample]] = {None: [], 0: [], 1: []}
    gpu = {"gpu": "0", "name": GPU_NAME}
    for s in range(seconds):
        t = t0 + s
        procs = [("4100", "ollama runner", "ollama", OLLAMA_GIB)]
        if (v := vllm_gib(s)) is not None:
            procs.append(("5200", "VLLM::EngineCore", "vllm", v))
        used = DRIVER_GIB + sum(p[3] for p in procs)
        out[None] += [
            Sample(t, "nvml", "memory_used_bytes", used * GIB, dict(gpu)),
            Sample(t, "nvml", "memory_total_bytes", float(GPU_TOTAL), dict(gpu)),
            Sample(t, "nvml", "utilization_gpu_pct", 0.0, dict(gpu)),
        ]
        for pid, process, engine, gib in procs:
            labels = {"gpu": "0", "pid": pid, "process": process, "engine": engine}
            out[None].append(Sample(t, "nvml", "process_memory_used_bytes", gib * GIB, labels))
        # vLLM lane (index 1): its levels run 20-26 s (c=1) and 30-36 s (c=5).
        running = 1.0 if 20 <= s < 26 else 5.0 if 30 <= s < 36 else 0.0
        model = {"model_name": "Qwen/Qwen2.5-7B-Instruct-AWQ"}
        out[1] += [
            Sample(t, "vllm", "kv_cache_usage_perc", running * 0.014, dict(model)),
            Sample(t, "vllm", "num_requests_running", running, dict(model)),
            Sample(t, "vllm", "num_requests_waiting", 0.0, dict(model)),
        ]
        if s == 0:
            config = {"gpu_memory_utilization": UTIL, "num_gpu_blocks": "5421"}
            config |= {"block_size": "16", "kv_cache_memory_bytes": "None", "engine": "0"}
            out[1].append(Sample(t, "vllm", "cache_config_info", 1.0, config))
        # Ollama lane (index 0): /api/ps, its model wholly in VRAM.
        ps = {
            "models": [
                {
                    "model": "qwen2.5:7b-instruct-q4_K_M",
                    "size": int(OLLAMA_GIB * GIB),
                    "size_vram": int(OLLAMA_GIB * GIB),
                    "context_length": 8192,
                }
            ]
        }
        out[0] += parse_ollama_ps(ps, t)
    return out


def seed_telemetry(db, run_id: str, t0: float = T0) -> None:
    """Write seed_samples into a run of the store, as the runner's sink does."""
    with store.opened(db) as conn:
        for lane_idx, samples in seed_samples(t0).items():
            store.add_samples(conn, run_id, lane_idx, samples)


def seed_lanes() -> list[tf.LaneRef]:
    return [
        tf.LaneRef(0, LANE_NAMES[0], "ollama", "qwen2.5:7b-instruct-q4_K_M", "http://o:11434"),
        tf.LaneRef(1, LANE_NAMES[1], "vllm", "Qwen/Qwen2.5-7B-Instruct-AWQ", "http://v:8000/v1"),
    ]


def rows_of(samples: dict[int | None, list[Sample]]) -> list[dict]:
    """Samples as store.get_samples rows (what the frames read)."""
    out = []
    for lane_idx, items in samples.items():
        for s in items:
            out.append(
                {"lane_idx": lane_idx, "t": s.t, "source": s.source, "name": s.name}
                | {"value": s.value, "labels": dict(s.labels)}
            )
    return sorted(out, key=lambda r: r["t"])


@pytest.fixture
def rows() -> list[dict]:
    return rows_of(seed_samples())


def test_memory_frame_attributes_processes_to_lanes(rows):
    mem = tf.memory_frame(rows, T0, seed_lanes())
    assert list(mem.columns) == list(tf.MEMORY_COLUMNS)
    by_series = dict(mem.groupby("series").size())
    vllm_series = f"{LANE_NAMES[1]} (VLLM::EngineCore)"
    ollama_series = f"{LANE_NAMES[0]} (ollama runner)"
    assert by_series == {
        "GPU 0 used (all processes)": SECONDS,
        ollama_series: SECONDS,
        vllm_series: SECONDS - 1,  # appeared at 1 s
    }
    vllm = mem[mem["series"] == vllm_series]
    assert vllm["lane_idx"].unique().tolist() == [1]
    assert vllm["t_s"].iloc[0] == pytest.approx(1.0)
    # The seed log's steps, in GiB: 3 MiB → 5.8 → 20.9.
    assert vllm["gib"].iloc[0] == pytest.approx(3 / 1024)
    assert vllm.set_index("t_s").loc[5.0, "gib"] == pytest.approx(5.8)
    assert vllm["gib"].max() == pytest.approx(20.9)
    ollama = mem[mem["series"] == ollama_series]
    assert ollama["gib"].unique().tolist() == pytest.approx([OLLAMA_GIB])
    device = mem[mem["kind"] == "device"]
    assert device["gib"].max() == pytest.approx(DRIVER_GIB + OLLAMA_GIB + 20.9)
    assert tf.gpus(rows) == [tf.GpuInfo("0", GPU_NAME, float(GPU_TOTAL))]


def test_two_lanes_of_one_engine_are_not_guessed(rows):
    """NVML cannot tell two vLLM servers' processes apart: named by pid, no lane colour."""
    lanes = [*seed_lanes(), tf.LaneRef(2, "vLLM · other", "vllm", "m", "http://w:8000/v1")]
    mem = tf.memory_frame(rows, T0, lanes)
    vllm = mem[mem["engine"] == "vllm"]
    assert vllm["series"].unique().tolist() == ["vLLM: VLLM::EngineCore (pid 5200)"]
    assert vllm["lane"].isna().all()
    ollama = mem[mem["engine"] == "ollama"]
    assert ollama["lane_idx"].unique().tolist() == [0]  # still the one Ollama lane


def test_engine_phases_find_start_load_and_kv_reservation(rows):
    mem = tf.memory_frame(rows, T0, seed_lanes())
    caches = tf.vllm_caches(rows)
    gpu = tf.gpus(rows)[0]
    res = tf.vllm_reservation(caches[1], gpu, seed_lanes()[1])
    assert res is not None
    assert res["gib"] == pytest.approx(0.435 * GPU_TOTAL / GIB)
    assert res["text"] == "vLLM reserves 0.435 × 48.0 GiB = 20.9 GiB up front"
    assert res["lane"] == LANE_NAMES[1]
    phases = tf.engine_phases(mem, GPU_TOTAL / GIB, res["gib"])
    got = [(p["label"], p["t_s"], round(p["gib"], 3)) for p in phases]
    assert got == [
        ("vLLM started", 1.0, round(3 / 1024, 3)),
        ("vLLM: model loaded", 4.0, 5.8),  # 1.5, 3.6, 5.8 over three readings: one step
        ("vLLM: KV cache reserved", 8.0, 20.9),
    ]
    assert {p["lane"] for p in phases} == {LANE_NAMES[1]}
    # Ollama's runner was loaded before the run and stayed flat: nothing to mark.
    assert not [p for p in phases if p["engine"] == "ollama"]
    # Without the cache config, vLLM's largest later step is still its KV cache.
    unknown = tf.engine_phases(mem, GPU_TOTAL / GIB, None)
    assert [p["label"] for p in unknown][-1] == "vLLM: KV cache reserved"


def test_engine_phases_of_an_ollama_cold_load():
    """Ollama loads at the first request: its runner's rise is 'model loaded'."""
    rows = []
    for s, gib in enumerate([0.2, 0.2, 2.0, 5.3, 5.3, 5.3, 5.3]):
        labels = {"gpu": "0", "pid": "9", "process": "ollama runner", "engine": "ollama"}
        rows.append(
            {"lane_idx": None, "t": T0 + s, "source": "nvml", "name": "process_memory_used_bytes"}
            | {"value": gib * GIB, "labels": labels}
        )
    mem = tf.memory_frame(rows, T0, seed_lanes())
    phases = tf.engine_phases(mem, 24.0)
    assert [(p["label"], p["t_s"], p["gib"]) for p in phases] == [
        ("Ollama: model loaded", 3.0, pytest.approx(5.3))
    ]
    # Steps under the threshold (max(256 MiB, 2 % of the GPU)) are noise, not phases.
    assert tf.engine_phases(mem, 1000.0) == []


def test_vllm_cache_config_from_the_real_capture():
    samples = parse_vllm_metrics((DATA / "telemetry_vllm_metrics.txt").read_text(), T0)
    rows = [
        {"lane_idx": 0, "t": s.t, "source": s.source, "name": s.name}
        | {"value": s.value, "labels": s.labels}
        for s in samples
    ]
    cache = tf.vllm_caches(rows)[0]
    assert cache.gpu_memory_utilization == pytest.approx(0.92)
    assert (cache.num_gpu_blocks, cache.block_size) == (8192, 128)
    assert cache.kv_tokens == 8192 * 128
    # The CPU build sizes its cache by VLLM_CPU_KVCACHE_SPACE: no utilization budget.
    assert cache.kv_cache_memory_bytes == 2**30
    assert tf.vllm_reservation(cache, tf.GpuInfo("0", "x", 80.0 * GIB)) is None


def test_kv_frame_from_real_captures():
    """The sandbox vLLM's /metrics, parsed as the recorder does, two polls apart."""
    rows = []
    for i, name in enumerate(("telemetry_vllm_metrics.txt", "telemetry_vllm_metrics_later.txt")):
        for s in parse_vllm_metrics((DATA / name).read_text(), T0 + 2 + i):
            rows.append(
                {"lane_idx": 1, "t": s.t, "source": s.source, "name": s.name}
                | {"value": s.value, "labels": s.labels}
            )
    kv = tf.kv_frame(rows, T0, seed_lanes())
    assert list(kv.columns) == list(tf.KV_COLUMNS)
    assert kv["lane"].tolist() == [LANE_NAMES[1]] * 2
    assert kv["t_s"].tolist() == [2.0, 3.0]
    # 0-1 fraction on the wire, percent in the frame.
    assert kv["kv_pct"].tolist() == pytest.approx([2.746917348309119, 3.3085093395189835])
    assert kv["running"].tolist() == [50.0, 37.0]
    assert kv["waiting"].tolist() == [0.0, 0.0]


def test_kv_frame_reads_the_old_metric_name():
    rows = [
        {"lane_idx": 0, "t": T0, "source": "vllm", "name": "gpu_cache_usage_perc"}
        | {"value": 0.5, "labels": {}}
    ]
    assert tf.kv_frame(rows, T0, []).iloc[0]["kv_pct"] == pytest.approx(50.0)
    assert tf.kv_frame(rows, T0, []).iloc[0]["lane"] == "lane 1"


def test_ollama_frame_from_api_ps(rows):
    oll = tf.ollama_frame(rows, T0, seed_lanes())
    assert list(oll.columns) == list(tf.OLLAMA_COLUMNS)
    assert len(oll) == SECONDS
    first = oll.iloc[0]
    assert (first["lane"], first["lane_idx"], first["model"]) == (
        LANE_NAMES[0],
        0,
        "qwen2.5:7b-instruct-q4_K_M",
    )
    assert first["size_gib"] == pytest.approx(OLLAMA_GIB, abs=1e-6)
    assert first["share_pct"] == pytest.approx(100.0)
    assert first["context_length"] == 8192


def test_ollama_frame_keeps_a_server_once_and_names_other_models():
    """Two lanes on one Ollama server both poll /api/ps: each model is drawn once."""
    ps = parse_ollama_ps((DATA / "telemetry_ollama_ps.json").read_text(), T0 + 1)
    lanes = [
        tf.LaneRef(0, "A", "ollama", "qwen2.5:7b-instruct-q4_K_M", "http://o:11434"),
        tf.LaneRef(1, "B", "ollama", "gemma", "http://o:11434"),
    ]
    rows = [
        {"lane_idx": li, "t": s.t, "source": s.source, "name": s.name}
        | {"value": s.value, "labels": s.labels}
        for li in (0, 1)
        for s in ps
    ]
    oll = tf.ollama_frame(rows, T0, lanes).set_index("model")
    assert sorted(oll.index) == ["llama3.2:3b", "qwen2.5:7b-instruct-q4_K_M"]
    assert oll.loc["qwen2.5:7b-instruct-q4_K_M", "lane"] == "A"
    assert oll.loc["llama3.2:3b", "series"] == "Ollama: llama3.2:3b (not a lane)"
    assert pd.isna(oll.loc["llama3.2:3b", "lane"])
    assert oll.loc["llama3.2:3b", "share_pct"] == pytest.approx(75.0)  # 3 of 4 GB in VRAM


def test_thin_bounds_points_and_keeps_peaks():
    n = 20_000
    frame = pd.DataFrame(
        {
            "series": ["a"] * n + ["b"] * n,
            "t_s": [float(i) for i in range(n)] * 2,
            "gib": [1.0] * n + [2.0] * n,
        }
    )
    frame.loc[12_345, "gib"] = 9.0  # a one-reading spike in series a
    frame.loc[n + 777, "gib"] = 0.5  # a one-reading dip in series b
    shown = tf.thin(frame, "series", "gib", max_points=5_000)
    assert len(shown) <= 5_000 + 4  # first and last row of each series on top
    assert 9.0 in shown["gib"].tolist() and 0.5 in shown["gib"].tolist()
    assert shown.groupby("series").size().to_dict().keys() == {"a", "b"}
    assert shown["t_s"].is_monotonic_increasing or shown.index.is_monotonic_increasing
    assert tf.thin(frame, "series", "gib", max_points=5_000).equals(shown)  # stable
    small = frame.iloc[:10]
    assert tf.thin(small, "series", "gib").equals(small)


def test_gpu_caption_from_the_runs_environment():
    no_lib = "unavailable: no NVIDIA GPU (NVML library not found)"
    assert (
        tf.gpu_caption({"telemetry": {"nvml": no_lib}})
        == "GPU memory: no NVIDIA GPU on this machine (NVML library not found)"
    )
    # While the run goes on, only the hardware probe of its start is there.
    during = {
        "hardware": {"gpu": {"available": False, "reason": "no NVIDIA GPU (no device found)"}}
    }
    assert tf.gpu_caption(during) == "GPU memory: no NVIDIA GPU on this machine (no device found)"
    assert tf.gpu_caption({"telemetry": {"nvml": "unavailable: NVML error: Unknown"}}) == (
        "GPU memory: NVML error: Unknown"
    )
    assert tf.gpu_caption({"telemetry": {"nvml": "ok"}}) is None
    assert tf.gpu_caption({"hardware": {"gpu": {"available": True}}}) is None
    assert tf.gpu_caption({}) == "GPU memory: not recorded with this run"


def test_hardware_rows():
    hw = {"gpu": {"available": True, "driver": "550.54.15", "gpus": []}}
    hw["gpu"]["gpus"] = [{"index": 0, "name": GPU_NAME, "memory_total_bytes": GPU_TOTAL}]
    assert tf.hardware_rows(hw) == [
        ("Hardware: GPU 0", "NVIDIA RTX A6000 (48.0 GiB)"),
        ("Hardware: GPU driver", "550.54.15"),
    ]
    none = {"gpu": {"available": False, "reason": "no NVIDIA GPU (NVML library not found)"}}
    assert tf.hardware_rows(none) == [
        ("Hardware: GPU", "none: no NVIDIA GPU (NVML library not found)")
    ]
    assert tf.hardware_rows({"gpu": "NVIDIA RTX 4090"}) == [("Hardware: gpu", "NVIDIA RTX 4090")]
    assert tf.hardware_rows({}) == []


def test_lane_peak_memory_from_the_results_document(tmp_path):
    db = tmp_path / "store.db"
    run_id = make_seed_run(db)
    seed_telemetry(db, run_id)
    doc = results.run_document(db, run_id)
    ollama, vllm = doc["lanes"]
    peak, source = lane_memory.lane_peak_memory(ollama)
    assert peak == pytest.approx(OLLAMA_GIB * GIB)
    assert source == "engine processes (NVML)"
    peak, source = lane_memory.lane_peak_memory(vllm)
    assert peak == pytest.approx(20.9 * GIB)
    assert source == "engine processes (NVML)"


def test_lane_peak_memory_falls_back_and_leaves_cpu_ram_out():
    device = [
        {"t": 1.0, "source": "nvml", "name": "memory_used_bytes", "value": 7.0 * GIB},
        {"t": 2.0, "source": "nvml", "name": "memory_used_bytes", "value": 9.0 * GIB},
    ]
    lane = {"engine_info": {"kind": "vllm"}, "telemetry": device}
    assert lane_memory.lane_peak_memory(lane) == (pytest.approx(9.0 * GIB), "whole GPU (NVML)")
    # Ollama on CPU: /api/ps size with nothing in VRAM is RAM; no GPU figure at all.
    cpu = [
        {"t": 1.0, "source": "ollama", "name": "size", "value": 5.0 * GIB},
        {"t": 1.0, "source": "ollama", "name": "size_vram", "value": 0.0},
    ]
    assert lane_memory.lane_peak_memory({"engine_info": {"kind": "ollama"}, "telemetry": cpu}) == (
        None,
        "",
    )
    assert lane_memory.lane_peak_memory({"engine_info": {"kind": "vllm"}, "telemetry": []}) == (
        None,
        "",
    )


def test_sample_log_reads_only_new_chart_samples(tmp_path):
    db = tmp_path / "store.db"
    run_id = make_seed_run(db)
    samples = seed_samples(seconds=3)
    log = tf.SampleLog(run_id)
    with store.opened(db) as conn:
        store.add_samples(conn, run_id, None, samples[None])
        first = log.refresh(conn)
        store.add_samples(conn, run_id, 1, samples[1])
        second = log.refresh(conn)
        assert log.refresh(conn) == 0
    # Utilization is stored but no chart reads it, so the log leaves it out.
    assert first == len([s for s in samples[None] if s.name != "utilization_gpu_pct"])
    assert second == len(samples[1])
    assert len(log) == first + second
    assert {r["name"] for r in log.rows()} <= set(tf.CHART_NAMES)
    config = [r for r in log.rows() if r["name"] == "cache_config_info"]
    assert config[0]["labels"]["gpu_memory_utilization"] == UTIL  # labels decoded
