"""A rate run's report and card name each level by its load ("2 req/s", "all at once"),
never by its key as "c=1": the key of an open-loop level only numbers it. A run judged
against latency targets gets a "Latency targets and capacity" section with each lane's
capacity and three charts; a closed-loop run's report reads as before.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest

from lib import report, store
from lib.analysis import validation
from lib.core import outcome
from lib.core.load_pattern import LoadPattern
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.core.slo import Slo
from lib.load.runner import close_lanes, execute_run, prepare_lanes
from lib.report import card_body, card_chart
from lib.report import facts as report_facts
from lib.report import sections as report_sections
from tests.analysis.test_frames import LANE_NAMES, make_seed_run
from tests.charts.test_capacity_charts import make_rate_run
from tests.report.test_report import page_figures
from tests.scripted import OllamaScript, OllamaServer

RATE_LABELS = ["2 req/s", "8 req/s", "all at once"]
KEY_LABEL = re.compile(r"\bc=\d")


def _text(html: str) -> str:
    """The page's visible text: tags, scripts and packed data blocks left out."""
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.fixture
def rate_db(tmp_path):
    db = tmp_path / "store.db"
    return db, make_rate_run(db, slo=Slo(ttft_ms=500))


def test_rate_report_names_levels_by_rate(rate_db):
    db, run_id = rate_db
    page = report.html_report(db, run_id)
    text = _text(page)
    assert not KEY_LABEL.search(text), KEY_LABEL.search(text)
    assert "Summary per lane and request rate" in text
    summary = page[page.index("Summary per lane") : page.index("Latency targets and capacity")]
    assert "<th>Load</th>" in summary and "<th>Concurrency</th>" not in summary
    for label in RATE_LABELS:
        assert f"<td>{label}</td>" in summary
    # The headline level is the highest every lane measured: all at once.
    assert "<h2>All at once</h2>" in page
    assert "First 1 prompts at 2 req/s" in text  # the answers of the lowest level

    figures = page_figures(page)
    timeline = figures[5]
    assert timeline["layout"]["title"]["text"].startswith("E2E latency of each request over time")
    bands = [a["text"] for a in timeline["layout"]["annotations"] if a.get("yref") == "paper"]
    assert set(RATE_LABELS) <= set(bands) and not any(KEY_LABEL.match(b) for b in bands)
    ttft_box = figures[1]
    assert list(ttft_box["layout"]["xaxis"]["categoryarray"]) == RATE_LABELS


def test_capacity_section_with_its_three_charts(rate_db):
    db, run_id = rate_db
    page = report.html_report(db, run_id)
    start = page.index("<h2>Latency targets and capacity</h2>")
    section = page[start : page.index("<h2>", start + 10)]
    text = _text(section)
    # Ollama misses 500 ms from 8 req/s on; vLLM keeps within it at every rate.
    assert f"{LANE_NAMES[0]} : 2 req/s within TTFT ≤ 500 ms" in text
    assert f"{LANE_NAMES[1]} : at least 8 req/s within TTFT ≤ 500 ms" in text
    assert "every level up to 8 met the targets" in text  # the lane's note
    figures = page_figures(page)
    assert len(figures) == 10  # the run's seven, then the section's three
    ids = re.findall(r'<div class="chart" id="fig(\d+)">', section)
    assert ids == ["7", "8", "9"]
    titles = [f["layout"]["title"]["text"] for f in figures[7:]]
    assert titles[0].startswith("Goodput vs request rate")
    assert "TTFT" in titles[1] or "first token" in titles[1].lower()
    assert titles[2].startswith("Throughput vs per-user speed")
    # Every cell of the page has its figure, and every figure its cell.
    assert sorted(map(int, re.findall(r'id="fig(\d+)"', page))) == list(range(10))


def test_no_targets_no_section_and_a_closed_loop_report_as_before(tmp_path):
    db = tmp_path / "store.db"
    rate_id = make_rate_run(db)  # no SLO
    page = report.html_report(db, rate_id)
    assert "Latency targets and capacity" not in page
    assert len(page_figures(page)) == 7
    page = report.render_html(_seed_view(db))
    text = _text(page)
    assert "Summary per lane and concurrency" in text and "<h2>At concurrency 5</h2>" in page
    assert "<th>Concurrency</th>" in page and "<th>Load</th>" not in page
    assert "prompts at concurrency 1" in text
    bands = [a["text"] for a in page_figures(page)[5]["layout"]["annotations"]]
    assert {"c=1", "c=5"} <= set(bands)


