"""The Run page's matrix (lib/app/matrix_inputs.py) and a started engine's lane tile.

Lanes come either from endpoints or from the matrix: the sandbox's variants crossed with
settings, one cell each. The variants are the sandbox's own (`sandbox.recipes.variants`)
where a test says so; elsewhere a stand-in list, so the page does not depend on what this
machine has installed. A matrix is started for real with the Ollama stand-in
(tests/scripted/ollama_standin.py, allowed through the operator's list), and with the
sandbox's llama.cpp when this machine has it (otherwise the page's reason is checked).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import streamlit as st
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

import sandbox.recipes
from lib import store
from lib.app import matrix_inputs
from lib.app.lane_tiles import engine_state
from lib.core.recipes import LLAMA_CPP, OLLAMA, SANDBOX, VLLM, EngineRecipe
from lib.launch.executables import ALLOW_LAUNCH_VAR, OPERATOR_VAR
from lib.load import jobs
from tests.app.test_app_run import _app, _plain, _status, _wait
from tests.conftest import OLLAMA_MODEL
from tests.scripted.ollama_standin import write_executable


@pytest.fixture
def matrix_env(db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The dashboard's store (`db`) on a loopback address, no operator settings; after
    the test, no run (and so no engine) is left running."""
    monkeypatch.delenv(ALLOW_LAUNCH_VAR, raising=False)
    monkeypatch.delenv(OPERATOR_VAR, raising=False)
    address = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    try:
        yield db
    finally:
        st_config.set_option("server.address", address)
        for run in jobs.active_runs(db):
            jobs.cancel(run["run_id"], db)
        deadline = time.monotonic() + 30
        while jobs.active_runs(db):
            if time.monotonic() > deadline:
                raise AssertionError("a run process did not end within 30 s of its cancel")
            time.sleep(0.2)
        st.cache_data.clear()
        st.cache_resource.clear()


def sandbox_like(folder: Path) -> list[EngineRecipe]:
    """Variants shaped as the sandbox gives them (vLLM bf16/f32, three GGUF files)."""
    hf = str(folder / "models" / "tiny-qwen2")
    out = [
        EngineRecipe(
            engine=VLLM,
            model=hf,
            executable=SANDBOX,
            variant=short,
            served_model=f"tiny-qwen2-to-{short}",
            dtype=dtype,
            max_model_len=1024,
        )
        for short, dtype in (("bf16", "bfloat16"), ("f32", "float32"))
    ]
    for quant in ("Q4_K_M", "Q8_0", "Q4_0"):
        out.append(
            EngineRecipe(
                engine=LLAMA_CPP,
                model=str(folder / "models" / f"tiny-{quant.lower()}.gguf"),
                executable=SANDBOX,
                variant=quant,
                served_model=f"tiny-{quant.lower()}",
                ctx_size=1024,
                threads=1,
            )
        )
    return out


def use_variants(monkeypatch: pytest.MonkeyPatch, recipes: list[EngineRecipe]) -> None:
    monkeypatch.setattr(sandbox.recipes, "variants", lambda *a, **k: (list(recipes), None))


def sandbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: bool) -> Path:
    """A sandbox home of the test's own; `installed`: its engines' Pythons exist (what
    lib/launch checks before it would start one)."""
    home = tmp_path / "sandbox"
    home.mkdir()
    monkeypatch.setenv("SERVESCOPE_SANDBOX_HOME", str(home))
    if installed:
        for venv in ("vllm", "llama"):
            python = home / "venvs" / venv / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("")
    return home


def matrix_app() -> AppTest:
    at = _app()
    at.radio(key="run_matrix_source").set_value(matrix_inputs.MATRIX).run()
    assert not at.exception
    return at


def small_workload(at: AppTest, requests: int = 2) -> AppTest:
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.text_area(key="prompt_text").set_value("Say hi")
    at.number_input(key="run_requests").set_value(requests)
    at.number_input(key="run_max_tokens").set_value(8)
    at.number_input(key="run_warmup").set_value(0)
    at.multiselect(key="run_concurrency").set_value([1])
    return at.run()


