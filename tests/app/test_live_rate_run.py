"""The live view of open-loop runs, through AppTest: a rate run's and a capacity search's
levels are named by their load ("4 req/s", "all at once") in the lane tiles, the
progress lines and the level picker, never by their key as "c=2" (a rate level's key
only numbers it). Runs are started from the Run page against the scripted engines and
followed with repeated at.run(), as test_app_run does.

Also the helpers behind it: which levels each lane runs (progress_frames.level_plan)
and the Results page's table of checks.
"""

from __future__ import annotations

import re

from lib.analysis import frames
from lib.app import checks_section
from lib.load import jobs
from tests.app.test_app_run import _app, _plain, _status, _wait
from tests.app.test_run_load_modes import _workload, rates_form

KEY_LABEL = re.compile(r"\bc=\d")


def _texts(at) -> list[str]:
    """What the live panel says: progress bars, captions, markdown (tile headers, level
    lines), and the level picker's options."""
    out = [str(p.text) for p in at.get("progress")]
    out += _plain(at.caption) + _plain(at.markdown)
    out += [o for group in at.button_group for o in group.options]
    return out


def _follow(at, db) -> list[str]:
    """Rerun the page until the run ends; every text the panel showed on the way."""
    run_id = at.session_state["active_run"]
    seen: list[str] = []

    def ended() -> bool:
        seen.extend(_texts(at))
        return _status(db, run_id) not in jobs.ACTIVE

    _wait(ended, 90, at.run)
    at.run()  # the page once more, with the finished run
    assert not at.exception
    return seen + _texts(at)


def test_live_rate_run_reads_by_rate(env):
    db = env
    at = rates_form(_workload(_app()))
    at.run()
    at.button(key="run_start").click().run()
    assert not at.exception
    # Before any level ran, both are listed by their rate, waiting.
    bars = [str(p.text) for p in at.get("progress")]
    assert any(t.startswith("4 req/s: ") for t in bars), bars
    assert any(t.startswith("all at once: ") for t in bars), bars
    seen = _follow(at, db)
    assert not [t for t in seen if KEY_LABEL.search(t)], [t for t in seen if KEY_LABEL.search(t)]
    captions = _plain(at.caption)
    assert captions.count("4 req/s: 4/4 requests · completed") == 2, captions
    assert captions.count("all at once: 4/4 requests · completed") == 2, captions
    # Each tile's figures are of its latest level: all at once.
    heads = [t for t in _plain(at.markdown) if "**" in t and "badge[completed]" in t]
    assert len([t for t in heads if " · all at once" in t]) == 2, heads
    (picker,) = at.button_group
    assert picker.options == ["latest", "4 req/s", "all at once"]
    picker.set_value(1).run()  # the key of 4 req/s
    heads = [t for t in _plain(at.markdown) if "badge[completed]" in t]
    assert len([t for t in heads if " · 4 req/s" in t]) == 2, heads


def test_live_capacity_search_by_rate(env):
    db = env
    at = _workload(_app())
    at.radio(key="run_load_mode").set_value("capacity").run()
    at.radio(key="run_capacity_by").set_value("rate").run()
    at.number_input(key="run_capacity_start_rate").set_value(2.0)
    at.number_input(key="run_capacity_max_rate").set_value(8.0)
    at.number_input(key="run_slo_ttft").set_value(60_000.0)  # every load passes
    at.run()
    at.button(key="run_start").click().run()
    assert not at.exception
    seen = _follow(at, db)
    assert not [t for t in seen if KEY_LABEL.search(t)], [t for t in seen if KEY_LABEL.search(t)]
    captions = _plain(at.caption)
    # The loads the search picked, as they ran: known only from the stored levels.
    for rate in ("2 req/s", "4 req/s", "8 req/s"):
        assert captions.count(f"{rate}: 4/4 requests · completed") == 2, captions
    heads = [t for t in _plain(at.markdown) if "badge[completed]" in t]
    assert len([t for t in heads if " · 8 req/s" in t]) == 2, heads


