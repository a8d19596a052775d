"""lib/charts/: every figure titled, axes with units, one colour per lane everywhere,
bounded point counts, and the seed finding visible in the data each figure carries."""

from __future__ import annotations

import itertools

import pandas as pd
import plotly.graph_objects as go
import pytest

from lib import charts, store
from lib.analysis import frames, results
from tests.analysis.test_frames import LANE_NAMES, make_seed_run


@pytest.fixture
def seed(tmp_path):
    db = tmp_path / "store.db"
    run_id = make_seed_run(db)
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        rows = store.get_requests(conn, run_id)
        levels = store.get_levels(conn, run_id)
    t0 = frames.run_start(run, rows)
    return {
        "requests": frames.request_frame(rows, LANE_NAMES, t0),
        "levels": frames.level_frame(rows, LANE_NAMES, [1, 5]),
        "spans": frames.level_spans(levels, LANE_NAMES, t0),
        "colors": charts.lane_colors(LANE_NAMES),
        "doc": results.run_document(db, run_id),
    }


def _all_figures(seed) -> dict[str, go.Figure]:
    req, lv, colors = seed["requests"], seed["levels"], seed["colors"]
    return {
        "timeline": charts.latency_timeline(req, colors, seed["spans"], "run-1"),
        "e2el": charts.e2el_box(req, colors, [1, 5], "run-1"),
        "ttft": charts.ttft_box(req, colors, [1, 5], "run-1"),
        "toks": charts.tokens_per_s_box(req, colors, [1, 5], "run-1"),
        "tpot": charts.tpot_box(req, colors, [1, 5], "run-1"),
        "throughput": charts.throughput_vs_concurrency(lv, colors, "run-1"),
    }


def test_lane_colors_fixed_palette_by_order():
    colors = charts.lane_colors(["b", "a", "c"])
    assert list(colors.values()) == list(charts.PALETTE[:3])
    assert charts.lane_colors(["b", "a"]) == {"b": "#0072B2", "a": "#E69F00"}
    many = charts.lane_colors([f"lane {i}" for i in range(10)])
    assert many["lane 8"] == many["lane 0"]  # repeats only past the palette
    assert len(set(charts.PALETTE)) == len(charts.PALETTE)
    # Text swatches use the Streamlit colour names that config.toml maps to the same hex.
    assert [charts.lane_color_name(i) for i in range(3)] == ["blue", "orange", "green"]


def test_streamlit_theme_colors_match_palette():
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).parents[2] / ".streamlit" / "config.toml").read_text())
    theme = config["theme"]
    for i, name in enumerate(charts.STREAMLIT_COLOR_NAMES):
        if name is not None:
            assert theme[f"{name}Color"].upper() == charts.PALETTE[i].upper()
            assert theme[f"{name}TextColor"].upper() == charts.PALETTE[i].upper()


def test_every_figure_titled_with_units_and_legend(seed):
    for name, fig in _all_figures(seed).items():
        layout = fig.layout
        assert layout.title.text, name
        assert layout.template.layout.paper_bgcolor in ("white", "#fff", "#ffffff"), name
        assert layout.showlegend is True, name
        assert layout.uirevision == "run-1", name
        x_title, y_title = layout.xaxis.title.text, layout.yaxis.title.text
        assert "(" in x_title and x_title.endswith(")"), (name, x_title)
        assert "(" in y_title and y_title.endswith(")"), (name, y_title)
        assert layout.height == charts.HEIGHT
        # Every trace is named after its lane, so the legend says which lane is which.
        assert {t.legendgroup for t in fig.data} == set(LANE_NAMES), name
    figs = _all_figures(seed)
    assert figs["timeline"].layout.yaxis.title.text == "E2E latency (ms)"
    assert figs["throughput"].layout.yaxis.title.text == "Output throughput (tok/s)"
    assert figs["e2el"].layout.xaxis.title.text == "Concurrency (requests in flight)"
    assert figs["timeline"].layout.xaxis.title.text == "Time since run start (s)"


