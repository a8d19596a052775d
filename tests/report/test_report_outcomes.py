"""The report and the card tell a troubled run as it was (issue 12).

One run is written through the store API as the runner leaves it: the llama.cpp lane
answers at c=1 and times out 4/4 at c=4 (its warm-up failed too, and its sandbox engine
stopped answering); the vLLM lane is the fastest at every level, but every answer it
gave drifted from Korean to Chinese. A retro card or report that crowns vLLM "best"
without saying so, or shows only c=1, hides what happened.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from lib import quality, report, store
from lib.analysis import results
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.report import card as report_card
from lib.report import card_body
from lib.report import facts as report_facts
from tests.report.test_report import parse

PROMPT = "자연어 처리를 한국어로 두 문장으로 설명해 주세요."
KOREAN = "자연어 처리는 컴퓨터가 사람의 언어를 이해하도록 돕는 기술입니다. 번역과 검색에 쓰입니다."
CHINESE = "自然语言处理是人工智能的一个重要领域。它研究计算机如何理解和生成人类语言。"
TIMEOUT = "timed out after 60 s"
LLAMA, VLLM = "llama.cpp:qwen-coder-q4", "vllm:Qwen2.5-Coder-0.5B"
LOG_TAIL = ["loading model", "llama_model_load: <b>error</b>: out of memory & more"]


def request(lane: int, c: int, i: int, t: float, *, text: str = "", fast: bool = False,
            error: str | None = None) -> dict[str, Any]:  # fmt: skip
    row = {"run_id": "retro", "lane_idx": lane, "concurrency": c, "idx": i, "warmup": False,
           "prompt_idx": 0, "t_send": t}  # fmt: skip
    if error:
        return row | {"t_done": t + 60, "error": error, "output_text": ""}
    ttft, e2el = (30.0, 400.0) if fast else (90.0, 1500.0)
    return row | {
        "t_done": t + e2el / 1000,
        "ttft_ms": ttft,
        "e2el_ms": e2el,
        "tpot_ms": (e2el - ttft) / 31,
        "tokens_per_s": 32 / e2el * 1000,
        "itl_ms": [(e2el - ttft) / 31] * 31,
        "prompt_tokens": 20,
        "output_tokens": 32,
        "token_source": "server",
        "output_text": text,
        "finish_reason": "stop",
        "quality": quality.check_answer(text, prompt_text=PROMPT),
    }


def troubled_run(folder: Path) -> tuple[Path, str]:
    db = folder / "retro.db"
    config = RunConfig(
        lanes=[
            LaneSpec(engine="openai", base_url="http://127.0.0.1:8081/v1", model="qwen-coder-q4"),
            LaneSpec(engine="openai", base_url="http://127.0.0.1:8000/v1", model="Qwen2.5-Coder"),
        ],
        prompts=[Prompt.from_text(PROMPT)],
        concurrency=[1, 4],
        requests=4,
        sampling=Sampling(max_tokens=64),
        label="sandbox retro",
    )
    logs = {"0": {"name": "llama", "ready": False, "log": "/srv/.sandbox/llama.log",
                  "tail": LOG_TAIL}}  # fmt: skip
    env = {"hardware": {"gpu": {"available": False, "reason": "no NVML"}}, "engine_logs": logs}
    t = 1_800_000_000.0
    with store.opened(db) as conn:
        store.create_run(conn, "retro", config.to_dict(), config.label, env, status="running")
        store.update_run(conn, "retro", started_at=t)
        lanes = ((LLAMA, "llama.cpp", 0), (VLLM, "vllm", 1))
        for name, kind, li in lanes:
            spec = config.lanes[li]
            info = {"kind": kind, "version": "0.3.16" if li == 0 else "0.32.0"}
            store.add_lane(conn, "retro", li, name, "openai", spec.base_url, spec.model, info,
                           {"quantization": "Q4_K_M" if li == 0 else "BF16"})  # fmt: skip
        store.set_level(conn, "retro", 0, 0, "failed", t, t + 60, f"1 of 1 failed: {TIMEOUT}")
        rows = [request(0, 1, i, t + 61 + i * 2, text=KOREAN) for i in range(4)]
        rows += [request(0, 4, i, t + 70, error=TIMEOUT) for i in range(4)]
        rows += [request(1, c, i, t + 200 + c + i, text=CHINESE, fast=True)
                 for c in (1, 4) for i in range(4)]  # fmt: skip
        store.add_requests(conn, rows)
        store.set_level(conn, "retro", 0, 1, "completed", t + 61, t + 69)
        store.set_level(conn, "retro", 0, 4, "failed", t + 70, t + 130, f"4 of 4 failed: {TIMEOUT}")
        store.set_level(conn, "retro", 1, 1, "completed", t + 201, t + 205)
        store.set_level(conn, "retro", 1, 4, "completed", t + 204, t + 209)
        error = f"{LLAMA} c=4 failed: 4 of 4 failed: {TIMEOUT}"
        store.update_run(conn, "retro", status="completed with failures", error=error,
                         finished_at=t + 210)  # fmt: skip
    return db, "retro"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    return troubled_run(tmp_path_factory.mktemp("outcomes"))


def lane_boxes(card: str) -> dict[str, str]:
    """Each lane's box of the card, by lane (engine name as the card writes it)."""
    parts = re.split(r'<div class="lane" ', card)[1:]
    out = {}
    for part in parts:
        box = part.split('<div class="bottom">')[0]
        out["llama" if "llama.cpp" in box else "vllm"] = box
    return out


