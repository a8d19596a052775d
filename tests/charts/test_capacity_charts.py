"""lib/charts/capacity.py: the Pareto view, latency and goodput against load, from run
documents of rate and concurrency runs, with and without an SLO; and the level charts
of lib/charts/distributions.py reading a rate run by its rates, never its level keys.

`make_rate_run` writes an open-loop run through lib.store (the Results page's AppTest
reuses it): two lanes at 2 and 8 req/s and "all at once", 8 requests a level. The
first lane's TTFT climbs with the rate (100, 800, 2000 ms), the second stays low.
"""

from __future__ import annotations

import os

import pandas as pd
import plotly.graph_objects as go
import pytest

from lib import charts, store
from lib.analysis import frames, results
from lib.analysis.load_levels import judge
from lib.charts.capacity import goodput_vs_load, latency_vs_load, pareto
from lib.core.load_pattern import LoadPattern
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.core.slo import Slo
from tests.analysis.test_frames import KOREAN_ANSWER, LANE_NAMES, T0, _request, make_seed_run

RATES: tuple[float | None, ...] = (2.0, 8.0, None)
TTFT_BY_LANE = ((100.0, 800.0, 2000.0), (100.0, 150.0, 300.0))
PER_LEVEL = 8


def make_rate_run(
    db: str | os.PathLike[str],
    run_id: str = "20250610-100000-rate01",
    slo: Slo | None = None,
) -> str:
    """An open-loop run as the runner stores one: levels keyed 1, 2, 3, the rate in `load`."""
    pattern = LoadPattern(mode="rate", rates=list(RATES), seed=3)
    config = RunConfig(
        lanes=[
            LaneSpec("ollama", "http://127.0.0.1:11434", "qwen", name=LANE_NAMES[0]),
            LaneSpec("openai", "http://127.0.0.1:8000/v1", "awq", name=LANE_NAMES[1]),
        ],
        prompts=[Prompt.from_text("hello")],
        requests=PER_LEVEL,
        sampling=Sampling(max_tokens=64),
        label="rates",
        load=pattern,
        slo=slo,
    )
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), config.label, {}, status="completed")
        store.update_run(conn, run_id, started_at=T0)
        for lane, name in enumerate(LANE_NAMES):
            store.add_lane(conn, run_id, lane, name, config.lanes[lane].engine, "u", "m", {}, {})
        rows, start = [], T0
        for lane in (0, 1):
            for key, rate in enumerate(RATES, start=1):
                gap = 1.0 / rate if rate else 0.0
                store.set_level(
                    conn,
                    run_id,
                    lane,
                    key,
                    "completed",
                    start,
                    start + 6.0,
                    load=pattern.level_load(rate),
                )
                ttft = TTFT_BY_LANE[lane][key - 1]
                for idx in range(PER_LEVEL):
                    row = _request(run_id, lane, key, idx, start + idx * gap, 900.0 + ttft, "")
                    row |= {"ttft_ms": ttft, "output_text": KOREAN_ANSWER, "server": None}
                    rows.append(row)
                start += 10.0
        store.add_requests(conn, rows)
        store.update_run(conn, run_id, finished_at=start)
    return run_id


@pytest.fixture
def rate_doc(tmp_path):
    db = tmp_path / "store.db"
    return results.run_document(db, make_rate_run(db, slo=Slo(ttft_ms=500)))


@pytest.fixture
def seed_doc(tmp_path):
    db = tmp_path / "store.db"
    return results.run_document(db, make_seed_run(db))


def _lane_traces(fig: go.Figure, lane: str) -> list:
    return [t for t in fig.data if t.legendgroup == lane]


def _x_title(fig: go.Figure) -> str:
    return fig.layout.xaxis.title.text


def test_rate_document_carries_what_the_charts_read(rate_doc):
    lane = rate_doc["lanes"][0]
    assert [lv["load_label"] for lv in lane["levels"]] == ["2 req/s", "8 req/s", "all at once"]
    assert [lv["load"] for lv in lane["levels"]] == [2.0, 8.0, None]
    assert lane["capacity"]["value"] == 2.0
    assert rate_doc["lanes"][1]["capacity"]["reason"] == "ceiling"


def test_pareto_one_line_per_lane_labelled_by_load(rate_doc):
    fig = pareto(rate_doc)
    assert fig.layout.title.text == "Throughput vs per-user speed"
    assert "Speed of each user" in _x_title(fig)
    assert "(tok/s)" in fig.layout.yaxis.title.text
    colors = charts.lane_colors(LANE_NAMES)
    assert len(fig.data) == len(LANE_NAMES)
    for trace in fig.data:
        assert trace.line.color == colors[trace.name] == trace.marker.color
        assert list(trace.text) == ["2 req/s", "8 req/s", "all at once"]
        assert all(y > 0 for y in trace.y) and all(x > 0 for x in trace.x)


