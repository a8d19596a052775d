"""What the live view redraws and what it does not (issue 12, points 7-9), and missing
values in the Results tables, through AppTest and the helpers behind it.

AppTest cannot fire run_every: each at.run() is one page run of the live view, so the
status part and the charts part both run once per at.run().
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from lib import charts, store
from lib.app import live_view
from tests.analysis.test_frames import T0, _request, make_seed_run
from tests.app.test_app_results import _array_len

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "results.py")


def _open(run_id: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["run"] = run_id
    return at.run()


@pytest.fixture
def timeline_builds(monkeypatch) -> list[int]:
    """How many times the charts were built: the timeline is the first of them."""
    calls: list[int] = []
    real = charts.latency_timeline

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(charts, "latency_timeline", counted)
    return calls


def _timeline_points(at: AppTest, run_id: str) -> int:
    (chart,) = [c for c in at.get("plotly_chart") if c.key == f"results-timeline-{run_id}"]
    traces = json.loads(chart.proto.spec)["data"]
    return sum(_array_len(t["x"]) for t in traces)


def test_live_charts_are_built_once_per_data_version(db, timeline_builds):
    run_id = make_seed_run(db, status="running")
    at = _open(run_id)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 6
    assert len(timeline_builds) == 1
    points = _timeline_points(at, run_id)

    at.run()
    at.run()
    assert not at.exception
    assert len(timeline_builds) == 1  # nothing changed: the cached figures were sent again
    assert len(at.get("plotly_chart")) == 6  # ... every one of them, so none is removed
    assert _timeline_points(at, run_id) == points

    with store.opened(db) as conn:
        store.add_requests(conn, [_request(run_id, 0, 1, 50, T0 + 5.5, 1000.0, "x")])
    at.run()
    assert not at.exception
    assert len(timeline_builds) == 2  # a new request: built anew, with it
    assert _timeline_points(at, run_id) == points + 1


def test_finished_run_builds_its_charts_once(db, timeline_builds):
    run_id = make_seed_run(db)
    at = _open(run_id)
    at.run()
    _open(run_id)  # another session: the same figures
    assert len(timeline_builds) == 1
    assert len(at.get("plotly_chart")) == 6


def test_timer_ticks_rebuild_within_the_cpu_budget():
    view = live_view._RunView()
    assert live_view._charts_due(view, "v1", active=True, tick=True, now=0.0)  # never built
    view.charts_key, view.built_at, view.build_s = "v1", 100.0, 0.3
    assert not live_view._charts_due(view, "v1", active=True, tick=False, now=500.0)  # unchanged
    # New data on a tick 2 s after a build that took 0.3 s: 15 % of a core; wait.
    assert not live_view._charts_due(view, "v2", active=True, tick=True, now=102.0)
    assert live_view._charts_due(
        view, "v2", active=True, tick=True, now=100.0 + 0.3 / live_view.CHART_BUDGET
    )
    # The page's own run and a finished run always show the data as it is.
    assert live_view._charts_due(view, "v2", active=True, tick=False, now=100.1)
    assert live_view._charts_due(view, "v2", active=False, tick=True, now=100.1)


def _display_values(element) -> pd.DataFrame:
    """A styled table's cell texts (the Styler's), as sent beside the data."""
    data = element.proto.arrow_data.styler.display_values
    return pa.ipc.open_stream(io.BytesIO(data)).read_pandas()


def test_missing_values_read_as_a_dash_not_none(db):
    """A lane whose engine reported no version, context length or parameters and whose
    model no quantization: "–" in the tables, never a missing cell (the data grid draws
    those as a faded "None", which reads as a value) nor the text None or nan."""
    run_id = make_seed_run(db)
    with store.opened(db) as conn:
        conn.execute(
            "UPDATE lanes SET engine_info_json = ?, model_info_json = '{}'"
            " WHERE run_id = ? AND lane_idx = 1",
            (json.dumps({"kind": "vllm"}), run_id),
        )
    at = _open(run_id)
    assert not at.exception
    (lanes,) = [el for el in at.dataframe if "quantization" in el.value.columns]
    row = lanes.value.iloc[1]
    for col in ("version", "quantization", "parameter_size", "context_length", "digest"):
        assert row[col] == "–", (col, row[col])
    assert lanes.value.iloc[0]["context_length"] == "32,768"
    for el in at.dataframe:
        text = el.value.select_dtypes(include=["object", "string"])
        assert not text.isna().any().any(), el.value
        assert not text.isin(["None", "nan"]).any().any(), el.value
        if el.proto.arrow_data.styler.display_values:
            shown = _display_values(el).to_numpy().ravel().tolist()
            assert "None" not in shown and "nan" not in shown
