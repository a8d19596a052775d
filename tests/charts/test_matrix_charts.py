"""lib/charts/matrix.py: the matrix's bars per metric, start-up and peak memory, and each
engine's memory from its first second, over tests/analysis/test_matrix_frames.py's run
(two cells measured, one that never started)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest

from lib import charts
from lib.analysis import matrix_frames as mf
from lib.analysis import results
from lib.charts import matrix as cm
from lib.core.slo import Slo
from lib.launch import phases
from tests.analysis.test_matrix_frames import CELL_NAMES, make_matrix_run, rate_matrix_doc


def _doc(tmp_path, **kwargs: Any) -> dict[str, Any]:
    db = tmp_path / "store.db"
    return results.run_document(db, make_matrix_run(db, **kwargs))


@pytest.fixture
def doc(tmp_path) -> dict[str, Any]:
    return _doc(tmp_path)


@pytest.fixture
def colors(doc) -> dict[str, str]:
    return charts.lane_colors([lane["name"] for lane in doc["lanes"]])


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text


def test_metric_bars(doc, colors):
    frame = mf.matrix_frame(doc)
    fig = cm.metric_bars(frame, "out_tok_per_s", colors, uirevision="r")
    assert _title(fig) == "Output throughput by cell (tok/s)"
    assert fig.layout.yaxis.title.text == "Output throughput (tok/s)"
    assert fig.layout.xaxis.title.text == "Users at once (concurrency)"
    subtitle = fig.layout.title.subtitle.text
    assert "Higher is better" in subtitle and f"Failed, not drawn: {CELL_NAMES[2]}" in subtitle
    # One bar group per measured cell, in its lane's colour, at each load.
    assert [t.name for t in fig.data] == CELL_NAMES[:2]
    assert [t.marker.color for t in fig.data] == [colors[n] for n in CELL_NAMES[:2]]
    assert all(list(t.x) == ["c=1", "c=2"] for t in fig.data)
    assert list(fig.data[1].y) == pytest.approx([100.0, 200.0])
    # The value on each bar; the best of each load starred.
    assert list(fig.data[0].text) == ["50.0", "100.0"]
    assert list(fig.data[1].text) == ["★ 100.0", "★ 200.0"]
    assert fig.layout.barmode == "group"
    latency = cm.metric_bars(frame, "ttft_p50_ms", colors)
    assert _title(latency) == "TTFT p50 by cell (ms)"
    assert "Lower is better" in latency.layout.title.subtitle.text
    assert list(latency.data[1].text) == ["★ 50", "★ 50"]


def test_metric_figures_follow_the_frame(doc, colors):
    plain = cm.metric_figures(mf.matrix_frame(doc), colors)
    assert [k for k, _ in plain] == ["out_tok_per_s", "ttft_p50_ms", "tpot_p50_ms", "e2el_p50_ms"]
    judged = cm.metric_figures(mf.matrix_frame(doc, Slo(ttft_ms=80)), colors)
    assert [k for k, _ in judged][-2:] == ["slo_met_pct", "goodput_req_per_s"]
    assert _title(judged[-1][1]) == "Goodput by cell (req/s)"
    assert cm.metric_figures(pd.DataFrame(), colors) == []


def test_startup_memory(doc, colors):
    fig = cm.startup_memory(mf.matrix_frame(doc), colors)
    assert _title(fig) == "Start-up time and peak memory by cell"
    assert fig.layout.yaxis.title.text == "Start-up to ready (s)"
    assert fig.layout.yaxis2.title.text == "Peak memory (MiB)"
    ready = [t for t in fig.data if t.offsetgroup == "ready"]
    memory = [t for t in fig.data if t.offsetgroup == "rss"]
    assert [t.name for t in ready] == CELL_NAMES
    assert [t.y[0] for t in ready] == [1.5, 20.0, None]
    assert list(ready[2].text) == ["failed"]  # never ready: said, not drawn as 0
    assert [t.y[0] for t in memory] == [700.0, 2500.0, 300.0]
    assert all(t.xaxis == "x2" and t.yaxis == "y2" for t in memory)
    assert [t.marker.color for t in ready] == [colors[n] for n in CELL_NAMES]
    assert not [t for t in fig.data if t.offsetgroup == "gpu"]


def test_startup_memory_on_a_gpu(tmp_path):
    doc = _doc(tmp_path, gpu=True)
    colors = charts.lane_colors(CELL_NAMES)
    fig = cm.startup_memory(mf.matrix_frame(doc), colors)
    gpu = [t for t in fig.data if t.offsetgroup == "gpu"]
    assert [t.y[0] for t in gpu] == [None, 5000.0, None]
    assert gpu[1].marker.pattern.shape == "/"
    assert any("hatched: GPU memory" in a.text for a in fig.layout.annotations)


def test_memory_phases(doc, colors):
    fig = cm.memory_phases(mf.memory_frame(doc), colors, uirevision="r")
    assert _title(fig) == cm.MEMORY_TITLE == "Engine memory from its first second (MiB)"
    assert fig.layout.xaxis.title.text == "Seconds since the engine's process started (s)"
    assert fig.layout.yaxis.title.text == "Resident memory (MiB)"
    lines = [t for t in fig.data if t.mode == "lines"]
    marks = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in lines] == CELL_NAMES
    assert [t.line.color for t in lines] == [colors[n] for n in CELL_NAMES]
    # Every line starts at its own engine's spawn, and runs through its phases.
    assert all(min(t.x) == 0.0 for t in lines)
    assert max(lines[1].x) == pytest.approx(24.001)  # the last reading
    vllm = marks[1]
    assert [c[1] for c in vllm.customdata] == [p for p, _, _ in _phases(1)]
    assert "%{customdata[1]}" in vllm.hovertemplate and "MiB" in vllm.hovertemplate
    assert list(vllm.x) == [t for _, t, _ in _phases(1)]
    labels = [a.text for a in fig.layout.annotations]
    # vLLM's steps are seconds apart: a label each, with the memory then.
    for text in ("weights: 1,500 MiB", "KV cache: 2,300 MiB", "ready + 1st request: 2,310 MiB"):
        assert text in labels
    # llama.cpp's come within a second, on an axis of 24.5 s: one label.
    assert "weights + KV cache + ready + 1st request: 600–621 MiB" in labels
    assert len(labels) == 4
    # vLLM's "stopped" reads 0 (noted after its processes went): a marker, not a drop.
    assert vllm.y[-1] == 0 and min(lines[1].y) == 3


def _phases(lane: int) -> list[tuple[str, float, int]]:
    from tests.analysis.test_matrix_frames import CELLS

    return CELLS[lane]["phases"]


def test_memory_phases_gpu_line(tmp_path):
    doc = _doc(tmp_path, gpu=True)
    fig = cm.memory_phases(mf.memory_frame(doc), charts.lane_colors(CELL_NAMES))
    dashed = [t for t in fig.data if t.mode == "lines" and t.line.dash == "dash"]
    assert [t.name for t in dashed] == [f"{CELL_NAMES[1]} GPU"]
    assert max(dashed[0].y) == 5000.0


def test_phase_labels_merge_close_steps():
    names = [phases.STARTED, phases.WEIGHTS, phases.KV_CACHE, phases.READY, phases.IDLE]
    times = [0.0, 1.0, 1.1, 5.0, 9.0]
    mibs = [6.0, 600.0, 620.0, 621.0, 700.0]
    assert cm.phase_labels(names, times, mibs, gap_s=0.5, close_mib=50.0) == [
        "",
        "",
        "weights + KV cache: 600–620 MiB",
        "ready: 621 MiB",
        "",
    ]
    assert cm.phase_labels(names, times, mibs, gap_s=10.0, close_mib=50.0)[3] == (
        "weights + KV cache + ready: 600–621 MiB"
    )
    # Close in time but a step in memory: each its own label.
    assert cm.phase_labels(names, times, mibs, gap_s=10.0, close_mib=10.0) == [
        "",
        "weights: 600 MiB",
        "",
        "KV cache + ready: 620–621 MiB",
        "",
    ]


def test_cell_names_put_no_markup_in_charts(tmp_path):
    names = ["<b>bold</b> cell", "cell {x} 100%", "<a href='x'>c</a>"]
    doc = _doc(tmp_path, names=names)
    colors = charts.lane_colors(names)
    figures = cm.matrix_figures(mf.matrix_frame(doc), mf.memory_frame(doc), colors)
    assert [k for k, _, _ in figures][:2] == ["memory", "startup"]
    assert [wide for _, _, wide in figures] == [True] + [False] * (len(figures) - 1)
    for _, fig, _ in figures:
        spec = fig.to_json()
        assert "<b>bold" not in spec and "<a href" not in spec
        for trace in fig.data:  # names travel as data, never inside a hover template
            assert not any(n in (trace.hovertemplate or "") for n in ("bold", "100%", "href"))
    # Colours still by the lane's own name.
    bars = figures[2][1]
    assert [t.marker.color for t in bars.data] == [colors[n] for n in names[:2]]


def test_empty_inputs_say_so():
    colors: dict[str, str] = {}
    empty = pd.DataFrame()
    for fig in (
        cm.metric_bars(empty, "out_tok_per_s", colors),
        cm.startup_memory(empty, colors),
        cm.memory_phases(pd.DataFrame(columns=mf.MEMORY_COLUMNS), colors),
    ):
        assert not fig.data
        assert fig.layout.annotations[0].text in (cm.NO_CELLS, "No memory reading of any cell")


def test_rate_bars_go_by_rate():
    frame = mf.matrix_frame(rate_matrix_doc())
    fig = cm.metric_bars(frame, "out_tok_per_s", charts.lane_colors(["plain endpoint", "cell"]))
    assert fig.layout.xaxis.title.text == "Request rate (req/s)"
    assert list(fig.layout.xaxis.categoryarray) == ["2 req/s", "8 req/s", "all at once"]
    assert fig.data[0].marker.color == charts.PALETTE[1]  # the second lane's colour