def text_of(html: str) -> str:
    return " ".join(t for _, t in parse(html).text)


def test_the_fixture_is_what_the_runner_stores(run):
    db, run_id = run
    doc = results.run_document(db, run_id)
    assert doc["status"] == "completed with failures"
    assert [lane["status"] for lane in doc["lanes"]] == ["completed with failures", "completed"]
    assert doc["failures"] == [f"{LLAMA} c=4 failed: 4 of 4 failed: {TIMEOUT}"]
    checks = [r["quality"] for lv in doc["lanes"][1]["levels"] for r in lv["requests"]]
    assert quality.drift_summary(checks) == "8/8 drifted to Chinese"


# --- the card (defect 1) -----------------------------------------------------------------


def test_card_summarizes_every_level_and_states_each_failure(run):
    db, run_id = run
    card = report_card.card_html(report_facts.load_view(db, run_id))
    text = text_of(card)
    boxes = lane_boxes(card)
    # Both levels of both lanes are on the card, the failed one with its reason.
    assert "concurrency 1, 4 ·" in text
    assert re.search(r"<td>4</td><td class=\"x\"[^>]*>✗ 4 of 4 failed: timed out after 60 s",
                     boxes["llama"])  # fmt: skip
    assert "warm-up: 1 of 1 failed: timed out after 60 s" in text_of(boxes["llama"])
    for c in ("1", "4"):
        assert f"<tr><td>{c}</td><td>30</td>" in boxes["vllm"]  # vLLM's TTFT p50 at each level
    # The run's status and reason are at the top, in words.
    assert "⚠ Run completed with failures: " + f"{LLAMA} c=4 failed: 4 of 4 failed: {TIMEOUT}" in (
        text
    )
    assert "✗ = level failed" in card  # the chart marks the level that has no throughput


def test_card_at_a_picked_level_still_states_the_other_levels_failures(run):
    db, run_id = run
    card = report_card.card_html(report_facts.load_view(db, run_id), concurrency=1)
    assert "concurrency 1 ·" in text_of(card) and "card: c=1" in card
    assert f"c=4: 4 of 4 failed: {TIMEOUT}" in text_of(lane_boxes(card)["llama"])
    assert "⚠ Run completed with failures" in text_of(card)


@pytest.mark.parametrize("concurrency", [None, 1, 4])
def test_card_gives_no_bare_best_to_a_lane_whose_answers_drifted(run, concurrency):
    db, run_id = run
    card = report_card.card_html(report_facts.load_view(db, run_id), concurrency)
    boxes = lane_boxes(card)
    vllm = boxes["vllm"]
    # vLLM is the fastest everywhere: whatever marks it says why it is not plainly best.
    assert '<span class="best">best</span>' not in vllm and "★" not in vllm
    if concurrency is None:
        assert '<span class="star warn">⚑</span>' in vllm
    else:
        assert "best, but ⚑ 8/8 answers drifted to Chinese" in text_of(vllm)
    assert "8/8 answers drifted to Chinese" in text_of(vllm)
    assert 'class="q warn"' in vllm  # the answer checks line reads as a warning
    # The llama.cpp lane failed a level: nothing on its box is a bare "best" either.
    assert '<span class="best">best</span>' not in boxes["llama"]


