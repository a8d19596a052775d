"""Compare page through AppTest: empty store, a run made by the real CLI against scripted
servers, the seed finding (drift and broken JSON), filters and the diff view, blind
voting (stored, revealed, undone), the votes table and CSV, and hostile answer text."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import cli, store
from lib.quality import review
from tests.quality.test_review import KO_JSON, NAMES, ZH_JSON, make_run
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
XSS = "<script>alert(1)</script>"


def page(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def plain(elements) -> list[str]:
    """Element texts with esc_md's backslashes removed, as a reader sees them."""
    return [e.value.replace("\\", "") for e in elements]


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store(db):
    at = page()
    assert [t.value for t in at.title] == ["Compare"]
    assert any("No runs yet" in m for m in texts(at.info))
    assert not at.code


def test_unknown_run_id_falls_back_to_the_picker(db):
    make_run(db)
    at = page("nope")
    assert any("No run nope" in e for e in plain(at.error))
    assert at.selectbox(key="results_run").value == "seed"


def test_a_run_made_by_the_cli_shows_both_lanes_answers(db, capsys):
    with (
        OpenAIServer(OpenAIScript(ttft_ms=5, gap_ms=1, models=["qwen-awq"])) as vllm,
        OllamaServer(OllamaScript(ttft_ms=5, gap_ms=1)) as ollama,
    ):
        code = cli.main(
            [
                "run",
                "--lane", "ollama", ollama.url, "qwen2.5:7b-instruct-q4_K_M",
                "--lane", "openai", vllm.base_url, "qwen-awq",
                "--prompt", "AI 기술에 대한 짧은 뉴스 기사를 써 주세요.",
                "--concurrency", "1,2",
                "--requests", "3",
                "--warmup", "0",
                "--max-tokens", "8",
                "--db", str(db),
                "--label", "cli run",
            ]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with store.opened(db) as conn:
        (run,) = store.list_runs(conn)
        lanes = [lane["name"] for lane in store.get_lanes(conn, run["run_id"])]
        stored = {
            (r["lane_idx"], r["concurrency"], r["idx"]): r["output_text"]
            for r in store.get_requests(conn, run["run_id"])
        }
    assert run["status"] == "completed" and len(stored) == 12
    at = page(run["run_id"])
    shown = " ".join(texts(at.markdown))
    for name in lanes:
        assert review_md(name) in shown
    assert "0/6 drifted" in shown  # the per-lane summary over every level
    # 2 levels x 3 requests = 6 pairs, both answers of each as plain code blocks, in order
    answers = texts(at.code)
    expected = [stored[(lane, c, i)] for c in (1, 2) for i in range(3) for lane in (0, 1)]
    assert answers == expected
    assert "6 of 6 answer pairs · All answers" in texts(at.caption)

    at.selectbox(key=f"compare_level_{run['run_id']}").set_value(2)
    rerun(at)
    assert len(at.code) == 6
    at.selectbox(key="compare_sends").set_value("first")
    rerun(at)
    assert texts(at.code) == [stored[(0, 2, 0)], stored[(1, 2, 0)]]
    assert "Send 1 of 3 · request 0 · c=2" in plain(at.caption)


def review_md(name: str) -> str:
    """How a lane name reads inside the page's markdown (escaped)."""
    from lib.app.formatting import esc_md

    return esc_md(name)


def test_seed_finding_summary_badges_filters_and_diff(db):
    make_run(db)
    at = page("seed")
    md = texts(at.markdown)
    assert (
        ":material/flag: **4/10 drifted to Chinese · 1 JSON invalid**" in md
    )  # vLLM AWQ, every level
    assert ":material/flag: **1/10 drifted to Chinese · 0 JSON invalid**" in md  # Ollama
    at.selectbox(key="compare_level_seed").set_value(5)
    rerun(at)
    md = texts(at.markdown)
    assert ":material/flag: **4/5 drifted to Chinese · 0 JSON invalid**" in md
    assert sum("lang drift → Chinese" in m for m in md) == 5  # badges: 1 Ollama + 4 vLLM
    assert texts(at.code).count(ZH_JSON) == 5

    at.segmented_control(key="compare_filter").set_value("disagree")
    rerun(at)
    assert "3 of 5 answer pairs · Only where lanes disagree" in texts(at.caption)
    assert texts(at.code) == [KO_JSON, ZH_JSON] * 3

    at.toggle(key="compare_diff").set_value(True)
    rerun(at)
    diffs = [c for c in at.code if c.language == "diff"]
    assert len(diffs) == 3
    assert diffs[0].value.startswith(f"--- {NAMES[0]}\n+++ {NAMES[1]}")
    lines = diffs[0].value.splitlines()
    assert '+专家们预计这种趋势将持续下去。"}' in lines  # one sentence per line
    assert '-전문가들은 앞으로도 이러한 흐름이 계속될 것으로 전망합니다."}' in lines

    at.selectbox(key="compare_level_seed").set_value(1)
    at.segmented_control(key="compare_filter").set_value("flagged")
    rerun(at)
    assert "1 of 5 answer pairs · Only flagged" in texts(at.caption)
    assert any("JSON invalid" in m for m in texts(at.markdown))


def test_blind_vote_is_stored_revealed_counted_and_undone(db):
    make_run(db)
    at = page("seed")
    at.text_input(key="compare_voter").set_value("kim")
    at.toggle(key="compare_blind").set_value(True)
    rerun(at)
    md = " ".join(texts(at.markdown))
    assert review_md(NAMES[0]) not in md and review_md(NAMES[1]) not in md  # names hidden
    assert "**Left**" in md and "**Right**" in md
    assert at.progress[0].value == 0 and "0 of 10 voted" in at.progress[0].text
    shown = texts(at.code)
    assert len(shown) == 2

    # which item and sides the page showed, as lib/review computes them for this voter
    data = review.load_review(db, "seed")
    queue = review.blind_order("seed", review.pairs(data, 0, 1), "kim")
    item = queue[0]
    left, right = review.sides("seed", item, "kim")
    assert shown == [item.answer(left).text, item.answer(right).text]

    at.button(key="compare-vote-right").click()
    rerun(at)
    with store.opened(db) as conn:
        (vote,) = store.get_votes(conn, "seed")
    assert (vote["voter"], vote["left_lane"], review.winner_lane(vote)) == ("kim", left, right)
    assert (vote["concurrency"], vote["req_idx"]) == (item.concurrency, item.idx)
    reveal = plain(at.success)[0]
    assert f"Left was {NAMES[left]}, right was {NAMES[right]}." in reveal
    assert f"You voted right: {NAMES[right]} wins." in reveal
    assert "1 of 10 voted" in at.progress[0].text
    next_item = queue[1]
    nl, nr = review.sides("seed", next_item, "kim")
    assert texts(at.code)[:2] == [next_item.answer(nl).text, next_item.answer(nr).text]
    # the votes section: win rates and the CSV export
    assert at.dataframe and at.download_button
    rows = review.votes_export(db, "seed")
    assert [(r["voter"], r["winner"]) for r in rows] == [("kim", NAMES[right])]
    other = 5 if item.concurrency == 1 else 1  # win rates follow the level picked
    at.selectbox(key="compare_level_seed").set_value(other)
    rerun(at)
    assert "No votes at this level yet." in texts(at.info)
    assert "0 of 5 voted" in at.progress[0].text
    at.selectbox(key="compare_level_seed").set_value(0)
    rerun(at)

    at.button(key="compare-undo").click()
    rerun(at)
    with store.opened(db) as conn:
        assert store.get_votes(conn, "seed") == []
    assert "0 of 10 voted" in at.progress[0].text
    assert texts(at.code)[:2] == shown  # the undone item is back in front


def test_blind_review_finishes_and_named_mode_shows_the_votes(db):
    texts_ = {(lane, 1, i): KO_JSON if lane == 0 else ZH_JSON for lane in (0, 1) for i in range(2)}
    make_run(db, texts=texts_)
    at = page("seed")
    at.toggle(key="compare_blind").set_value(True)
    rerun(at)
    at.button(key="compare-vote-tie").click()
    rerun(at)
    at.button(key="compare-vote-both_bad").click()
    rerun(at)
    assert "All 2 pairs voted. Win rates are below." in texts(at.success)
    assert not _has(at, "compare-vote-left")
    at.toggle(key="compare_blind").set_value(False)
    rerun(at)
    captions = " ".join(plain(at.caption))
    assert "your blind vote: tie" in captions and "your blind vote: both bad" in captions
    assert "2 votes in this run" in captions


def _has(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)


def test_answer_markup_is_shown_as_text(db):
    hostile = f"{XSS} 인공지능 기술이 빠르게 발전하고 있습니다. [click](javascript:alert(1))"
    make_run(db, texts={(0, 1, 0): hostile, (1, 1, 0): KO_JSON})
    at = page("seed")
    assert hostile in texts(at.code)
    at.toggle(key="compare_diff").set_value(True)
    rerun(at)
    (diff,) = [c for c in at.code if c.language == "diff"]
    assert f"-{XSS} 인공지능 기술이 빠르게 발전하고 있습니다." in diff.value.splitlines()
    at.toggle(key="compare_blind").set_value(True)
    rerun(at)
    assert hostile in texts(at.code)
    assert not at.html
    for el in [*at.markdown, *at.caption, *at.success]:
        assert "<script>" not in el.value and "](javascript" not in el.value


def test_a_one_lane_run_says_so(db):
    with store.opened(db) as conn:
        store.create_run(conn, "solo", {"concurrency": [1], "prompts": []}, status="completed")
        store.add_lane(conn, "solo", 0, "vllm:m", "openai", "http://x/v1", "m", {}, {})
    at = page("solo")
    assert any("one lane" in m for m in texts(at.info))


def test_one_vote_is_one_vote_not_1_votes(db):
    make_run(db, texts={(0, 1, 0): KO_JSON, (1, 1, 0): ZH_JSON})
    at = page("seed")
    at.toggle(key="compare_blind").set_value(True)
    rerun(at)
    at.button(key="compare-vote-tie").click()
    rerun(at)
    at.toggle(key="compare_blind").set_value(False)
    rerun(at)
    captions = " ".join(plain(at.caption))
    assert "1 vote in this run" in captions and "1 votes" not in captions