def test_latency_vs_load_rates_all_at_once_at_the_right_end(rate_doc):
    fig = latency_vs_load(rate_doc, "ttft")
    assert fig.layout.title.text == "TTFT vs request rate"
    assert _x_title(fig) == "Request rate (req/s)"
    assert fig.layout.yaxis.title.text == "TTFT (ms)"
    assert list(fig.layout.xaxis.ticktext) == ["2", "8", "all at once"]
    ticks = list(fig.layout.xaxis.tickvals)
    assert ticks[:2] == [2.0, 8.0] and ticks[2] > 8.0
    mine = _lane_traces(fig, LANE_NAMES[0])
    assert [t.name for t in mine] == [LANE_NAMES[0], f"{LANE_NAMES[0]} p90"]
    assert list(mine[0].y) == [100.0, 800.0, 2000.0]
    assert mine[1].line.dash == "dash"
    colors = charts.lane_colors(LANE_NAMES)
    assert {t.line.color for t in mine} == {colors[LANE_NAMES[0]]}
    # The document's SLO as a dashed line, named with its limit, kept in view.
    (line,) = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert line.y0 == line.y1 == 500
    assert any(a.text == "SLO 500 ms" for a in fig.layout.annotations)
    # Another target given, or none.
    fig = latency_vs_load(rate_doc, "e2el", slo=Slo(e2el_ms=1500))
    assert fig.layout.yaxis.title.text == "E2E latency (ms)"
    assert any(a.text == "SLO 1500 ms" for a in fig.layout.annotations)
    assert not latency_vs_load(rate_doc, "ttft", slo=Slo()).layout.shapes
    p99 = latency_vs_load(rate_doc, "tpot", upper="p99")
    assert p99.layout.yaxis.title.text == "TPOT (ms per token)"
    assert p99.data[1].name.endswith("p99")


def test_goodput_vs_load_marks_capacity(rate_doc):
    fig = goodput_vs_load(rate_doc)
    assert fig.layout.title.text == "Goodput vs request rate"
    assert fig.layout.yaxis.title.text == "Requests (req/s)"
    colors = charts.lane_colors(LANE_NAMES)
    for name in LANE_NAMES:
        mine = _lane_traces(fig, name)
        assert {t.line.color for t in mine if t.mode != "markers"} == {colors[name]}
    goodput, everything, star = _lane_traces(fig, LANE_NAMES[0])
    assert goodput.name == LANE_NAMES[0] and everything.line.dash == "dot"
    assert goodput.y[0] > 0 and goodput.y[1] == 0  # 800 ms misses the 500 ms target
    assert [c[0] for c in goodput.customdata] == ["100%", "0%", "0%"]
    assert star.marker.symbol == "star" and list(star.x) == [2.0]
    assert "2 req/s" in star.text[0]
    # One dotted vertical line per lane at its capacity: 2 and (at least) 8 req/s.
    assert sorted(s.x0 for s in fig.layout.shapes if s.line.dash == "dot") == [2.0, 8.0]


def test_concurrency_document_reads_users_at_once(seed_doc):
    doc = judge(seed_doc, Slo(ttft_ms=500))
    fig = latency_vs_load(doc, "ttft")
    assert fig.layout.title.text == "TTFT vs concurrency"
    assert _x_title(fig) == "Users at once (concurrency)"
    assert list(fig.layout.xaxis.ticktext) == ["1", "5"]
    assert list(pareto(doc).data[0].text) == ["c=1", "c=5"]
    good = goodput_vs_load(doc)
    assert _x_title(good) == "Users at once (concurrency)"
    stars = [t for t in good.data if t.mode == "markers"]
    assert [list(t.x) for t in stars] == [[1], [5]]  # Ollama queues at 5; vLLM holds


def test_document_without_slo_draws_no_goodput(seed_doc):
    assert "capacity" not in seed_doc["lanes"][0]
    fig = goodput_vs_load(seed_doc)
    assert [t.name for t in fig.data] == LANE_NAMES  # all requests only, named by lane
    assert not fig.layout.shapes
    assert not latency_vs_load(seed_doc, "ttft").layout.shapes
    # One lane judged, the other not: each drawn as far as it goes.
    doc = judge(seed_doc, Slo(ttft_ms=500))
    doc["lanes"][1] = {
        **doc["lanes"][1],
        "levels": [{k: v for k, v in lv.items() if k != "slo"} for lv in doc["lanes"][1]["levels"]],
    }
    doc["lanes"][1].pop("capacity")
    fig = goodput_vs_load(doc)
    assert len(_lane_traces(fig, LANE_NAMES[0])) == 3
    assert [t.name for t in _lane_traces(fig, LANE_NAMES[1])] == [LANE_NAMES[1]]


