"""lib/analysis/history.py: who started a run and where, and the History filters over
person, engine, model and label (pure functions over run dicts, then over a real store)."""

from __future__ import annotations

from typing import Any

from lib import store
from lib.analysis import history
from lib.core.records import LaneSpec, Prompt, RunConfig


def run(
    run_id: str,
    by: str | None,
    lanes: list[tuple[str, str]],  # (engine kind, model)
    label: str = "",
    host: str | None = "gpu-1",
) -> dict[str, Any]:
    """A run as history.load_runs gives it: stored lanes carry the kind the endpoint said."""
    return {
        "run_id": run_id,
        "label": label,
        "status": "completed",
        "created_at": 1_700_000_000.0,
        "started_by": by,
        "host": host,
        "config": {},
        "lanes": [
            {
                "lane_idx": i,
                "name": f"{kind}:{model}",
                "engine": "ollama" if kind == "ollama" else "openai",
                "model": model,
                "engine_info": {"kind": kind},
            }
            for i, (kind, model) in enumerate(lanes)
        ],
    }


RUNS = [
    run("r1", "alice", [("vllm", "Qwen-7B-AWQ")], label="AWQ sweep"),
    run("r2", "bob", [("ollama", "qwen2.5:7b")], label="Q4 on the laptop", host="laptop"),
    run("r3", "alice", [("ollama", "qwen2.5:7b")], label="ollama baseline"),
    run("r4", "Carol", [("vllm", "Qwen-7B-AWQ"), ("llama.cpp", "qwen-q8.gguf")], label="awq vs q8"),
    run("r5", None, [("vllm", "Qwen-7B-AWQ")], label="old run", host=None),  # before migration 8
]


def ids(runs: list) -> list[str]:
    return [r["run_id"] for r in runs]


def test_filter_options_list_each_value_once_sorted():
    options = history.filter_options(RUNS)
    assert options.people == ["alice", "bob", "Carol"]  # case ignored; the old run adds none
    assert options.engines == ["llama.cpp", "ollama", "vllm"]
    assert options.models == ["Qwen-7B-AWQ", "qwen-q8.gguf", "qwen2.5:7b"]
    assert history.filter_options([]) == history.FilterOptions([], [], [])


def test_no_filter_keeps_every_run_in_order():
    assert ids(history.filter_runs(RUNS)) == ["r1", "r2", "r3", "r4", "r5"]
    assert not history.is_filtered((), (), (), "  ")


def test_each_filter_alone():
    assert ids(history.filter_runs(RUNS, people=["alice"])) == ["r1", "r3"]
    assert ids(history.filter_runs(RUNS, people=["bob", "Carol"])) == ["r2", "r4"]
    # A run with any lane of a chosen engine or model is kept.
    assert ids(history.filter_runs(RUNS, engines=["llama.cpp"])) == ["r4"]
    assert ids(history.filter_runs(RUNS, engines=["vllm"])) == ["r1", "r4", "r5"]
    assert ids(history.filter_runs(RUNS, models=["qwen2.5:7b"])) == ["r2", "r3"]
    # Label: contains, case-insensitive, spaces around the text ignored.
    assert ids(history.filter_runs(RUNS, label=" AWQ ")) == ["r1", "r4"]
    assert ids(history.filter_runs(RUNS, label="laptop")) == ["r2"]
    assert history.is_filtered(label="x") and history.is_filtered(people=["bob"])


def test_filters_combine_with_and():
    assert ids(history.filter_runs(RUNS, people=["alice"], engines=["ollama"])) == ["r3"]
    assert ids(history.filter_runs(RUNS, engines=["vllm"], label="awq")) == ["r1", "r4"]
    both = history.filter_runs(RUNS, ["alice", "Carol"], ["vllm"], ["Qwen-7B-AWQ"], "vs")
    assert ids(both) == ["r4"]
    assert history.filter_runs(RUNS, people=["bob"], engines=["vllm"]) == []


def test_engines_of_a_run_not_yet_started_come_from_its_config():
    config = RunConfig(
        lanes=[
            LaneSpec(engine="openai", base_url="http://h:8000/v1", model="m"),
            LaneSpec(engine="ollama", base_url="http://h:11434", model="n"),
        ],
        prompts=[Prompt.from_text("x")],
    ).to_dict()
    pending = {"run_id": "p", "started_by": "dave", "config": config, "lanes": []}
    assert history.run_engines(pending) == ["openai", "ollama"]
    assert history.run_models(pending) == ["m", "n"]
    assert ids(history.filter_runs([pending], engines=["openai"], models=["n"])) == ["p"]


def test_who_where():
    assert history.who_where({"started_by": "alice", "host": "gpu-1"}) == "by alice on gpu-1"
    assert history.who_where({"started_by": "alice", "host": None}) == "by alice"
    assert history.who_where({"started_by": "", "host": "gpu-1"}) == "on gpu-1"
    assert history.who_where({"run_id": "old"}) == ""


def test_history_frame_says_who_and_where():
    frame = history.history_frame(RUNS, {}).set_index("run_id")
    assert (frame.at["r2", "started_by"], frame.at["r2", "host"]) == ("bob", "laptop")
    assert (frame.at["r5", "started_by"], frame.at["r5", "host"]) == ("", "")  # an old run
    shown = list(history.SHOWN_COLUMNS)
    assert shown[shown.index("status") + 1 : shown.index("status") + 3] == ["started_by", "host"]


def test_load_runs_then_filter_on_each_backend(any_db):
    """Who and where are read back from SQLite and PostgreSQL alike, and filter there."""
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url="http://h:8000/v1", model="Qwen-7B-AWQ")],
        prompts=[Prompt.from_text("x")],
    ).to_dict()
    with store.opened(any_db) as conn:
        for run_id, who, host, kind in (("a", "alice", "gpu-1", "vllm"), ("b", "bob", "gpu-2", "")):
            store.create_run(conn, run_id, config, label=run_id, started_by=who, host=host)
            info = {"kind": kind} if kind else {}
            store.add_lane(
                conn, run_id, 0, "l", "openai", "http://h:8000/v1", "Qwen-7B-AWQ", info, {}
            )
    runs = history.load_runs(any_db)
    assert {(r["run_id"], r["started_by"], r["host"]) for r in runs} == {
        ("a", "alice", "gpu-1"),
        ("b", "bob", "gpu-2"),
    }
    assert history.filter_options(runs).engines == ["openai", "vllm"]
    assert ids(history.filter_runs(runs, people=["bob"])) == ["b"]
    assert ids(history.filter_runs(runs, engines=["vllm"])) == ["a"]
