"""The History page's "who ran what": By and Host columns, and the filters by person,
engine, model and label (AppTest over runs written through lib.store)."""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from lib import store
from lib.analysis import history
from tests.app.test_app_history import OLLAMA, VLLM, make_run, run_page

LLAMA = ("openai", "http://127.0.0.1:8080/v1", "qwen2.5-7b-q8_0.gguf")
FIGURES = {(0, 1): (100.0, 1000.0, 2), (0, 4): (150.0, 1000.0, 4)}


@pytest.fixture
def team(db):
    """Four runs of three people on three hosts, newest first: t4, t3, t2, t1."""
    now = time.time()
    seeds = [
        ("t1", "alice", "gpu-1", [VLLM], None, "AWQ sweep"),
        ("t2", "bob", "laptop", [OLLAMA], None, "Q4 on the laptop"),
        ("t3", "alice", "gpu-1", [OLLAMA], None, "ollama baseline"),
        ("t4", "carol", "gpu-2", [VLLM, LLAMA], ["vllm", "llama.cpp"], "awq vs q8"),
    ]
    for age, (run_id, who, host, lanes, kinds, label) in enumerate(reversed(seeds)):
        figures = {**FIGURES, **({(1, 1): (90.0, 900.0, 2)} if len(lanes) > 1 else {})}
        make_run(
            db,
            run_id,
            lanes,
            figures,
            label=label,
            created_at=now - 60 * age,
            started_by=who,
            host=host,
            kinds=kinds,
        )
    return db


def shown(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["run_id"])


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_table_says_who_and_where(team):
    with store.opened(team) as conn:  # a run stored before runs recorded who and where
        conn.execute("UPDATE runs SET started_by = NULL, host = NULL WHERE run_id = 't2'")
    at = run_page()
    assert not at.exception
    table = at.dataframe[0].value.set_index("run_id")
    assert (table.at["t4", "started_by"], table.at["t4", "host"]) == ("carol", "gpu-2")
    assert (table.at["t1", "started_by"], table.at["t1", "host"]) == ("alice", "gpu-1")
    assert (table.at["t2", "started_by"], table.at["t2", "host"]) == ("", "")  # blank
    order = list(at.dataframe[0].proto.column_order)
    assert order[order.index("status") + 1 : order.index("status") + 3] == ["started_by", "host"]
    # The filters offer every person, engine and model of the runs; no caption unfiltered.
    assert at.multiselect(key="history_filter_people").options == ["alice", "carol"]
    assert at.multiselect(key="history_filter_engines").options == ["llama.cpp", "ollama", "vllm"]
    assert at.multiselect(key="history_filter_models").options == [
        "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "qwen2.5-7b-q8_0.gguf",
        "qwen2.5:7b-instruct-q4_K_M",
    ]
    assert not any("runs" in c for c in captions(at))


def test_each_filter_then_all_together(team):
    at = run_page()
    at.multiselect(key="history_filter_people").set_value(["alice"]).run()
    assert not at.exception
    assert shown(at) == ["t3", "t1"]
    assert "2 of 4 runs" in captions(at)
    at.multiselect(key="history_filter_people").set_value([]).run()
    at.multiselect(key="history_filter_engines").set_value(["llama.cpp"]).run()
    assert shown(at) == ["t4"]
    at.multiselect(key="history_filter_engines").set_value([]).run()
    at.multiselect(key="history_filter_models").set_value(["qwen2.5:7b-instruct-q4_K_M"]).run()
    assert shown(at) == ["t3", "t2"]
    at.multiselect(key="history_filter_models").set_value([]).run()
    at.text_input(key="history_filter_label").input("AWQ").run()  # contains, any case
    assert shown(at) == ["t4", "t1"]
    assert "2 of 4 runs" in captions(at)
    # Together they narrow with AND: alice's vLLM runs whose label says "awq".
    at.multiselect(key="history_filter_people").set_value(["alice", "carol"]).run()
    at.multiselect(key="history_filter_engines").set_value(["vllm"]).run()
    at.multiselect(key="history_filter_models").set_value(["Qwen/Qwen2.5-7B-Instruct-AWQ"]).run()
    at.text_input(key="history_filter_label").input("sweep").run()
    assert not at.exception
    assert shown(at) == ["t1"]
    assert "1 of 4 runs" in captions(at)
    # The run picker offers the runs shown.
    assert at.multiselect(key="history_pick").options == ["AWQ sweep · completed · t1"]


def test_no_run_matches(team):
    at = run_page()
    at.multiselect(key="history_filter_people").set_value(["bob"]).run()
    at.multiselect(key="history_filter_engines").set_value(["vllm"]).run()
    assert not at.exception
    assert len(at.dataframe) == 0
    assert at.info[0].value == "No run matches these filters."
    assert "0 of 4 runs" in captions(at)
    assert at.multiselect(key="history_pick").options == []


def test_two_peoples_runs_overlay(team):
    """Pick alice's run, filter to bob's, pick his: both stay picked and overlay."""
    at = run_page()
    at.multiselect(key="history_filter_people").set_value(["alice"]).run()
    at.multiselect(key="history_pick").set_value(["t1"]).run()
    at.multiselect(key="history_filter_people").set_value(["bob"]).run()
    assert not at.exception
    assert shown(at) == ["t2"]
    pick = at.multiselect(key="history_pick")
    assert pick.value == ["t1"]  # hidden by the filter, still picked
    assert set(pick.options) == {"AWQ sweep · completed · t1", "Q4 on the laptop · completed · t2"}
    pick.set_value(["t1", "t2"]).run()
    assert not at.exception
    # Same figures on both: every difference is +0%, neither better nor worse (a blank
    # cell, not "None").
    diffs = at.dataframe[1].value
    assert set(diffs["text"].str[:3]) == {"+0%"} and set(diffs["better"]) == {""}
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    names = {trace["name"] for trace in json.loads(charts[0].proto.spec)["data"]}
    assert names == {
        "AWQ sweep · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ",
        "Q4 on the laptop · ollama:qwen2.5:7b-instruct-q4_K_M",
    }


def test_a_chosen_value_whose_runs_are_gone(team):
    """bob's only run deleted while his name is chosen: the filter forgets it."""
    at = run_page()
    at.multiselect(key="history_filter_people").set_value(["bob"]).run()
    assert shown(at) == ["t2"]
    history.delete_run("t2")
    at.run()
    assert not at.exception
    assert at.multiselect(key="history_filter_people").value == []
    assert at.multiselect(key="history_filter_people").options == ["alice", "carol"]
    assert shown(at) == ["t4", "t3", "t1"]