def cell_list(at: AppTest) -> list[str]:
    """The names in the page's numbered list of cells."""
    texts = _plain(at.markdown)
    listed = next(t for t in texts if t.startswith("1. "))
    return [line.split(". ", 1)[1] for line in listed.splitlines()]


def finish(at: AppTest, db: Path, timeout: float) -> str:
    run_id = at.session_state["active_run"]
    _wait(lambda: _status(db, run_id) not in jobs.ACTIVE, timeout)
    return run_id


def lanes_of(db: Path, run_id: str) -> tuple[dict, list[dict], list[dict]]:
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        return run, store.get_lanes(conn, run_id), store.get_levels(conn, run_id)


# --- the form -------------------------------------------------------------------------


def test_lanes_come_from_endpoints_or_from_the_matrix(matrix_env, tmp_path, monkeypatch):
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path, monkeypatch, True)))
    at = _app()
    assert not at.exception
    assert at.radio(key="run_matrix_source").value == matrix_inputs.ENDPOINTS
    assert at.radio(key="run_matrix_source").options == [
        "Endpoints that are running",
        "Engines servescope starts (matrix)",
    ]
    assert "lane_add" in [b.key for b in at.button]  # today's editor
    assert not [m for m in at.multiselect if m.key == "run_matrix_variants"]

    at.radio(key="run_matrix_source").set_value(matrix_inputs.MATRIX).run()
    assert not at.exception
    assert "lane_add" not in [b.key for b in at.button]
    variants = at.multiselect(key="run_matrix_variants")
    assert variants.options == [
        "vllm · bf16",
        "vllm · f32",
        "llama.cpp · Q4_K_M",
        "llama.cpp · Q8_0",
        "llama.cpp · Q4_0",
    ]
    assert variants.value == ["llama.cpp · Q4_K_M"]  # a fast cell to begin with
    assert cell_list(at) == ["llama.cpp · Q4_K_M"]
    captions = " ".join(_plain(at.caption))
    assert "One engine runs at a time" in captions and "stopped with all its children" in captions
    assert "llama-cpp-python serves one request at a time (no parallel slots)" in captions
    assert "run_start" in [b.key for b in at.button]

    at.radio(key="run_matrix_source").set_value(matrix_inputs.ENDPOINTS).run()
    assert "lane_add" in [b.key for b in at.button]


def test_cells_are_the_chosen_variants_crossed_with_the_settings(matrix_env, tmp_path, monkeypatch):
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path, monkeypatch, True)))
    at = matrix_app()
    at.multiselect(key="run_matrix_variants").set_value(
        ["llama.cpp · Q4_K_M", "llama.cpp · Q8_0", "vllm · bf16"]
    ).run()
    # Each engine's settings appear once one of its variants is chosen.
    at.multiselect(key="run_matrix_threads").set_value([1, 2]).run()
    at.multiselect(key="run_matrix_seqs").set_value([4, 16]).run()
    assert not at.exception
    assert at.multiselect(key="run_matrix_threads").options[0] == "1"
    assert "**6 cells**, in this order:" in [str(m.value) for m in at.markdown]
    assert cell_list(at) == [
        "llama.cpp · Q4_K_M · threads 1",
        "llama.cpp · Q4_K_M · threads 2",
        "llama.cpp · Q8_0 · threads 1",
        "llama.cpp · Q8_0 · threads 2",
        "vllm · bf16 · seqs 4",
        "vllm · bf16 · seqs 16",
    ]
    assert "takes minutes to start each cell" in " ".join(_plain(at.caption))
    assert not at.error

    # Only llama.cpp left: the vLLM setting goes with it; no threads keeps the variant's.
    at.multiselect(key="run_matrix_variants").set_value(["llama.cpp · Q4_0"]).run()
    assert not [m for m in at.multiselect if m.key == "run_matrix_seqs"]
    at.multiselect(key="run_matrix_threads").set_value([]).run()
    assert cell_list(at) == ["llama.cpp · Q4_0"]

    at.multiselect(key="run_matrix_variants").set_value([]).run()
    at.button(key="run_start").click().run()
    assert not at.exception
    assert "Pick at least one engine variant." in _plain(at.error)
    assert "active_run" not in at.session_state


