"""Results page through AppTest: empty store, a finished run, an unknown id, a run that
is still going (driven with repeated at.run(): AppTest cannot fire run_every)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import store
from tests.test_frames import (
    CHINESE_ANSWER,
    KOREAN_ANSWER,
    KOREAN_PROMPT,
    LANE_NAMES,
    T0,
    _request,
    make_seed_run,
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app_pages" / "results.py")
APP = str(ROOT / "app.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    monkeypatch.setenv("SERVESCOPE_DB", str(path))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    # No default engines: the sidebar must not wait on ports of this machine.
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    st.cache_data.clear()
    st.cache_resource.clear()
    return path


def _texts(elements) -> list[str]:
    """Element texts with markdown escapes undone (names are escaped before display)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _open(run_id: str | None = None, page: str = PAGE) -> AppTest:
    at = AppTest.from_file(page, default_timeout=30)
    if run_id:
        at.query_params["run"] = run_id
    return at.run()


def test_empty_store(db):
    at = _open()
    assert not at.exception
    assert any("No runs yet" in t for t in _texts(at.info))


def test_unknown_run_id_is_a_message(db):
    make_seed_run(db)
    at = _open("does-not-exist")
    assert not at.exception
    assert any("No run does-not-exist in the store" in t for t in _texts(at.error))
    # The picker falls back to the newest run.
    assert at.selectbox(key="results_run").value == "20250609-100000-seed01"


def test_finished_run(db):
    run_id = make_seed_run(db)
    at = _open(run_id)
    assert not at.exception
    assert at.selectbox(key="results_run").value == run_id
    assert "active_run" not in at.session_state  # browsing results leaves the Run page be
    markdown = " ".join(_texts(at.markdown))
    assert "seed: Ollama Q4 vs vLLM AWQ" in markdown
    assert ":green-badge[completed]" in markdown
    # Per-lane tiles with units.
    metrics = {(m.label, m.value) for m in at.metric}
    assert ("TTFT p50", "2,100 ms") in metrics  # Ollama at c=5: 100 ms + 2 s queued
    assert ("Output throughput", "250 tok/s") in metrics  # vLLM at c=5
    # Six charts, keyed per page and run.
    charts = at.get("plotly_chart")
    assert len(charts) == 6
    # Summary table with units in the headers' config.
    summary = at.dataframe[0]
    frame = summary.value
    assert frame[["lane", "concurrency"]].values.tolist() == [
        [LANE_NAMES[0], 1],
        [LANE_NAMES[0], 5],
        [LANE_NAMES[1], 1],
        [LANE_NAMES[1], 5],
    ]
    assert frame["out_tok_per_s"].tolist() == pytest.approx([50.0, 50.0, 50.0, 250.0])
    # Quality: the quantized lane drifted to Chinese.
    assert "8/10 drifted to Chinese" in markdown
    assert "0/10 drifted" in markdown
    # Answers side by side, as code blocks (plain text), both lanes.
    codes = _texts(at.code)
    assert KOREAN_ANSWER in codes and CHINESE_ANSWER not in codes  # first vLLM answer: Korean
    assert KOREAN_PROMPT in _texts(at.text)
    assert len(at.dataframe) >= 4  # summary, server timings, lanes, settings


def test_answers_at_another_level(db):
    run_id = make_seed_run(db)
    at = _open(run_id)
    at.selectbox(key=f"answers-level-{run_id}").set_value(5).run()
    assert not at.exception
    assert at.selectbox(key=f"answers-level-{run_id}").value == 5


def test_untrusted_output_is_never_markdown(db):
    run_id = make_seed_run(db, with_requests=False)
    nasty = "**bold** <img src=x onerror=alert(1)> [link](http://evil) :red[x]"
    with store.opened(db) as conn:
        row = _request(run_id, 0, 1, 0, T0, 1000.0, nasty)
        row["quality"] = {"flags": [{"code": "repetition", "reason": f"loop: '{nasty}'"}]}
        store.add_requests(conn, [row])
    at = _open(run_id)
    assert not at.exception
    assert nasty in _texts(at.code)  # verbatim, in a code block
    for element in [*at.markdown, *at.warning, *at.caption]:
        # Wherever the text reaches markdown it is escaped: no live link, tag or colour.
        text = str(element.value)
        assert not re.search(r"(?<!\\)\[link(?<!\\)\]", text), text
        assert not re.search(r"(?<!\\)<img", text), text
        assert not re.search(r"(?<!\\):red(?<!\\)\[", text), text


def test_active_run_is_live_then_final(db):
    """A running run: progress grows over reruns; when it ends the results appear."""
    run_id = make_seed_run(db, status="running", with_requests=False)
    with store.opened(db) as conn:
        store.update_run(conn, run_id, status="running")
    at = _open(run_id)
    assert not at.exception
    assert any("c=1: 0/5 requests" in str(p.text) for p in at.get("progress"))
    assert any("appear here when the run ends" in t for t in _texts(at.caption))

    with store.opened(db) as conn:
        store.add_requests(conn, [_request(run_id, 0, 1, i, T0 + i, 1000.0, "x") for i in range(3)])
    at.run()
    assert not at.exception
    progress = [str(p.text) for p in at.get("progress")]
    assert any("c=1: 3/5 requests" in t for t in progress), progress

    with store.opened(db) as conn:
        store.add_requests(
            conn, [_request(run_id, 0, 1, i, T0 + i, 1000.0, "x") for i in range(3, 5)]
        )
        store.update_run(conn, run_id, status="completed", finished_at=T0 + 50)
    at.run()
    assert not at.exception
    assert not at.get("progress")  # finished: a caption instead of bars
    # Levels that never got a request still show, with nothing completed.
    assert at.dataframe[0].value["completed"].tolist() == [5, 0, 0, 0]


def test_through_app_navigation(db):
    run_id = make_seed_run(db)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["run"] = run_id
    at.switch_page("app_pages/results.py").run()
    assert not at.exception
    assert at.dataframe[0].value["lane"].nunique() == 2
    assert at.selectbox(key="results_run").value == run_id
