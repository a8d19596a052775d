"""app.py and the Run page through AppTest, against scripted engines in this process.

Bad input must end in a message on the page, never a traceback; a real run is started
(a child process of lib.load.jobs) and followed with repeated at.run(), since AppTest cannot
fire run_every; a second run on a busy endpoint is refused; a fresh session re-attaches.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import store
from lib.load import worker_count
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL
from tests.scripted.ollama_server import model_entry
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
RUN_PAGE = str(ROOT / "app_pages" / "run.py")


def _wait(condition: Callable[[], bool], timeout: float, step: Callable[[], None] | None = None):
    """Poll a condition (rerunning the app between polls) until it holds or time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        if step is not None:
            step()
        time.sleep(0.2)


def _status(db: Path, run_id: str) -> str:
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
    return run["status"] if run else "missing"


def _plain(elements) -> list[str]:
    """Element texts with markdown escapes undone."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()


def _small_workload(at: AppTest) -> AppTest:
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.text_area(key="prompt_text").set_value("한국어로 짧게 인사해 주세요.")
    at.number_input(key="run_requests").set_value(4)
    at.number_input(key="run_max_tokens").set_value(16)
    at.number_input(key="run_warmup").set_value(0)
    at.multiselect(key="run_concurrency").set_value([1, 2])
    return at.run()


def test_app_frame_with_no_endpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    st.cache_data.clear()
    at = _app()
    assert not at.exception
    assert "Run a benchmark" in _plain(at.title)
    assert any("No engine endpoints are configured" in t for t in _plain(at.warning))
    assert any("No endpoints configured" in t for t in _plain(at.sidebar.caption))
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any("Lane 1: pick an endpoint" in t for t in _plain(at.error))


def test_sidebar_and_lanes_show_engines_and_models(env):
    at = _app()
    assert not at.exception
    sidebar = " ".join(_plain(at.sidebar.markdown) + _plain(at.sidebar.caption))
    assert "ollama (default)" in sidebar and "Ollama 0.33.0 · 1 model" in sidebar
    assert "vllm (default)" in sidebar and "vLLM 0.33.0 · 1 model" in sidebar
    # Two lanes by default: one per endpoint, each with its model and what is known of it.
    assert at.selectbox(key="lane_ep_0").value == "ollama (default)"
    assert at.selectbox(key="lane_ep_1").value == "vllm (default)"
    assert at.selectbox(key="lane_model_0").value == OLLAMA_MODEL
    assert at.selectbox(key="lane_model_1").value == VLLM_MODEL
    captions = " ".join(_plain(at.caption))
    assert "Q4_K_M · 7.6B params · 4.68 GB" in captions
    assert "AWQ · context 4,096" in captions
    # Presets from lib.workloads, the team's Korean prompt first.
    assert at.selectbox(key="prompt_preset").value == "ko-news-json"


def test_add_and_remove_lanes(env):
    at = _app()
    at.button(key="lane_add").click().run()
    assert not at.exception
    assert len(at.session_state["lane_ids"]) == 3
    at.button(key="lane_rm_0").click().run()
    at.button(key="lane_rm_1").click().run()
    at.button(key="lane_rm_2").click().run()
    assert not at.exception
    at.button(key="run_start").click().run()
    assert any("Add at least one lane" in t for t in _plain(at.error))


def test_duplicate_lanes_refused(env):
    at = _app()
    at.selectbox(key="lane_ep_1").set_value("ollama (default)").run()
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any("Lane 2 repeats lane 1" in t for t in _plain(at.error))


def test_unreachable_endpoint_and_engine_without_models(env, engines, monkeypatch):
    ollama, _ = engines
    ollama.script.models = []
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "http://127.0.0.1:9/v1")  # nothing listens
    at = _app()
    assert not at.exception
    assert any("serves no models" in t for t in _plain(at.warning))
    assert any("vllm (default) is unreachable" in t for t in _plain(at.error))
    at.button(key="run_start").click().run()
    errors = " ".join(_plain(at.error))
    assert "Lane 1: ollama (default) serves no models" in errors
    assert "Lane 2: vllm (default) is unreachable" in errors
    assert not at.exception


def test_prompt_inputs_that_cannot_run(env):
    at = _app()
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.button(key="run_start").click().run()
    assert any("Write at least one prompt" in t for t in _plain(at.error))
    at.radio(key="prompt_source").set_value("Upload a file").run()
    at.file_uploader(key="prompt_file").set_value(
        ("prompts.txt", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "text/plain")
    ).run()
    at.button(key="run_start").click().run()
    assert not at.exception
    assert any("Cannot read prompts.txt" in t for t in _plain(at.error))
    at.file_uploader(key="prompt_file").set_value(
        ("prompts.jsonl", '{"prompt": "안녕하세요"}\n'.encode(), "application/json")
    ).run()
    assert any("1 prompts from prompts.jsonl" in t for t in _plain(at.caption))


def test_no_concurrency_level(env):
    at = _app()
    at.multiselect(key="run_concurrency").set_value([]).run()
    at.button(key="run_start").click().run()
    assert any("Pick at least one concurrency level" in t for t in _plain(at.error))


def test_run_live_busy_and_reattach(env):
    db = env
    at = _small_workload(_app())
    at.text_input(key="run_label").set_value("scripted pair")
    at.button(key="run_start").click().run()
    assert not at.exception
    run_id = at.session_state["active_run"]
    assert at.query_params["run"] == run_id  # the URL carries the run

    # The live panel, driven by reruns: the progress count grows.
    def done_count() -> int:
        texts = [str(p.text) for p in at.get("progress")]
        return sum(int(m.group(1)) for t in texts for m in [re.search(r": (\d+)/4", t)] if m)

    _wait(lambda: done_count() >= 1, 30, at.run)
    first = done_count()
    assert any(m.label == "TTFT p50" for m in at.metric)
    # The six latency/throughput charts; telemetry charts (engine /metrics, /api/ps) follow
    # as their first samples arrive.
    keys = [c.key for c in at.get("plotly_chart")]
    six = ("timeline", "e2el", "tput", "ttft", "toks", "tpot")
    assert [k for k in keys if "-telemetry-" not in k] == [f"run-{c}-{run_id}" for c in six]

    # A second run on the same endpoints is refused while this one is active.
    # (The form is folded away under the live view; its widgets still work.)
    at.button(key="run_start").click().run()
    assert any("Endpoint busy" in t for t in _plain(at.error)), _plain(at.error)
    assert at.session_state["active_run"] == run_id

    # A fresh session (a reload, or a restarted dashboard) re-attaches without ?run=.
    fresh = _app()
    assert not fresh.exception
    assert any(run_id in t for t in _plain(fresh.markdown))

    _wait(lambda: done_count() > first or _status(db, run_id) == "completed", 60, at.run)
    _wait(lambda: _status(db, run_id) == "completed", 60, at.run)
    at.run()
    assert not at.exception
    assert not at.get("progress")  # done: the bars give way to a one-line summary
    captions = _plain(at.caption)
    assert "c=1: 4/4 requests · completed" in captions, captions
    assert "c=2: 4/4 requests · completed" in captions, captions
    markdown = " ".join(_plain(at.markdown))
    assert ":green-badge[completed]" in markdown
    assert "scripted pair" in markdown


def test_cancel_a_run(env):
    db = env
    at = _small_workload(_app())
    at.number_input(key="run_requests").set_value(40).run()
    at.button(key="run_start").click().run()
    run_id = at.session_state["active_run"]
    _wait(lambda: _status(db, run_id) == "running", 30, at.run)
    at.button(key=f"run-cancel-{run_id}").click().run()
    assert not at.exception
    _wait(lambda: _status(db, run_id) == "cancelled", 30, at.run)
    at.run()
    assert ":gray-badge[cancelled]" in " ".join(_plain(at.markdown))


def test_run_page_alone_shows_a_stale_run_id_as_message(env):
    at = AppTest.from_file(RUN_PAGE, default_timeout=30)
    at.query_params["run"] = "gone-run"
    at.run()
    assert not at.exception
    assert any("No run gone-run" in t for t in _plain(at.error))
    assert "run" not in at.query_params  # forgotten: a reload opens the form


def test_sidebar_shows_the_sandbox_coming_up(tmp_path, monkeypatch):
    import sandbox

    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "store.db"))
    monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
    monkeypatch.setenv("SERVESCOPE_SANDBOX_HOME", str(tmp_path / "sandbox"))
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    record = {"phase": "install", "message": "installing vllm (40 s)", "active": True}
    engines = [
        {"name": "vllm", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "ready": False}
    ]
    monkeypatch.setattr(sandbox, "progress", lambda: dict(record))
    monkeypatch.setattr(sandbox, "status", lambda: {"engines": engines})
    st.cache_data.clear()
    at = _app()
    assert not at.exception
    assert any("starting… install: installing vllm (40 s)" in t for t in _plain(at.sidebar.info))
    assert any("vllm · http://127.0.0.1:9/v1" in t for t in _plain(at.sidebar.caption))

    record.update(phase="failed", message="vllm exited with code 1", active=False)
    # A new session: AppTest drops the sidebar's elements on a rerun of an app whose
    # st.navigation owns the sidebar (a real browser keeps them; see the browser test).
    at = _app()
    assert not at.exception
    assert any("failed: vllm exited with code 1" in t for t in _plain(at.sidebar.warning))


def test_sidebar_names_the_sandbox_model_and_a_fallback(tmp_path, monkeypatch):
    """The sandbox's model is named under its engines; when the machine was too small for
    the real model, the sidebar says that the tiny one stands in, and why."""
    import sandbox

    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "store.db"))
    monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
    monkeypatch.setenv("SERVESCOPE_SANDBOX_HOME", str(tmp_path / "sandbox"))
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    engines = [
        {"name": "llama.cpp", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "ready": True}
    ]
    model = {"title": "Qwen2.5-Coder-0.5B-Instruct", "fallback": None}
    monkeypatch.setattr(sandbox, "progress", lambda: {"phase": "ready", "active": False})
    monkeypatch.setattr(sandbox, "status", lambda: {"engines": engines, "model": dict(model)})
    st.cache_data.clear()
    at = _app()
    assert not at.exception
    assert any("model: Qwen2.5-Coder-0.5B-Instruct" in t for t in _plain(at.sidebar.caption))
    assert not _plain(at.sidebar.warning)

    reason = "Qwen2.5-Coder-0.5B-Instruct needs 6 GiB of free memory and this machine has 2.1 GiB"
    model.update(title="tiny random Qwen2", fallback=f"{reason}: serving the tiny model")
    at = _app()
    assert not at.exception
    assert any("model: tiny random Qwen2" in t for t in _plain(at.sidebar.caption))
    assert any("2.1 GiB: serving the tiny model" in t for t in _plain(at.sidebar.warning))


def test_default_lanes_prefer_endpoints_that_answer(tmp_path, monkeypatch):
    """A fresh page compares what can run: an unreachable default is not lane 1, and a
    second lane on a one-engine setup takes that engine's next model (variant)."""
    variants = ["tiny-qwen2-f16", "tiny-qwen2-q8_0", "tiny-qwen2-q4_0"]
    with OpenAIServer(OpenAIScript(flavor="llama-cpp-python", models=variants)) as llama:
        monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "store.db"))
        monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
        monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "http://127.0.0.1:9")  # nothing there
        monkeypatch.setenv("SERVESCOPE_VLLM_URL", llama.base_url)
        st.cache_data.clear()
        at = AppTest.from_file(RUN_PAGE, default_timeout=30).run()
        assert not at.exception
        endpoints = [at.selectbox(key=f"lane_ep_{i}").value for i in (0, 1)]
        models = [at.selectbox(key=f"lane_model_{i}").value for i in (0, 1)]
    assert endpoints == ["vllm (default)", "vllm (default)"]
    assert models == variants[:2]