def _fail_one(db, run_id: str) -> None:
    """One request of Ollama's 8 req/s level (key 2) failed, as the runner stores it."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE requests SET error = 'HTTP 503', ttft_ms = NULL, e2el_ms = NULL"
            " WHERE run_id = ? AND lane_idx = 0 AND concurrency = 2 AND idx = 0",
            (run_id,),
        )
    with store.opened(db) as conn:
        store.set_level(conn, run_id, 0, 2, "completed with failures", error="1 of 8 failed")


def test_card_rows_read_by_rate(rate_db):
    db, run_id = rate_db
    _fail_one(db, run_id)
    view = report_facts.load_view(db, run_id)
    card = card_body.card_html(view)
    text = _text(card)
    assert "2 req/s, 8 req/s, all at once · 8 requests per level" in text
    assert "<th>load</th>" in card and "<th>c</th>" not in card
    for label in RATE_LABELS:
        assert f"<td>{label}" in card
    assert "8 req/s: 1 of 8 failed" in text  # the lane's trouble line, by its rate
    # Only the mini chart (lib/report/card_chart.py) may still speak of concurrency.
    lanes = card[card.index('<div class="lanes">') : card.index('<div class="bottom">')]
    assert not KEY_LABEL.search(_text(lanes))
    one = card_body.card_html(view, 2)
    assert "8 req/s · 8 requests per level" in _text(one)


def _seed_view(db) -> report_facts.RunView:
    """The seed run (closed loop at 1 and 5) with an environment the report reads (the
    seed's own is an older, shorter form)."""
    view = report_facts.load_view(db, make_seed_run(db))
    view.doc["environment"] = {}
    return view


def test_closed_loop_card_unchanged(tmp_path):
    view = _seed_view(tmp_path / "store.db")
    card = card_body.card_html(view)
    assert "concurrency 1, 5 · 5 requests per level" in _text(card)
    assert "<th>c</th>" in card and "<tr><td>1</td>" in card and "<tr><td>5</td>" in card
    assert "concurrency 5 · 5 requests" in _text(card_body.card_html(view, 5))


def test_problem_lines_name_rate_levels_by_load():
    lanes = [{"name": "vllm:m", "levels": [{"concurrency": 2, "load_label": "8 req/s"}]}]
    problem = {"lane": "vllm:m", "concurrency": 2, "status": "warn", "check": "schedule"}
    verdict = {"problems": [{**problem, "detail": "late."}]}
    assert validation.problem_lines(verdict, lanes) == ["⚠ vllm:m 8 req/s schedule: late."]
    assert validation.problem_lines(verdict) == ["⚠ vllm:m c=2 schedule: late."]
    own = {"problems": [{**problem, "detail": "late.", "load_label": "all at once"}]}
    assert validation.problem_lines(own) == ["⚠ vllm:m all at once schedule: late."]


def test_rate_checks_table_by_load(rate_db):
    db, run_id = rate_db
    section = report_sections.checks_section(report_facts.load_view(db, run_id))
    assert "<th>Load</th>" in section and "<th>Concurrency</th>" not in section
    assert not KEY_LABEL.search(_text(section))


def test_failure_lines_and_run_error_name_rate_levels(rate_db):
    db, run_id = rate_db
    _fail_one(db, run_id)
    doc = report_facts.load_view(db, run_id).doc
    line = f"{LANE_NAMES[0]} 8 req/s completed with failures: 1 of 8 failed"
    assert doc["failures"] == [line]
    assert doc["error"] == line  # the run was stored "completed": judged now, by its rate
    # Levels without a label (older callers) still read as closed loop.
    bare = [{"lane_idx": 0, "concurrency": 4, "status": "failed", "error": "x"}]
    assert outcome.failure_lines(bare, ["a"]) == ["a c=4 failed: x"]
    labelled = [{**bare[0], "load_label": "all at once"}, {**bare[0], "lane_idx": 1}]
    assert outcome.run_error(labelled, ["a", "b"]) == "a all at once failed: x (+1 more level)"


def test_runner_names_a_failed_rate_level_by_its_rate(tmp_path):
    """The runner's own run error (state.ended) says the level's rate, not its key."""
    with OllamaServer(OllamaScript(ttft_ms=1, gap_ms=1)) as server:
        server.script.fault = "http503"
        config = RunConfig(
            lanes=[LaneSpec(engine="ollama", base_url=server.url, model="llama3.2", name="o")],
            prompts=[Prompt.from_text("hi")],
            requests=2,
            warmup=0,
            sampling=Sampling(max_tokens=2),
            timeout_s=5.0,
            load=LoadPattern(mode="rate", rates=[None], seed=1),
        )

        async def go() -> str:
            lanes = await prepare_lanes(config)
            try:
                return await execute_run(config, lanes, db=tmp_path / "s.db")
            finally:
                await close_lanes(lanes)

        run_id = asyncio.run(go())
    with store.opened(tmp_path / "s.db") as conn:
        run = store.get_run(conn, run_id)
    assert run["status"] == "failed"
    assert run["error"].startswith("o all at once failed: 2 of 2 failed: HTTP 503"), run["error"]


def test_trouble_lines_by_load_and_closed_loop_as_before():
    rated = {"concurrency": 2, "load_label": "8 req/s", "status": "failed", "error": "boom"}
    assert report_facts.level_trouble(rated) == "8 req/s: boom"
    closed = {"concurrency": 4, "status": "failed", "failed": 4, "completed": 0}
    assert report_facts.level_trouble(closed) == "c=4: 4 of 4 failed"
    assert report_facts.level_trouble({**closed, "load_label": "c=4"}) == "c=4: 4 of 4 failed"


def _axis(svg: str) -> tuple[list[str], str, list[float]]:
    """The mini chart's tick texts (bottom row), axis title and the points' x positions."""
    texts = re.findall(r'<text x="[\d.]+" y="(\d+)" text-anchor="middle">([^<]*)</text>', svg)
    bottom = max(int(y) for y, _ in texts)
    ticks = [t for y, t in texts if int(y) == bottom - 22]
    title = next(t for y, t in texts if int(y) == bottom)
    xs = sorted({float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)})
    return ticks, title, xs


