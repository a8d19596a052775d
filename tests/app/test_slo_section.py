"""The Results page's "Latency targets and capacity" section through AppTest: a rate run
judged by its own SLO, targets changed without a run, a run without targets (behind a
toggle), state kept per run; and the summary table naming rate levels by rate."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import store
from lib.app import slo_section
from lib.core.slo import Slo
from tests.analysis.test_frames import LANE_NAMES, make_seed_run
from tests.charts.test_capacity_charts import make_rate_run

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "results.py")
WITHIN = "for 90% of requests"


def _open(run_id: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["run"] = run_id
    return at.run()


def _texts(elements) -> list[str]:
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _capacity(at: AppTest) -> dict[str, str]:
    """Each lane's capacity sentence, by lane name."""
    out = {}
    for text in _texts(at.markdown):
        for name in LANE_NAMES:
            if f"**{name}**: " in text:
                out[name] = text.split(f"**{name}**: ", 1)[1]
    return out


def _table(at: AppTest, columns: tuple[str, ...] = ("attainment_pct", "goodput_req_per_s")):
    """The first table with these columns (AppTest does not give a dataframe's key)."""
    (table,) = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    return table


def test_rate_run_with_slo(db):
    run_id = make_rate_run(db, slo=Slo(ttft_ms=500))
    at = _open(run_id)
    assert not at.exception
    assert any(slo_section.TITLE in t for t in _texts(at.markdown))
    assert not at.toggle  # the run had targets: shown at once
    assert at.number_input(key=f"slo-ttft_ms-{run_id}").value == 500
    assert at.number_input(key=f"slo-tpot_ms-{run_id}").value == 0  # off
    assert "off" in _texts(at.caption)
    assert at.slider(key=f"slo-target-{run_id}").value == 90
    assert _capacity(at) == {
        LANE_NAMES[0]: f"2 req/s within TTFT ≤ 500 ms, {WITHIN}",
        LANE_NAMES[1]: f"at least 8 req/s within TTFT ≤ 500 ms, {WITHIN}",
    }
    table = _table(at)
    first = table[table["lane"] == LANE_NAMES[0]]
    assert first["load_label"].tolist() == ["2 req/s", "8 req/s", "all at once"]
    assert first["passed"].tolist() == ["✓ met", "✗ missed", "✗ missed"]
    assert first["attainment_pct"].tolist() == [100.0, 0.0, 0.0]
    # The six run charts, then goodput, the Pareto view and TTFT against load.
    assert len(at.get("plotly_chart")) == 9
    # The summary table names the levels by rate, never by their keys.
    frame = _table(at, ("out_tok_per_s", "load_label"))
    assert frame["load_label"].tolist()[:3] == ["2 req/s", "8 req/s", "all at once"]
    assert any("Summary per lane and request rate" in t for t in _texts(at.markdown))


def test_changing_a_target_recomputes_without_a_run(db):
    run_id = make_rate_run(db, slo=Slo(ttft_ms=500))
    at = _open(run_id)
    with store.opened(db) as conn:
        before = store.get_run(conn, run_id)
    at.number_input(key=f"slo-ttft_ms-{run_id}").set_value(1000.0).run()
    assert not at.exception
    assert _capacity(at)[LANE_NAMES[0]] == f"at least 8 req/s within TTFT ≤ 1000 ms, {WITHIN}"
    at.number_input(key=f"slo-ttft_ms-{run_id}").set_value(50.0).run()
    assert _capacity(at)[LANE_NAMES[1]] == f"no load measured met TTFT ≤ 50 ms, {WITHIN}"
    # A TPOT limit as well, shown as a per-user speed too; a lower share.
    at.number_input(key=f"slo-ttft_ms-{run_id}").set_value(0.0)
    at.number_input(key=f"slo-tpot_ms-{run_id}").set_value(50.0)
    at.slider(key=f"slo-target-{run_id}").set_value(75).run()
    assert any("≥ 20 tok/s per user" in t for t in _texts(at.caption))
    assert _capacity(at)[LANE_NAMES[0]].endswith("(TPOT ≤ 50 ms), for 75% of requests")
    # Every limit off: nothing to judge.
    at.number_input(key=f"slo-tpot_ms-{run_id}").set_value(0.0).run()
    assert any("Set at least one latency limit" in t for t in _texts(at.info))
    with store.opened(db) as conn:
        assert store.get_run(conn, run_id) == before  # nothing written


def test_run_without_targets_opens_on_request(db):
    run_id = make_seed_run(db)
    at = _open(run_id)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 6  # closed: the page as it was
    at.toggle(key=f"slo-open-{run_id}").set_value(True).run()
    assert at.number_input(key=f"slo-ttft_ms-{run_id}").value == 1000  # the default
    assert _capacity(at) == {
        LANE_NAMES[0]: f"1 user at a time within TTFT ≤ 1000 ms, {WITHIN}",
        LANE_NAMES[1]: f"at least 5 users at once within TTFT ≤ 1000 ms, {WITHIN}",
    }
    assert _table(at)["load_label"].tolist() == ["c=1", "c=5", "c=1", "c=5"]
    assert len(at.get("plotly_chart")) == 9
    # Closed and opened again: the targets set are kept for this run.
    at.number_input(key=f"slo-ttft_ms-{run_id}").set_value(3000.0).run()
    at.toggle(key=f"slo-open-{run_id}").set_value(False).run()
    at.toggle(key=f"slo-open-{run_id}").set_value(True).run()
    assert at.number_input(key=f"slo-ttft_ms-{run_id}").value == 3000


def test_defaults():
    assert slo_section.defaults({"settings": {"slo": {"ttft_ms": 300, "target": 0.95}}}) == {
        "ttft_ms": 300.0,
        "tpot_ms": None,
        "e2el_ms": None,
        "target": 0.95,
    }
    slow = {"lanes": [{"levels": [{"ttft_ms": {"p50": 1400.0}}]}]}
    assert slo_section.defaults(slow)["ttft_ms"] == 3000.0  # twice the slowest, rounded up
    assert slo_section.defaults({"lanes": []})["ttft_ms"] == 1000.0
