"""The Run page's load section: request rates and the capacity search, through AppTest.

A rate run and a capacity search are started from the page against the scripted engines
and read back from the store: what the page chose is what the runner ran.
"""

from __future__ import annotations

from lib.analysis import results
from lib.app.load_inputs import parse_rates
from lib.load import jobs
from tests.app.test_app_run import _app, _plain, _status, _wait


def _workload(at):
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.text_area(key="prompt_text").set_value("Say hello.")
    at.number_input(key="run_requests").set_value(4)
    at.number_input(key="run_max_tokens").set_value(8)
    at.number_input(key="run_warmup").set_value(0)
    return at.run()


def rates_form(at, rates: str = "4, inf"):
    """The Run page set to evenly spaced request rates (not yet rerun)."""
    at.radio(key="run_load_mode").set_value("rates").run()
    at.text_input(key="run_rates").set_value(rates)
    at.selectbox(key="run_arrival").set_value("constant")
    return at


def test_parse_rates():
    assert parse_rates("1, 2.5,inf") == ([1.0, 2.5, None], None)
    assert parse_rates("2,2") == ([2.0], None)
    assert (
        parse_rates("fast")[1] == "'fast' is not a request rate: use numbers like 1, 2.5, 4 or inf."
    )
    assert parse_rates("0")[1] == "Request rate 0 must be above 0 req/s (or inf)."
    assert parse_rates(" , ")[1] == "Give at least one request rate, e.g. 1, 2, 4."


def test_bad_rates_and_a_search_without_targets_are_one_line_errors(env):
    at = rates_form(_workload(_app()), "2, lots").run()
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any("'lots' is not a request rate" in t for t in _plain(at.error))
    at.radio(key="run_load_mode").set_value("capacity").run()
    at.number_input(key="run_slo_ttft").set_value(0.0).run()
    at.button(key="run_start").click().run()
    assert any("A capacity search needs a latency target" in t for t in _plain(at.error))
    assert "active_run" not in at.session_state


def _finish(at, db) -> str:
    run_id = at.session_state["active_run"]
    _wait(lambda: _status(db, run_id) not in jobs.ACTIVE, 60)
    return run_id


def test_rate_run_from_the_page(env):
    db = env
    at = rates_form(_workload(_app()))
    at.number_input(key="run_slo_ttft").set_value(5000.0)
    at.run()
    at.button(key="run_start").click().run()
    assert not at.exception
    document = results.run_document(db, _finish(at, db))
    load = document["settings"]["load"]
    assert load["mode"] == "rate" and load["rates"] == [4.0, None]
    assert load["arrival"] == "constant" and isinstance(load["seed"], int)
    lane = document["lanes"][0]
    assert [lv["load_label"] for lv in lane["levels"]] == ["4 req/s", "all at once"]
    assert lane["levels"][0]["rate"] == 4.0 and lane["levels"][1]["rate"] is None
    assert document["settings"]["slo"]["ttft_ms"] == 5000.0
    assert lane["capacity"]["mode"] == "rate"


def test_capacity_search_from_the_page(env):
    db = env
    at = _workload(_app())
    at.radio(key="run_load_mode").set_value("capacity").run()
    at.number_input(key="run_capacity_max").set_value(4)
    at.number_input(key="run_slo_ttft").set_value(60_000.0)  # every load passes
    at.run()
    at.button(key="run_start").click().run()
    assert not at.exception
    document = results.run_document(db, _finish(at, db))
    assert document["settings"]["capacity"]["mode"] == "concurrency"
    for lane in document["lanes"]:
        # Doubling from 1 to the ceiling of 4: every load met the target.
        assert [lv["concurrency"] for lv in lane["levels"]] == [1, 2, 4]
        assert lane["capacity"]["value"] == 4 and lane["capacity"]["reason"] == "ceiling"
        assert lane["capacity"]["summary"].startswith("at least 4 users at once within TTFT")