def test_a_clean_lane_on_top_keeps_its_plain_best(run):
    db, run_id = run
    view = report_facts.load_view(db, run_id)
    kpis = report_facts.lane_kpis(view, 1)
    assert kpis[0]["caveats"] == [
        f"c=4: 4 of 4 failed: {TIMEOUT}",
        f"warm-up: 1 of 1 failed: {TIMEOUT}",
    ]
    assert kpis[1]["caveats"] == ["8/8 answers drifted to Chinese"]
    clean = dict(kpis[1], caveats=[])
    assert card_body._best_badge(clean) == '<span class="best">best</span>'


def test_card_says_the_numbers_passed_their_checks_in_green(run):
    """The failures here are the engine's, not the measurement's: every check that could
    be made passed (the client's loop was not sampled: this run was written by hand)."""
    db, run_id = run
    for concurrency in (None, 1):
        card = report_card.card_html(report_facts.load_view(db, run_id), concurrency)
        expected = "✓ numbers checked: 9 of 9 passed (7 not measurable)"
        assert f'<div class="checks ok">{expected}</div>' in card


CARD_BOXES_JS = """() => Object.fromEntries(['.lanes', '.bottom', '.checks', '.foot'].map(s => {
  const e = document.querySelector(s), r = e.getBoundingClientRect();
  // A part other than the problem text that ends past the line's right edge is cut.
  const cut = s === '.checks' && [...e.children].some(c => !c.classList.contains('first')
    && c.getBoundingClientRect().right > r.right + 0.5);
  return [s, {top: r.top, bottom: r.bottom, left: r.left, right: r.right, cut}];
}))"""


@pytest.mark.browser
def test_checks_line_fits_between_the_bottom_row_and_the_foot(run, tmp_path):
    """Clean and troubled layouts, every level and one: the checks line sits below the
    chart and the answers, above the foot, inside the 1600×900 card; only the problem
    text is cut, never the count or "+N more"."""
    from playwright.sync_api import sync_playwright

    from tests.report.test_report import record_run

    views = [report_facts.load_view(*run)]
    views.append(report_facts.load_view(*record_run(tmp_path)))
    clean = dict(views[1].doc, status="completed", error=None)  # no banner: the tall layout
    views.append(dataclasses.replace(views[1], doc=clean))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1600, "height": 900})
            for view in views:
                for concurrency in (None, 1):
                    tab.set_content(report_card.card_html(view, concurrency))
                    box = tab.evaluate(CARD_BOXES_JS)
                    checks = box[".checks"]
                    assert box[".bottom"]["bottom"] <= checks["top"], box
                    assert checks["bottom"] <= box[".foot"]["top"] <= 900, box
                    assert checks["left"] >= 0 and checks["right"] <= 1600, box
                    assert not checks["cut"], box
        finally:
            browser.close()


def test_troubled_card_renders_at_1600x900(run, tmp_path):
    db, run_id = run
    out = report_card.write_png(db, run_id, tmp_path / "card.png")
    assert report_card.png_size(out.read_bytes()) == (1600, 900)


# --- the HTML report (defect 2) ------------------------------------------------------------


def test_report_states_the_run_status_and_every_failure(run):
    db, run_id = run
    page = report.html_report(db, run_id)
    tags = parse(page)
    status = [a for t, a in tags.tags if t == "span" and "status" in (a.get("class") or "")]
    assert status and status[0]["class"] == "status partial"  # amber, not neutral/green
    assert ".status.partial" in page  # styled as a warning
    text = text_of(page)
    assert "The run completed with failures: " in text
    assert "Failures" in text
    assert f"{LLAMA} c=4 failed: 4 of 4 failed: {TIMEOUT}" in text
    assert f"warm-up {LLAMA}: failed: 1 of 1 failed: {TIMEOUT}" in text


def test_report_says_the_numbers_passed_their_checks(run):
    db, run_id = run
    page = report.html_report(db, run_id)
    verdict = "numbers checked: 9 of 9 passed (7 not measurable)"
    assert f'<span class="status ok">{verdict}</span>' in page  # green
    assert '<ul class="checks">' not in page  # no problem to list
    text = text_of(page)
    assert "All 16 checks, per lane and level" in text
    assert "Not measurable: the client's event loop was not sampled in this run" in text


def test_report_shows_the_failing_engines_log_escaped(run):
    db, run_id = run
    page = report.html_report(db, run_id)
    text = text_of(page)
    assert f"{LLAMA}: sandbox engine llama no longer answers" in text
    assert "/srv/.sandbox/llama.log" in text
    logs = [t for where, t in parse(page).text if where == "text log"]
    assert "\n".join(LOG_TAIL) in "".join(logs)
    assert "<b>error</b>" not in page
    assert "&lt;b&gt;error&lt;/b&gt;: out of memory &amp; more" in page