def test_level_plan_by_mode():
    closed = {"requests": 5, "concurrency": [1, 4]}
    plan = frames.level_plan(closed, [], 2)
    assert [(r["concurrency"], r["load_label"], r["total"]) for r in plan[1]] == [
        (1, "c=1", 5),
        (4, "c=4", 5),
    ]
    rates = {"requests": 6, "concurrency": [1], "load": {"mode": "rate", "rates": [2.0, None]}}
    plan = frames.level_plan(rates, [], 1)
    assert [(r["concurrency"], r["load_label"]) for r in plan[0]] == [
        (1, "2 req/s"),
        (2, "all at once"),
    ]
    assert frames.plan_order(plan) == [1, 2]
    assert frames.pick_labels(plan) == {1: "2 req/s", 2: "all at once"}
    # A capacity search: only the levels stored so far, each lane its own loads.
    search = {"requests": 3, "capacity": {"mode": "rate"}, "load": {"mode": "rate"}}
    load = {"mode": "rate", "max_concurrency": None}
    levels = [
        {"lane_idx": 0, "concurrency": 1, "started_at": 1.0, "load": {**load, "rate": 2.0}},
        {"lane_idx": 1, "concurrency": 1, "started_at": 2.0, "load": {**load, "rate": 2.0}},
        {"lane_idx": 0, "concurrency": 2, "started_at": 3.0, "load": {**load, "rate": 4.0}},
        {"lane_idx": 1, "concurrency": 2, "started_at": 4.0, "load": {**load, "rate": 3.0}},
    ]
    plan = frames.level_plan(search, levels, 3)
    assert [r["load_label"] for r in plan[0]] == ["2 req/s", "4 req/s"]
    assert [r["load_label"] for r in plan[1]] == ["2 req/s", "3 req/s"]
    assert plan[2] == []
    assert frames.pick_labels(plan) is None  # key 2 is 4 req/s on one lane, 3 on the other
    # A search by users at once: at least two requests a user (lib/load/runner).
    users = {"requests": 3, "capacity": {"mode": "concurrency"}}
    plan = frames.level_plan(users, [{"lane_idx": 0, "concurrency": 4, "started_at": 1.0}], 1)
    assert plan[0] == [{"concurrency": 4, "load_label": "c=4", "total": 8}]


def test_progress_frame_with_a_plan_names_levels():
    plan = {0: [{"concurrency": 1, "load_label": "2 req/s", "total": 4}]}
    counts = {(0, 1): {"completed": 3, "failed": 1}}
    levels = [{"lane_idx": 0, "concurrency": 1, "status": "running", "load": None}]
    progress = frames.progress_frame(["A"], [1], 99, counts, levels, plan=plan)
    row = progress.iloc[0]
    assert (row["load_label"], row["total"], row["fraction"]) == ("2 req/s", 4, 1.0)
    closed = frames.progress_frame(["A"], [1], 4, counts, levels)
    assert closed.iloc[0]["load_label"] == "c=1"


def _doc(mode: str, label: str) -> dict:
    check = {"check": "schedule", "status": "pass", "detail": "kept to it."}
    level = {"concurrency": 1, "load_mode": mode, "load_label": label, "validation": [check]}
    return {"lanes": [{"name": "A", "levels": [level]}]}


def test_checks_table_names_rate_levels_by_load():
    frame = checks_section.checks_frame(_doc("rate", "2 req/s"))
    assert list(frame.columns) == ["Lane", "Load", "Check", "Status", "Detail"]
    assert frame["Load"].tolist() == ["2 req/s"]
    frame = checks_section.checks_frame(_doc("concurrency", "c=1"))
    assert list(frame.columns) == ["Lane", "Concurrency", "Check", "Status", "Detail"]
    assert frame["Concurrency"].tolist() == [1]