def test_one_colour_per_lane_across_all_figures(seed):
    seen: dict[str, set[str]] = {}
    for fig in _all_figures(seed).values():
        for lane, used in charts.figure_colors(fig).items():
            seen.setdefault(lane, set()).update(used)
    assert seen == {LANE_NAMES[0]: {"#0072B2"}, LANE_NAMES[1]: {"#E69F00"}}


def test_timeline_shows_queue_vs_batch(seed):
    fig = charts.latency_timeline(seed["requests"], seed["colors"], seed["spans"])
    by_lane = {t.name: t for t in fig.data}
    ollama, vllm = by_lane[LANE_NAMES[0]], by_lane[LANE_NAMES[1]]
    # At c=5 (sent together, x = 10 s for Ollama, 30 s for vLLM) Ollama's column is
    # 1..5 s tall, vLLM's is flat at 1 s.
    ollama_c5 = sorted(y for x, y in zip(ollama.x, ollama.y, strict=True) if x == 10.0)
    vllm_c5 = sorted(y for x, y in zip(vllm.x, vllm.y, strict=True) if x == 30.0)
    assert ollama_c5 == [1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    assert vllm_c5 == [1000.0] * 5
    # One shaded band per lane and level, labelled with its concurrency.
    assert [s.x0 for s in fig.layout.shapes] == [0.0, 10.0, 20.0, 30.0]
    assert [a.text for a in fig.layout.annotations] == ["c=1", "c=5", "c=1", "c=5"]


def test_timeline_marks_failed_requests(seed):
    req = seed["requests"].copy()
    req.loc[0, ["failed", "error", "e2el_ms"]] = [True, "timed out after 2 s", float("nan")]
    fig = charts.latency_timeline(req, seed["colors"])
    failed = [t for t in fig.data if t.name.endswith(": failed")]
    assert len(failed) == 1
    assert failed[0].marker.symbol == "x"
    assert failed[0].marker.color == seed["colors"][LANE_NAMES[0]]
    assert failed[0].legendgroup == LANE_NAMES[0]


def test_boxes_group_by_concurrency(seed):
    fig = charts.e2el_box(seed["requests"], seed["colors"], [1, 5])
    assert fig.layout.boxmode == "group"
    assert list(fig.layout.xaxis.categoryarray) == ["1", "5"]
    ollama = next(t for t in fig.data if t.name == LANE_NAMES[0])
    assert sorted(set(ollama.x)) == ["1", "5"]
    assert ollama.boxpoints == "all"  # few requests: each one drawn beside its box


def test_throughput_lines(seed):
    fig = charts.throughput_vs_concurrency(seed["levels"], seed["colors"])
    lines = {t.name: t for t in fig.data}
    assert set(lines) == set(LANE_NAMES)
    assert all(t.mode == "lines+markers" for t in fig.data)
    assert list(lines[LANE_NAMES[0]].y) == pytest.approx([50.0, 50.0])  # queue: flat
    assert list(lines[LANE_NAMES[1]].y) == pytest.approx([50.0, 250.0])  # batching: x5
    assert list(fig.layout.xaxis.tickvals) == [1, 5]


def test_throughput_log_axis_for_wide_ranges():
    levels = pd.DataFrame(
        {
            "lane": ["a"] * 4,
            "concurrency": [1, 4, 16, 64],
            "out_tok_per_s": [50.0, 180.0, 500.0, 900.0],
            "req_per_s": [1.0] * 4,
            "ttft_p50_ms": [100.0] * 4,
            "e2el_p50_ms": [1000.0] * 4,
        }
    )
    fig = charts.throughput_vs_concurrency(levels, charts.lane_colors(["a"]))
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext) == ["1", "4", "16", "64"]


