"""The verdict in the HTML report ("What the numbers say", near the top) and on the PNG
card (one line per lane), from a run recorded through the CLI against a scripted Ollama
serving one request at a time and a scripted vLLM serving all at once."""

from __future__ import annotations

import sqlite3

import pytest

from lib import cli, store
from lib.report import card as report_card
from lib.report import render_html
from lib.report.card_body import card_html
from lib.report.facts import RunView, load_view
from lib.report.verdict_section import card_verdicts, verdict_section
from tests.cli.test_verdict_cli import OLLAMA_MODEL, VLLM_MODEL, record_run
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

EVIL_LANE = "<b>evil</b> lane"


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> RunView:
    db = tmp_path_factory.mktemp("verdict-report") / "s.db"
    code, _ = record_run(db)
    assert code == 0
    with store.opened(db) as conn:
        run_id = store.list_runs(conn)[0]["run_id"]
    return load_view(db, run_id)


def test_report_says_what_the_numbers_say_near_the_top(view):
    page = render_html(view)
    at = page.index("<h2>What the numbers say</h2>")
    assert page.index("</h1>") < at < page.index("<h2>At concurrency")
    section = page[at : page.index("<h2>At concurrency")]
    assert f"ollama:{OLLAMA_MODEL}</b>: queues: serves about 1 request at a time" in section
    assert f"vllm:{VLLM_MODEL}</b>: batches: at 4 users each keeps" in section
    assert "To change it: raise OLLAMA_NUM_PARALLEL" in section
    assert section.count("class='setting'") == 1  # the batching lane needs no change
    # The lanes compared, and each lane beside its colour.
    assert "has the highest output throughput" in section
    assert section.count('class="sw"') == 2


def test_card_has_one_verdict_line_per_lane(view, tmp_path):
    page = card_html(view)
    assert page.count('<div class="vd">') == 2
    assert '<div class="vd">queues: serves about 1 request at a time' in page
    assert '<div class="vd">batches: at 4 users' in page
    assert card_html(view, 4).count('<div class="vd">') == 2  # the one-level card too
    data = report_card.render_png(page)
    assert report_card.png_size(data) == (1600, 900)
    (tmp_path / "card.png").write_bytes(data)


def test_lane_names_in_the_verdict_are_escaped(view, tmp_path):
    db = tmp_path / "evil.db"
    with sqlite3.connect(view.db) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE lanes SET name = ? WHERE lane_idx = 0", (EVIL_LANE,))
    evil = load_view(db, view.doc["run_id"])
    for html in (verdict_section(evil), card_html(evil)):
        assert "<b>evil</b>" not in html
    assert "&lt;b&gt;evil&lt;/b&gt; lane</b>: queues" in verdict_section(evil)


def test_a_run_with_no_lane_has_no_section():
    empty = RunView(
        doc={"lanes": []}, run={}, levels=[], colors={}, chart_names=[], chart_colors={}, order=[]
    )
    assert verdict_section(empty) == ""


def test_a_lane_that_failed_everywhere_gets_no_card_line():
    failed = {"name": "x", "engine": "vllm", "status": "failed", "levels": []}
    fine = {**failed, "name": "y", "status": "completed"}
    assert card_verdicts({"lanes": [failed, fine]}) == [
        None,
        "no level measured yet: nothing to judge",
    ]


def test_a_lane_with_a_capacity_says_it_first_on_the_card():
    base = {"engine": "vllm", "status": "completed", "levels": []}
    lanes = [
        {**base, "name": "a", "capacity": {"value": 4.0, "mode": "concurrency", "reason": "found"}},
        {**base, "name": "b", "capacity": {"value": 8.0, "mode": "rate", "reason": "ceiling"}},
        {**base, "name": "c", "capacity": {"value": None, "mode": "concurrency", "reason": "none"}},
    ]
    assert card_verdicts({"lanes": lanes}) == [
        "Capacity: 4 users at once. No level measured yet: nothing to judge",
        "Capacity: at least 8 req/s. No level measured yet: nothing to judge",
        "Capacity: none within the targets. No level measured yet: nothing to judge",
    ]


def test_the_card_names_the_targets_a_capacity_is_judged_by(tmp_path):
    db = tmp_path / "s.db"
    with OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=5, tokens=4, models=["m"])) as server:
        code = cli.main(
            ["capacity", "--engine", "openai", "--base-url", server.base_url, "--model", "m",
             "--prompt", "hi", "--max-tokens", "4", "--requests", "2", "--warmup", "0",
             "--max", "2", "--slo-ttft-ms", "5000", "--db", str(db), "--quiet"]
        )  # fmt: skip
    assert code == 0
    with store.opened(db) as conn:
        run_id = store.list_runs(conn)[0]["run_id"]
    html = card_html(load_view(db, run_id))
    assert "targets: TTFT ≤ 5000 ms, for 90% of requests" in html
    assert "Capacity: at least 2 users at once." in html
