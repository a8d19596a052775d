"""The Run page's matrix (lib/app/matrix_inputs.py) and a started engine's lane tile.

Lanes come either from endpoints or from the matrix: the sandbox's variants and those the
page's endpoints name (an Ollama's tags, a vLLM model's siblings) crossed with settings,
one cell each. The variants are the sandbox's own (`sandbox.recipes.variants`) where a
test says so; elsewhere a stand-in list, so the page does not depend on what this machine
has installed. A matrix is started for real with the Ollama stand-in
(tests/scripted/ollama_standin.py: allowed through the operator's list, or as `ollama`
first on the PATH with a scripted Ollama as the page's endpoint), and with the sandbox's
llama.cpp when this machine has it (otherwise the page's reason is checked).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

import sandbox.recipes
from lib import store
from lib.app import matrix_inputs
from lib.app.lane_tiles import engine_state
from lib.core.recipes import LLAMA_CPP, OLLAMA, SANDBOX, VLLM, EngineRecipe
from lib.core.records import ModelInfo
from lib.endpoints import Endpoint, EndpointStatus
from lib.launch.executables import ALLOW_LAUNCH_VAR, OPERATOR_VAR
from lib.load import jobs
from tests.app.test_app_run import _app, _plain, _status, _wait
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, end_dashboard_runs
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
        end_dashboard_runs(db)


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
    monkeypatch.setattr(
        matrix_inputs, "jobs", SimpleNamespace(active_runs=lambda local_only=False: active)
    )
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
    # Seconds since its start, by the page's clock: 12 or more however slow the machine
    # (the exact wording at a fixed clock is engine_state's own test below).
    (starting,) = [t for t in _plain(at.info) if t.startswith("starting engine…")]
    seconds = re.fullmatch(r"starting engine… (\d+) s", starting)
    assert seconds and int(seconds.group(1)) >= 12, starting
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


# --- variants the page's endpoints name ------------------------------------------------

TAG = "ollama · qwen2.5:7b-instruct-q4_K_M (Q4_K_M)"
OTHER_TAG = "ollama · llama3.2:latest (Q8_0)"
NO_VLLM = "5 vLLM models need the `vllm` command on the PATH"  # AWQ served + 4 siblings


def path_without(*commands: str) -> str:
    """This machine's PATH without the folders that hold any of `commands`."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(
        f for f in folders if f and not any((Path(f) / c).exists() for c in commands)
    )


def standin_first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Ollama stand-in as `ollama`, first on the PATH (no `vllm` on it)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    standin = write_executable(folder)
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), path_without("ollama", "vllm")]))
    return standin


@pytest.fixture
def known_endpoints(matrix_env, scripted, monkeypatch):
    """The page's default endpoints: a scripted Ollama on 127.0.0.1 listing the stand-in's
    two tags, and a scripted vLLM serving VLLM_MODEL (an AWQ repo) with 8192 tokens."""
    ollama = scripted.ollama()
    vllm = scripted.openai(models=[VLLM_MODEL], root=VLLM_MODEL, max_model_len=8192)
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", ollama.url)
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", vllm.base_url)
    return matrix_env