def test_card_chart_by_rate(rate_db):
    db, run_id = rate_db
    view = report_facts.load_view(db, run_id)
    svg = card_chart.throughput_svg(view, None)
    ticks, title, xs = _axis(svg)
    assert ticks == ["2", "8", "all at once"]
    assert title == "request rate (req/s)"
    assert len(xs) == 3  # both lanes' points at the same three rates
    # Placed by rate, not by key: rates 1, 2, 8 go on a log axis (load_axis), so 2 → 8
    # sits twice as far as 1 → 2, where keys 1, 2, 3 would sit evenly.
    for lane in view.doc["lanes"]:
        for lv, rate in zip(lane["levels"], (1.0, 2.0, 8.0), strict=True):
            lv["load"] = rate
    ticks, _, xs = _axis(card_chart.throughput_svg(view, None))
    assert ticks == ["1", "2", "8"]
    assert (xs[2] - xs[1]) == pytest.approx(2 * (xs[1] - xs[0]), abs=0.2)
    view = report_facts.load_view(db, run_id)
    picked = card_chart.throughput_svg(view, 2)
    assert "card: 8 req/s" in picked and not KEY_LABEL.search(picked)
    card = card_body.card_html(view, 3)
    assert "Output throughput vs request rate (tok/s)" in card
    assert "card: all at once" in card


def test_closed_loop_card_chart_unchanged(tmp_path):
    view = _seed_view(tmp_path / "store.db")
    svg = card_chart.throughput_svg(view, 5)
    ticks, title, _ = _axis(svg)
    assert ticks == ["1", "5"] and title == "concurrency (requests in flight)"
    assert "card: c=5" in svg
    assert "Output throughput vs concurrency (tok/s)" in card_body.card_html(view)


def test_report_footer_names_the_rate_of_the_card_level(rate_db, tmp_path):
    db, run_id = rate_db
    page = report.html_report(db, run_id)
    footer = page[page.index("<footer>") : page.index("</footer>")]
    assert "card for all at once: <code>report --png FILE --concurrency 3</code>" in footer
    assert not KEY_LABEL.search(_text(footer))
    closed = report.render_html(_seed_view(tmp_path / "seed.db"))
    assert " · card: <code>report --png FILE --concurrency 5</code></footer>" in closed