def test_model_picker_names_quantization_and_size(env, engines):
    """Ollama's models were listed by bare name, so two variants of one model looked alike.
    Models as Ollama 0.24.0's /api/tags lists them (reference recording): each option
    carries its quantization and size, while the value stays the plain name."""
    ollama, _ = engines
    ollama.script.models = [
        model_entry("qwen-coder-0.5b:latest", quant="Q4_K_M", params="630.17M", size=491_400_641),
        model_entry("smollm2-135m:latest", quant="Q4_1", params="134.52M", size=98_363_007),
    ]
    at = _app()
    assert not at.exception
    picker = at.selectbox(key="lane_model_0")
    assert picker.options == [
        "qwen-coder-0.5b:latest · Q4_K_M · 491 MB",
        "smollm2-135m:latest · Q4_1 · 98.4 MB",
    ]
    assert picker.value == "qwen-coder-0.5b:latest"
    picker.set_value("smollm2-135m:latest").run()
    assert not at.exception
    assert at.selectbox(key="lane_model_0").value == "smollm2-135m:latest"
    assert any("Q4_1 · 134.52M params" in t for t in _plain(at.caption))
    # The vLLM lane: no size reported, the quantization read from the name.
    assert at.selectbox(key="lane_model_1").options == [f"{VLLM_MODEL} · AWQ"]


def test_run_with_load_processes_records_them_and_says_so(env):
    """ "Load processes" in More settings: the run's process spreads its requests over
    them, the settings record the count and the header names it."""
    db = env
    workers = min(2, worker_count.cores())  # a one-core machine refuses more than one
    at = _small_workload(_app())
    at.number_input(key="run_workers").set_value(workers)
    at.button(key="run_start").click().run()
    assert not at.exception
    run_id = at.session_state["active_run"]
    _wait(lambda: _status(db, run_id) == "completed", 90, at.run)
    at.run()
    assert not at.exception
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
    assert run["config"]["workers"] == workers and run["env"]["load_workers"] == workers
    header = " ".join(_plain(at.markdown))
    assert ("2 load processes" in header) == (workers == 2), header