def standin_pids(folder: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(folder) in " ".join(proc.info["cmdline"] or []):
                found.append(proc.info["pid"])
        except psutil.Error:
            continue
    return found


def test_an_ollama_on_this_machine_gives_its_tags_crossed_with_num_parallel(
    known_endpoints, tmp_path, monkeypatch
):
    """The picker offers the tags of the Ollama the page knows (`ollama` on the PATH), not
    the vLLM siblings (no `vllm`); num_parallel 1,4 makes two cells, which run to the end:
    each its own `ollama serve` (the stand-in), started, measured and stopped."""
    db = known_endpoints
    sandbox_home(tmp_path, monkeypatch, False)
    found, why = sandbox.recipes.variants(build=False)  # an empty sandbox home: none
    assert found == [] and why
    standin = standin_first_on_path(tmp_path, monkeypatch)
    at = matrix_app()
    variants = at.multiselect(key="run_matrix_variants")
    assert variants.options == [TAG, OTHER_TAG]
    assert variants.value == [TAG]
    captions = _plain(at.caption)
    assert f"Not offered: {NO_VLLM}." in captions, captions
    assert any(t.startswith(f"The sandbox's variants: {why}") for t in captions), captions
    assert not [m for m in at.multiselect if m.key in ("run_matrix_seqs", "run_matrix_threads")]
    assert cell_list(at) == ["ollama · qwen2.5:7b-instruct-q4_K_M"]

    at = small_workload(at)
    at.number_input(key="run_max_tokens").set_value(16)
    at.multiselect(key="run_matrix_num_parallel").set_value([1, 4]).run()
    assert not at.exception
    assert cell_list(at) == [
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 1",
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 4",
    ]
    assert "its own `ollama serve`" in " ".join(_plain(at.caption))
    assert not at.error, _plain(at.error)

    at.button(key="run_start").click().run()
    assert not at.exception, at.exception
    assert not at.error, _plain(at.error)
    run_id = at.session_state["active_run"]
    config = lanes_of(db, run_id)[0]["config"]
    recipes = [lane["recipe"] for lane in config["lanes"]]
    assert [(r["engine"], r["model"], r["variant"], r["executable"]) for r in recipes] == [
        ("ollama", OLLAMA_MODEL, "Q4_K_M", "")
    ] * 2
    assert [r["num_parallel"] for r in recipes] == [1, 4]
    assert [lane["name"] for lane in config["lanes"]] == [
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 1",
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 4",
    ]
    assert (config["requests"], config["sampling"]["max_tokens"]) == (2, 16)

    finish(at, db, 120)
    run, lanes, levels = lanes_of(db, run_id)
    assert run["status"] == "completed", (run, [lane["engine_process"] for lane in lanes])
    for lane, parallel in zip(lanes, (1, 4), strict=True):
        record = lane["engine_process"]
        assert record["state"] == "stopped", record
        assert record["leftover_pids"] == [], record
        assert record["exit_reason"] == "stopped by servescope"
        assert record["recipe"]["num_parallel"] == parallel
        assert record["argv"][0] == str(standin)  # `ollama` from the PATH: the stand-in
    assert [lv["status"] for lv in levels] == ["completed", "completed"]
    with store.opened(db) as conn:
        requests = store.get_requests(conn, run_id)
    assert sorted(r["lane_idx"] for r in requests) == [0, 0, 1, 1]
    assert all(r["error"] is None and r["output_tokens"] == 16 for r in requests), requests
    assert standin_pids(standin.parent) == []  # no engine left running
    at.run()
    assert not at.exception


def test_without_ollama_on_the_path_its_tags_are_left_out(known_endpoints, tmp_path, monkeypatch):
    sandbox_home(tmp_path, monkeypatch, False)
    _, why = sandbox.recipes.variants(build=False)
    monkeypatch.setenv("PATH", path_without("ollama", "vllm"))
    at = matrix_app()
    left_out = f"Not offered: 2 Ollama tags need the `ollama` command on the PATH; {NO_VLLM}."
    assert any(t.startswith(f"No engine variants to start: {why}") for t in _plain(at.info))
    assert left_out in _plain(at.caption), _plain(at.caption)
    assert not [m for m in at.multiselect if m.key == "run_matrix_variants"]
    assert "run_start" not in [b.key for b in at.button]

    # With the sandbox's variants: those only, and the same line on what was left out.
    (tmp_path / "b").mkdir()
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path / "b", monkeypatch, True)))
    at = matrix_app()
    options = at.multiselect(key="run_matrix_variants").options
    assert options == [
        "vllm · bf16",
        "vllm · f32",
        "llama.cpp · Q4_K_M",
        "llama.cpp · Q8_0",
        "llama.cpp · Q4_0",
    ]
    assert left_out in _plain(at.caption)
    assert not any(t.startswith("The sandbox's variants") for t in _plain(at.caption))


def test_sandbox_and_endpoint_variants_in_one_matrix(known_endpoints, tmp_path, monkeypatch):
    """The sandbox's variants first, then the Ollama's tags; each engine's settings input
    once one of its variants is chosen, side by side."""
    (tmp_path / "b").mkdir()
    use_variants(monkeypatch, sandbox_like(sandbox_home(tmp_path / "b", monkeypatch, True)))
    standin_first_on_path(tmp_path, monkeypatch)
    at = matrix_app()
    variants = at.multiselect(key="run_matrix_variants")
    assert variants.options[5:] == [TAG, OTHER_TAG]
    assert variants.value == ["llama.cpp · Q4_K_M"]
    variants.set_value(["llama.cpp · Q4_K_M", "vllm · bf16", TAG, OTHER_TAG]).run()
    at.multiselect(key="run_matrix_num_parallel").set_value([2, 8]).run()
    at.multiselect(key="run_matrix_seqs").set_value([4]).run()
    assert not at.exception
    assert at.multiselect(key="run_matrix_threads")  # all three settings inputs
    assert cell_list(at) == [
        "llama.cpp · Q4_K_M",
        "vllm · bf16",
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 2",
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 8",
        "ollama · llama3.2:latest · parallel 2",
        "ollama · llama3.2:latest · parallel 8",
    ]
    assert not at.error, _plain(at.error)


