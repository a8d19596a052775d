"""lib/charts/telemetry.py: the memory story told by the figure itself (total, vLLM's
budget, the engine's phases), units and titles, lane colours, bounded points, captions
instead of empty charts."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

from lib import charts
from lib.analysis import telemetry_frames as tf
from lib.charts import telemetry as ct
from lib.telemetry import parse_vllm_metrics
from tests.analysis.test_frames import LANE_NAMES, T0
from tests.analysis.test_telemetry_frames import (
    GIB,
    GPU_NAME,
    GPU_TOTAL,
    OLLAMA_GIB,
    rows_of,
    seed_lanes,
    seed_samples,
)

DATA = Path(__file__).parents[1] / "data"
COLORS = charts.lane_colors(LANE_NAMES)
SPANS = [
    {"lane": LANE_NAMES[0], "lane_idx": 0, "concurrency": 1, "start_s": 0.0, "end_s": 6.0},
    {"lane": LANE_NAMES[0], "lane_idx": 0, "concurrency": 5, "start_s": 10.0, "end_s": 16.0},
    {"lane": LANE_NAMES[1], "lane_idx": 1, "concurrency": 1, "start_s": 20.0, "end_s": 26.0},
    {"lane": LANE_NAMES[1], "lane_idx": 1, "concurrency": 5, "start_s": 30.0, "end_s": 36.0},
]
GPU_ENV = {"telemetry": {"nvml": "ok", "0/api/ps": "ok", "1/metrics": "ok"}}
NO_GPU_ENV = {"telemetry": {"nvml": "unavailable: no NVIDIA GPU (NVML library not found)"}}


def _seed_charts(rows=None, env=GPU_ENV, **kw) -> ct.TelemetryCharts:
    rows = rows_of(seed_samples()) if rows is None else rows
    return ct.telemetry_charts(rows, env, seed_lanes(), SPANS, T0, COLORS, end_s=40.0, **kw)


def _annotations(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def _check_style(fig: go.Figure) -> None:
    """What every dashboard figure has: white template, a title, axis titles with units."""
    assert fig.layout.template.layout.paper_bgcolor in (None, "white")
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text == charts.TIME_TITLE
    assert "(" in fig.layout.yaxis.title.text  # a unit
    assert fig.layout.showlegend


def test_memory_figure_tells_the_seed_story():
    out = _seed_charts(uirevision="run-1")
    keys = [key for key, _, _ in out.figures]
    assert keys == ["gpu0", "kv", "queue", "ollama"]
    assert out.captions == []
    fig = out.figures[0][1]
    assert out.figures[0][2] is True  # full width
    _check_style(fig)
    assert fig.layout.title.text == f"GPU 0 memory over the run: {GPU_NAME}"
    assert fig.layout.yaxis.title.text == "GPU memory (GiB)"
    assert fig.layout.uirevision == "run-1"
    # The whole device as a grey area, each engine process as a line in its lane's colour.
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {
        "GPU 0 used (all processes)",
        f"{LANE_NAMES[0]} (ollama runner)",
        f"{LANE_NAMES[1]} (VLLM::EngineCore)",
    }
    assert traces["GPU 0 used (all processes)"].fill == "tozeroy"
    assert traces[f"{LANE_NAMES[0]} (ollama runner)"].line.color == COLORS[LANE_NAMES[0]]
    vllm = traces[f"{LANE_NAMES[1]} (VLLM::EngineCore)"]
    assert vllm.line.color == COLORS[LANE_NAMES[1]]
    assert max(vllm.y) == pytest.approx(20.9)
    assert min(vllm.y) == pytest.approx(3 / 1024)
    assert list(traces[f"{LANE_NAMES[0]} (ollama runner)"].y) == pytest.approx([OLLAMA_GIB] * 41)
    # The card's total (dashed) and vLLM's budget (dotted, in vLLM's colour) as lines.
    lines = {s.line.dash: s for s in fig.layout.shapes if s.type == "line" and s.y0 == s.y1}
    assert lines["dash"].y0 == pytest.approx(GPU_TOTAL / GIB)
    assert lines["dot"].y0 == pytest.approx(0.435 * GPU_TOTAL / GIB)
    assert lines["dot"].line.color == COLORS[LANE_NAMES[1]]
    text = _annotations(fig)
    assert "vLLM reserves 0.435 × 48.0 GiB = 20.9 GiB up front" in text
    assert "GPU total 48.0 GiB" in text
    # The engine's phases, marked where they happened.
    assert "vLLM started: 3 MiB" in text
    assert "vLLM: model loaded: 5.8 GiB" in text
    assert "vLLM: KV cache reserved: 20.9 GiB" in text
    assert "Ollama: 5.3 GiB" in text  # flat all run: its level written at the line's end
    phase = next(a for a in fig.layout.annotations if a.text.startswith("vLLM: KV cache"))
    assert (phase.x, phase.y) == (8.0, pytest.approx(20.9))
    # Levels as bands labelled by concurrency; run start and end.
    assert text.count("c=5") == 2 and text.count("c=1") == 2
    assert "run start" in text and "run end" in text
    # Why: the subtitle names both policies.
    subtitle = fig.layout.title.subtitle.text
    assert "vLLM reserves gpu_memory_utilization (0.435) × the GPU up front" in subtitle
    assert "86,736 tokens" in subtitle  # 5,421 blocks × 16
    assert "Ollama allocates weights + a KV cache for num_ctx × num_parallel" in subtitle
    assert "8,192 here" in subtitle
    # y shows the total with room above it.
    assert fig.layout.yaxis.range[1] > GPU_TOTAL / GIB


def test_kv_and_queue_figures_from_the_real_capture():
    rows = []
    for i, name in enumerate(("telemetry_vllm_metrics.txt", "telemetry_vllm_metrics_later.txt")):
        for s in parse_vllm_metrics((DATA / name).read_text(), T0 + 21 + i):
            rows.append(
                {"lane_idx": 1, "t": s.t, "source": s.source, "name": s.name}
                | {"value": s.value, "labels": s.labels}
            )
    out = ct.telemetry_charts(rows, NO_GPU_ENV, seed_lanes(), SPANS, T0, COLORS, end_s=40.0)
    assert out.captions[0] == "GPU memory: no NVIDIA GPU on this machine (NVML library not found)"
    figures = {key: fig for key, fig, _ in out.figures}
    assert list(figures) == ["kv", "queue"]  # no empty GPU chart; vLLM's /metrics still shown
    kv = figures["kv"]
    _check_style(kv)
    assert kv.layout.yaxis.title.text == "KV cache in use (%)"
    assert tuple(kv.layout.yaxis.range) == (0, 105)
    assert [t.name for t in kv.data] == [LANE_NAMES[1]]
    assert kv.data[0].line.color == COLORS[LANE_NAMES[1]]
    assert list(kv.data[0].y) == pytest.approx([2.746917348309119, 3.3085093395189835])
    assert "of 1,048,576 tokens" in kv.layout.title.subtitle.text  # 8,192 blocks × 128
    queue = figures["queue"]
    _check_style(queue)
    assert [t.name for t in queue.data] == [
        f"{LANE_NAMES[1]}: running",
        f"{LANE_NAMES[1]}: waiting",
    ]
    assert list(queue.data[0].y) == [50.0, 37.0]
    assert queue.data[1].line.dash == "dash"
    assert "c=5" in _annotations(queue)
    # The Ollama lane's /api/ps gave nothing this time: said so, with the recorder's reason.
    env = NO_GPU_ENV | {
        "telemetry": NO_GPU_ENV["telemetry"] | {"0/api/ps": "unavailable: HTTP 404"}
    }
    out = ct.telemetry_charts(rows, env, seed_lanes(), SPANS, T0, COLORS, end_s=40.0)
    assert f"Ollama /api/ps of {LANE_NAMES[0]}: unavailable: HTTP 404" in out.captions


def test_ollama_figure():
    out = _seed_charts()
    fig = dict((k, f) for k, f, _ in out.figures)["ollama"]
    assert fig.layout.title.text == "Ollama loaded models: size and share in VRAM"
    assert "8,192 tokens" in fig.layout.title.subtitle.text
    names = [t.name for t in fig.data]
    assert names == [f"{LANE_NAMES[0]}: {s}" for s in ("size", "in VRAM", "VRAM share")]
    assert {t.line.color for t in fig.data} == {COLORS[LANE_NAMES[0]]}
    assert fig.layout.yaxis.title.text == "Size (GiB)"
    assert fig.layout.yaxis2.title.text == "In VRAM (%)"
    assert fig.layout.xaxis2.title.text == charts.TIME_TITLE
    assert set(fig.data[2].y) == {100.0}
    assert max(fig.data[0].y) == pytest.approx(OLLAMA_GIB, abs=1e-6)
    assert fig.layout.yaxis.range[1] > OLLAMA_GIB  # the line is not on the frame's edge
    # Level bands in both panels (labelled in each), run start and end in the lower one.
    text = _annotations(fig)
    assert text.count("c=5") == 2 and "run start" in text and "run end" in text
    assert {s.yref for s in fig.layout.shapes if s.type == "rect"} == {"y domain", "y2 domain"}


def test_no_samples_give_captions_not_empty_charts():
    out = _seed_charts(rows=[], env=NO_GPU_ENV)
    assert out.figures == []
    assert out.captions == [
        "GPU memory: no NVIDIA GPU on this machine (NVML library not found)",
        f"Ollama /api/ps of {LANE_NAMES[0]}: no readings were recorded",
        f"vLLM /metrics of {LANE_NAMES[1]}: no readings were recorded",
    ]
    # Live, before the first round: a GPU that is there but not read yet.
    live = ct.telemetry_charts(
        [], {"hardware": {"gpu": {"available": True}}}, seed_lanes(), [], T0, COLORS, active=True
    )
    assert live.captions == ["GPU memory: waiting for the first NVML reading"]


def test_memory_points_are_bounded():
    """A long run (3 h at 1 Hz) is thinned to at most MAX_POINTS, its peak kept."""
    rows = rows_of(seed_samples(seconds=3 * 3600))
    out = _seed_charts(rows=rows)
    fig = out.figures[0][1]
    points = sum(len(t.x) for t in fig.data)
    assert points <= tf.MAX_POINTS + 12
    vllm = next(t for t in fig.data if "EngineCore" in t.name)
    assert max(vllm.y) == pytest.approx(20.9)
    assert "Showing" in fig.layout.title.subtitle.text
    for _, other, _ in out.figures[1:]:
        assert sum(len(t.x) for t in other.data) <= tf.MAX_POINTS + 12


def test_names_cannot_format_a_chart():
    """Lane and process names are untrusted: no Plotly markup survives in them."""
    lanes = [tf.LaneRef(1, "<b>x</b><a href='http://e'>l</a>", "vllm", "m", "http://v")]
    rows = [
        r | {"labels": r["labels"] | {"process": "<i>evil</i>"}}
        if r["name"] == "process_memory_used_bytes"
        else r
        for r in rows_of(seed_samples(seconds=5))
    ]
    out = ct.telemetry_charts(rows, GPU_ENV, lanes, [], T0, {lanes[0].name: "#123456"})
    texts = [t.name for _, fig, _ in out.figures for t in fig.data]
    texts += [a for _, fig, _ in out.figures for a in _annotations(fig)]
    assert texts and not any("<b>" in t or "<a " in t or "<i>" in t for t in texts)
    assert any("‹b›x‹/b›" in t for t in texts)