def test_point_counts_are_bounded():
    n = 12_000
    frame = pd.DataFrame(
        {
            "lane": ["a", "b"] * (n // 2),
            "concurrency": [8] * n,
            "idx": range(n),
            "t_rel_s": [i / 100 for i in range(n)],
            "ttft_ms": [100.0] * n,
            "e2el_ms": [float(i) for i in range(n)],
            "elapsed_ms": [float(i) for i in range(n)],
            "tokens_per_s": [40.0] * n,
            "tpot_ms": [20.0] * n,
            "failed": [i % 1000 == 0 for i in range(n)],
            "error": [("boom" if i % 1000 == 0 else None) for i in range(n)],
        }
    )
    colors = charts.lane_colors(["a", "b"])
    timeline = charts.latency_timeline(frame, colors)
    points = sum(len(t.x) for t in timeline.data)
    assert points <= charts.MAX_POINTS
    assert sum(len(t.x) for t in timeline.data if t.name.endswith("failed")) == 12  # all kept
    assert "Showing" in timeline.layout.title.subtitle.text
    box = charts.e2el_box(frame, colors)
    assert sum(len(t.y) for t in box.data) <= charts.MAX_POINTS
    assert all(t.boxpoints == "outliers" for t in box.data)  # too many to draw each
    thinned = charts.downsample(frame, 100)
    assert len(thinned) <= 100 and thinned.index.is_monotonic_increasing


def test_empty_data_still_titled():
    empty = frames.request_frame([], [], None)
    colors = charts.lane_colors(["a"])
    for fig in (
        charts.latency_timeline(empty, colors),
        charts.e2el_box(empty, colors),
        charts.throughput_vs_concurrency(frames.level_frame([], []), colors),
    ):
        assert fig.layout.title.text
        assert fig.layout.yaxis.title.text.endswith(")")
        assert fig.layout.annotations[0].text.startswith("No ")
        assert len(fig.data) == 0


def test_timeline_of_lanes_in_turn_is_readable():
    """Three lanes one after another, each a long level and two short ones (issue 12):
    the x axis spans the whole run, every level is labelled in its lane's colour, and no
    two labels on one row overprint (a short level's label moves a row down)."""
    names = ["Ollama", "vLLM", "llama.cpp"]
    colors = charts.lane_colors(names)
    spans, rows, t = [], [], 0.0
    for li, name in enumerate(names):
        for c, seconds in ((1, 40.0), (4, 1.5), (16, 1.0)):
            spans.append(
                {"lane": name, "lane_idx": li, "concurrency": c, "start_s": t, "end_s": t + seconds}
            )
            for i in range(4):
                send = 1000.0 + t + i * seconds / 4
                rows.append(
                    {"lane_idx": li, "concurrency": c, "idx": i, "t_send": send,
                     "t_done": send + 0.2, "e2el_ms": 200.0, "ttft_ms": 50.0}
                )  # fmt: skip
            t += seconds
    requests = frames.request_frame(rows, names, 1000.0)
    fig = charts.latency_timeline(requests, colors, spans, "run-1")

    lo, hi = fig.layout.xaxis.range
    assert lo <= 0.0 and t <= hi <= t * 1.1  # the whole run, from its start
    assert fig.layout.yaxis.range[1] >= 200.0 * 1.2  # room above the dots for the labels
    labels = [a for a in fig.layout.annotations if a.text.startswith("c=")]
    assert [a.text for a in labels] == [f"c={s['concurrency']}" for s in spans]
    assert [a.font.color for a in labels] == [colors[s["lane"]] for s in spans]
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(b.x0, b.x1) for b in bands] == [(s["start_s"], s["end_s"]) for s in spans]
    # No overprinting: on each row, labels are further apart than a label's width.
    sec_per_px = (max(s["end_s"] for s in spans) - 0.0) / charts.PLOT_WIDTH_PX
    by_row: dict[float, list] = {}
    for a in labels:
        by_row.setdefault(a.yshift, []).append(a)
    assert len(by_row) > 1
    for row in by_row.values():
        row.sort(key=lambda a: a.x)
        for left, right in itertools.pairwise(row):
            width_s = len(left.text) * charts.LABEL_CHAR_PX * sec_per_px
            assert right.x - left.x >= width_s, (left.text, left.x, right.x)