def test_matrix_cells_and_lanes_without_streamlit(tmp_path):
    variants = sandbox_like(tmp_path)
    cells = matrix_inputs.matrix_cells(
        [variants[0], variants[2]], {"max_num_seqs": [2, 8], "threads": []}
    )
    assert [c.label() for c in cells] == [
        "vllm · bf16 · seqs 2",
        "vllm · bf16 · seqs 8",
        "llama.cpp · Q4_K_M",
    ]
    assert cells[2].threads == 1  # an empty list keeps the variant's own setting
    lanes = matrix_inputs.MatrixPlan(cells=cells).lanes()
    assert (lanes[0].engine, lanes[0].base_url, lanes[0].model) == (
        "openai",
        "",
        "tiny-qwen2-to-bf16",
    )
    assert all(lane.recipe is cell for lane, cell in zip(lanes, cells, strict=True))


def test_a_cell_this_machine_cannot_start_is_named_and_not_started(
    matrix_env, tmp_path, monkeypatch
):
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path, monkeypatch, False)))
    at = small_workload(matrix_app())
    refused = "llama.cpp · Q4_K_M: the sandbox's llama.cpp is not installed"
    assert any(t.startswith(refused) for t in _plain(at.error)), _plain(at.error)
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any(t.startswith(refused) for t in _plain(at.error))
    assert "active_run" not in at.session_state


def test_a_second_matrix_waits_for_the_one_running_its_engines(matrix_env, tmp_path, monkeypatch):
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path, monkeypatch, True)))
    other = {"lanes": [{"name": "llama.cpp · Q8_0", "base_url": "", "recipe": {"engine": "x"}}]}
    plain = {"lanes": [{"name": "vLLM · m", "base_url": "http://10.0.0.2:8000/v1"}]}
    active = [{"run_id": "plain-run", "config": plain}, {"run_id": "cells-run", "config": other}]
    # What the matrix inputs see of the active runs (the page's own re-attaching aside).
    monkeypatch.setattr(matrix_inputs, "jobs", SimpleNamespace(active_runs=lambda: active))
    at = small_workload(matrix_app())
    at.button(key="run_start").click().run()
    assert not at.exception
    errors = _plain(at.error)
    assert any("Run cells-run is still running its engines" in t for t in errors), errors
    assert not any("plain-run" in t for t in errors), errors  # it starts no engine
    assert "active_run" not in at.session_state


# --- when the page may not start engines, or has none ----------------------------------


def test_no_matrix_start_when_the_dashboard_listens_beyond_loopback(
    matrix_env, tmp_path, monkeypatch
):
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path, monkeypatch, True)))
    st_config.set_option("server.address", "0.0.0.0")
    at = matrix_app()
    warnings = _plain(at.warning)
    assert len(warnings) == 1, warnings
    assert "This dashboard listens on 0.0.0.0" in warnings[0]
    assert f"{ALLOW_LAUNCH_VAR}=1" in warnings[0]
    assert "run_start" not in [b.key for b in at.button]
    assert not [m for m in at.multiselect if m.key == "run_matrix_variants"]
    # The endpoints' editor is not affected: it starts nothing on this machine.
    at.radio(key="run_matrix_source").set_value(matrix_inputs.ENDPOINTS).run()
    assert "run_start" in [b.key for b in at.button]

    # The operator's explicit permission opens the matrix again.
    monkeypatch.setenv(ALLOW_LAUNCH_VAR, "1")
    at = matrix_app()
    assert not at.warning
    assert "run_start" in [b.key for b in at.button]
    assert cell_list(at) == ["llama.cpp · Q4_K_M"]


def test_no_variants_says_why_and_how_to_make_them(matrix_env, tmp_path, monkeypatch):
    sandbox_home(tmp_path, monkeypatch, False)  # empty: the real variants() finds nothing
    found, why = sandbox.recipes.variants(build=False)
    assert found == [] and why
    at = matrix_app()
    infos = _plain(at.info)
    assert any(t.startswith(f"No engine variants to start: {why}") for t in infos), infos
    assert any("python -m sandbox up" in t for t in infos)
    assert "run_start" not in [b.key for b in at.button]