@pytest.mark.parametrize("build", [pareto, latency_vs_load, goodput_vs_load])
def test_empty_document_is_a_no_data_figure(build):
    for doc in ({"lanes": []}, {"lanes": [{"name": "a", "levels": []}]}):
        fig = build(doc)
        assert not fig.data
        assert any("No measured level" in a.text for a in fig.layout.annotations)
        assert fig.layout.title.text and fig.layout.yaxis.title.text


def _live_frames(db, run_id):
    """What the live view and chart_grid hand the level charts of a run."""
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        rows = store.get_requests(conn, run_id)
        levels = store.get_levels(conn, run_id)
    t0 = frames.run_start(run, rows)
    spans = frames.level_spans(levels, LANE_NAMES, t0)
    loads = frames.level_loads(spans)
    requests = frames.with_loads(frames.request_frame(rows, LANE_NAMES, t0), loads)
    return requests, frames.with_loads(frames.level_frame(rows, LANE_NAMES, [1]), loads), spans


def test_level_charts_of_a_rate_run_go_by_rate(tmp_path):
    db = tmp_path / "store.db"
    run_id = make_rate_run(db)
    requests, levels, spans = _live_frames(db, run_id)
    assert [s["load_label"] for s in spans[:3]] == ["2 req/s", "8 req/s", "all at once"]
    colors = charts.lane_colors(LANE_NAMES)
    box = charts.ttft_box(requests, colors, [1])
    assert box.layout.title.text == "Time to first token by request rate"
    assert box.layout.xaxis.title.text == "Request rate (req/s)"
    assert list(box.layout.xaxis.categoryarray) == ["2 req/s", "8 req/s", "all at once"]
    assert set(box.data[0].x) == {"2 req/s", "8 req/s", "all at once"}
    assert [t.marker.color for t in box.data] == [colors[n] for n in LANE_NAMES]
    tput = charts.throughput_vs_concurrency(levels, colors)
    assert tput.layout.title.text == "Output throughput vs request rate"
    assert tput.layout.xaxis.title.text == "Request rate (req/s)"
    assert list(tput.layout.xaxis.ticktext) == ["2", "8", "all at once"]
    assert list(tput.data[0].text) == ["2 req/s", "8 req/s", "all at once"]
    assert list(tput.data[0].x)[:2] == [2.0, 8.0] and tput.data[0].x[2] > 8.0


def test_level_charts_of_a_concurrency_run_unchanged(tmp_path):
    db = tmp_path / "store.db"
    run_id = make_seed_run(db)
    requests, levels, _ = _live_frames(db, run_id)
    assert set(levels["load_label"]) == {"c=1", "c=5"}
    colors = charts.lane_colors(LANE_NAMES)
    box = charts.e2el_box(requests, colors, [1, 5])
    assert box.layout.title.text == "E2E latency by concurrency"
    assert list(box.layout.xaxis.categoryarray) == ["1", "5"]
    tput = charts.throughput_vs_concurrency(levels, colors)
    assert tput.layout.xaxis.title.text == charts.CONCURRENCY_TITLE
    assert list(tput.data[0].x) == [1, 5]


def test_summary_frame_names_rate_levels_by_rate(rate_doc):
    summary = frames.summary_frame(rate_doc)
    assert list(summary.columns) == list(frames.LEVEL_COLUMNS)
    first = summary[summary["lane_idx"] == 0]
    assert first["load_label"].tolist() == ["2 req/s", "8 req/s", "all at once"]
    assert first["load_mode"].tolist() == ["rate"] * 3
    assert first["load"].tolist()[:2] == [2.0, 8.0] and pd.isna(first["load"].iloc[2])
    assert summary["concurrency"].isna().all()  # the keys only number the levels


def test_summary_frame_of_a_concurrency_run(seed_doc):
    summary = frames.summary_frame(seed_doc)
    assert summary["load_label"].tolist() == ["c=1", "c=5", "c=1", "c=5"]
    assert summary["load"].tolist() == [1.0, 5.0, 1.0, 5.0]
    assert summary["concurrency"].tolist() == [1, 5, 1, 5]