def _status_of(name: str, url: str, engine: str, models: list[ModelInfo], **kw) -> EndpointStatus:
    api = "ollama" if engine == "ollama" else "openai"
    endpoint = Endpoint(name=name, url=url, api=api, source=kw.pop("source", "saved"))
    reachable = kw.pop("reachable", True)
    return EndpointStatus(endpoint, reachable, engine, api, "1", models, None, url)


def test_endpoint_variants_without_streamlit(tmp_path, monkeypatch):
    """What the picker offers from endpoint statuses: only what this machine starts, by
    name, once; the rest counted by reason in one line."""
    folder = tmp_path / "bin"
    folder.mkdir()
    vllm = folder / "vllm"  # found on the PATH is all the picker asks of it
    vllm.write_text("#!/bin/sh\nexit 1\n")
    vllm.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), path_without("ollama", "vllm")]))
    tags = [ModelInfo(OLLAMA_MODEL, quantization="Q4_K_M"), ModelInfo("llama3.2:latest")]
    awq = ModelInfo(VLLM_MODEL, quantization="AWQ", context_length=4096, digest=VLLM_MODEL)
    other = ModelInfo("m", context_length=2048, digest="org/Model-AWQ")
    statuses = [
        _status_of("here", "http://127.0.0.1:11434", "ollama", tags),
        _status_of("gpu box", "http://10.0.0.5:11434", "ollama", [ModelInfo("mistral:7b")]),
        _status_of("down", "http://127.0.0.1:11500", "ollama", tags, reachable=False),
        _status_of("sandbox · vLLM", "http://127.0.0.1:8100/v1", "vllm", [other], source="sandbox"),
        _status_of("vllm", "http://127.0.0.1:8000/v1", "vllm", [awq]),
        _status_of("again", "http://localhost:8000/v1", "vllm", [awq]),  # the same names
        _status_of("second", "https://gpu.example.com/v1", "vllm", [other]),
        _status_of("llama", "http://127.0.0.1:8080/v1", "llama.cpp", [ModelInfo("x.gguf")]),
    ]
    offered, left_out = matrix_inputs.endpoint_variants(statuses)
    base = "Qwen/Qwen2.5-7B-Instruct"
    assert list(offered) == [
        f"vllm · {VLLM_MODEL}",
        f"vllm · {base}-GPTQ-Int4",
        f"vllm · {base}-GPTQ-Int8",
        f"vllm · {base}-FP8",
        f"vllm · {base} (unquantized)",
        "vllm · org/Model-AWQ",
        "vllm · org/Model-GPTQ-Int4",
        "vllm · org/Model-GPTQ-Int8",
        "vllm · org/Model-FP8",
        "vllm · org/Model (unquantized)",
    ]
    assert left_out == (
        "Not offered: 2 Ollama tags need the `ollama` command on the PATH; "
        "1 Ollama tag is listed by an Ollama on another machine."
    )
    # Two served AWQ models: their cells are named by model, the other variants by theirs.
    chosen = [offered[f"vllm · {VLLM_MODEL}"], offered["vllm · org/Model-AWQ"]]
    chosen.append(offered[f"vllm · {base}-FP8"])
    cells = matrix_inputs.matrix_cells(chosen, {"max_num_seqs": [8]})
    assert [c.label() for c in cells] == [
        f"vllm · {VLLM_MODEL} · len 4096",
        "vllm · org/Model-AWQ · len 2048",
        "vllm · FP8 · len 4096",
    ]
    assert [c.variant for c in cells] == ["AWQ", "AWQ", "FP8"]  # the record keeps its own
    assert [c.max_num_seqs for c in cells] == [8, 8, 8]
    assert matrix_inputs.left_out_line({}) is None