# --- started for real ------------------------------------------------------------------


def test_a_matrix_started_from_the_page_runs_its_cells_one_at_a_time(
    matrix_env, tmp_path, monkeypatch
):
    """Two cells of the Ollama stand-in (allowed by the operator's list): each engine is
    started, measured and stopped, and the run's lanes carry their recipes."""
    db = matrix_env
    folder = tmp_path / "bin"
    folder.mkdir()
    standin = write_executable(folder)
    monkeypatch.setenv(OPERATOR_VAR, str(standin))
    recipes = [
        EngineRecipe(engine=OLLAMA, model=OLLAMA_MODEL, executable=str(standin), variant=v)
        for v in ("q4_K_M", "q8_0")  # the same weights, two cells with their own names
    ]
    use_variants(monkeypatch, recipes)
    at = small_workload(matrix_app())
    at.multiselect(key="run_matrix_variants").set_value(["ollama · q4_K_M", "ollama · q8_0"])
    at.run()
    assert cell_list(at) == ["ollama · q4_K_M", "ollama · q8_0"]

    # Lanes at the same time cannot hold a matrix: a message, no run, no traceback.
    at.radio(key="run_parallel").set_value("At the same time").run()
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any("A matrix runs one engine at a time" in t for t in _plain(at.error))
    assert "active_run" not in at.session_state

    at.radio(key="run_parallel").set_value("One after another").run()
    at.button(key="run_start").click().run()
    assert not at.exception, at.exception
    assert not at.error, _plain(at.error)
    run_id = at.session_state["active_run"]

    finish(at, db, 90)
    run, lanes, levels = lanes_of(db, run_id)
    assert run["status"] == "completed", run
    config = run["config"]
    assert config["lanes_parallel"] is False
    assert [lane["recipe"]["executable"] for lane in config["lanes"]] == [str(standin)] * 2
    assert [lane["name"] for lane in config["lanes"]] == ["ollama · q4_K_M", "ollama · q8_0"]
    for lane in lanes:
        record = lane["engine_process"]
        assert record["state"] == "stopped" and record["ready_s"] > 0, record
        assert record["exit_reason"] == "stopped by servescope" and not record["leftover_pids"]
        _, words = engine_state(record, active=False)
        assert words.startswith(f"engine ready in {record['ready_s']:.1f} s · peak ")
        assert words.endswith(" MiB · stopped")
    assert [lv["status"] for lv in levels] == ["completed", "completed"]
    # One engine at a time: the second started after the first was stopped.
    first, second = (lane["engine_process"] for lane in lanes)
    stopped = next(p["t"] for p in first["phases"] if p["phase"] == "stopped")
    assert second["started_at"] >= stopped
    at.run()
    assert not at.exception


def test_a_real_llama_cpp_cell_when_this_machine_has_the_sandbox(matrix_env):
    """With the sandbox's llama.cpp and model made (`python -m sandbox up`), one real cell
    is started, measured and stopped; without them the page says why and starts nothing."""
    db = matrix_env
    found, why = matrix_inputs.sandbox_variants()  # the real sandbox home
    llama = [r for r in found if r.engine == LLAMA_CPP]
    at = matrix_app()
    if not found:
        assert any(t.startswith(f"No engine variants to start: {why}") for t in _plain(at.info))
        assert "run_start" not in [b.key for b in at.button]
        return
    names = [matrix_inputs.variant_name(r) for r in found]
    assert at.multiselect(key="run_matrix_variants").options == names
    if not llama or matrix_inputs.cell_problems(llama[:1]):
        return  # vLLM only (minutes a cell), or its llama.cpp not startable: listed above
    name = matrix_inputs.variant_name(llama[0])
    at = small_workload(at)
    at.multiselect(key="run_matrix_variants").set_value([name]).run()
    assert cell_list(at) == [name]
    at.button(key="run_start").click().run()
    assert not at.exception and not at.error, _plain(at.error)
    run_id = finish(at, db, 240)
    run, lanes, levels = lanes_of(db, run_id)
    record = lanes[0]["engine_process"]
    assert run["status"] == "completed", (run, record and record.get("log_tail"))
    assert run["config"]["lanes"][0]["recipe"]["executable"] == SANDBOX
    assert record["state"] == "stopped" and record["ready_s"] > 0
    assert record["peak_memory_mib"] > 0 and not record["leftover_pids"]
    assert [lv["status"] for lv in levels] == ["completed"]


# --- the lane tile of a started engine -------------------------------------------------


def _tiles(db: str, run_id: str, active: bool) -> None:
    import pandas as pd

    from lib import store
    from lib.app.lane_tiles import lane_tiles

    with store.opened(db) as conn:
        lanes = store.get_lanes(conn, run_id)
    kpis = [
        {
            "lane": lane["name"],
            "lane_idx": lane["lane_idx"],
            "concurrency": None,
            "ttft_p50_ms": None,
            "tok_per_s_p50": None,
            "out_tok_per_s": None,
            "completed": 0,
            "failed": 0,
        }
        for lane in lanes
    ]
    progress = pd.DataFrame({"lane_idx": [], "status": []})
    processes = {lane["lane_idx"]: lane["engine_process"] for lane in lanes}
    lane_tiles([k["lane"] for k in kpis], kpis, progress, active, processes=processes)


def test_lane_tiles_show_each_engine_state(db):
    now = time.time()
    records = [
        {"state": "starting", "started_at": now - 12.2, "ready_s": None},
        {"state": "running", "started_at": now - 30, "ready_s": 1.72, "peak_memory_mib": 699},
        {
            "state": "failed",
            "started_at": now - 5,
            "ready_s": None,
            "error": "the engine exited during start-up (exit code 1)",
            "log_tail": ["loading model", "error: failed to load model *tiny*.gguf"],
        },
        {"state": "stopped", "ready_s": 0.8, "peak_memory_mib": 1234, "leftover_pids": [4242]},
    ]
    with store.opened(db) as conn:
        store.create_run(conn, "tiles", {"lanes": []}, status="running")
        for idx, record in enumerate([*records, None]):
            store.add_lane(conn, "tiles", idx, f"cell {idx}", "openai", "", "m", {}, {})
            if record is not None:
                store.set_lane_process(conn, "tiles", idx, record)
        conn.commit()
    at = AppTest.from_function(_tiles, args=(str(db), "tiles", True), default_timeout=30).run()
    assert not at.exception
    assert [t for t in _plain(at.info) if t.startswith("starting engine…")] == [
        "starting engine… 12 s"
    ]
    captions = _plain(at.caption)
    assert "engine ready in 1.7 s · peak 699 MiB" in captions
    markdown = _plain(at.markdown)
    assert ":red[**engine failed: the engine exited during start-up (exit code 1)**]" in markdown
    # The engine's own words stay text: shown in a code block, never as markdown.
    assert [c.value for c in at.code] == ["loading model\nerror: failed to load model *tiny*.gguf"]
    assert (
        ":orange[**engine ready in 0.8 s · peak 1,234 MiB · stopped · left running: pids 4242**]"
        in markdown
    )

    # Once the run has ended, a start that never finished says so (no clock running on).
    at = AppTest.from_function(_tiles, args=(str(db), "tiles", False), default_timeout=30).run()
    assert "engine was still starting when the run ended" in _plain(at.caption)
    assert not [t for t in _plain(at.info) if t.startswith("starting engine")]


def test_engine_state_words():
    assert engine_state(None, True) is None  # a plain endpoint
    assert engine_state({"state": "starting", "started_at": 100.0}, True, now=112.4) == (
        "starting",
        "starting engine… 12 s",
    )
    ready = {"state": "running", "ready_s": 1.7, "peak_memory_mib": 699}
    assert engine_state(ready, True) == ("running", "engine ready in 1.7 s · peak 699 MiB")
    failed = {"state": "failed", "error": None, "exit_reason": "exited by itself"}
    assert engine_state(failed, False) == ("failed", "engine failed: exited by itself")
    refused = {"state": "failed", "error": "'x' is not on the PATH of this machine"}
    assert (
        engine_state(refused, False)[1] == "engine failed: 'x' is not on the PATH of this machine"
    )
