"""lib/quality/review/: pairing, filters, badges, diff, blind shuffling, votes in the store
(migration 3 included), Wilson intervals and the votes export."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest

from lib import quality, store
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.quality import review

KO_PROMPT = (
    '인공지능 기술에 관한 짧은 뉴스 기사를 JSON으로 써 주세요. "title"과 "content" 키를 사용하세요.'
)
KO_JSON = (
    '{"title": "인공지능 기술의 빠른 발전", "content": "최근 인공지능 기술이 빠르게 발전하면서'
    " 여러 산업에 큰 변화를 가져오고 있습니다. 전문가들은 앞으로도 이러한 흐름이 계속될 것으로"
    ' 전망합니다."}'
)
ZH_JSON = (
    '{"title": "人工智能技术的快速发展", "content": "近年来，人工智能技术快速发展，'
    '给各个行业带来了巨大变化。专家们预计这种趋势将持续下去。"}'
)
KO_BROKEN = '{"title": "인공지능 기술", "content": "최근 인공지능 기술이 빠르게 발전하고 있습니다.'
LANES = [
    ("ollama", "http://127.0.0.1:11434", "qwen2.5:7b-instruct-q4_K_M"),
    ("openai", "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct-AWQ"),
]
NAMES = ["ollama:qwen2.5:7b-instruct-q4_K_M", "vllm:Qwen2.5-7B-Instruct-AWQ"]


def seed_answers() -> dict[tuple[int, int, int], str]:
    """The team's finding: at c=5 Ollama drifted to Chinese 1 of 5, vLLM AWQ 4 of 5; at
    c=1 vLLM's request 2 is broken JSON, everything else is fine Korean JSON."""
    texts = {}
    for lane in (0, 1):
        for c in (1, 5):
            for idx in range(5):
                texts[(lane, c, idx)] = KO_JSON
    texts[(1, 1, 2)] = KO_BROKEN
    texts[(0, 5, 3)] = ZH_JSON
    for idx in range(4):
        texts[(1, 5, idx)] = ZH_JSON
    return texts


def make_run(
    db,
    run_id: str = "seed",
    texts: dict[tuple[int, int, int], str] | None = None,
    prompts: list[str] | None = None,
    errors: dict[tuple[int, int, int], str] | None = None,
    status: str = "completed",
) -> None:
    """A run written through lib.store: lanes, levels and requests whose answers carry
    the real quality checks (the runner's call), so flags are what a run would give."""
    texts = seed_answers() if texts is None else texts
    prompts = prompts or [KO_PROMPT]
    errors = errors or {}
    levels = sorted({c for (_, c, _) in [*texts, *errors]})
    lanes = [
        LaneSpec(engine=e, base_url=u, model=m, name=n)  # type: ignore[arg-type]
        for (e, u, m), n in zip(LANES, NAMES, strict=True)
    ]
    json_prompts = [
        Prompt.from_text(p, expect_lang="ko", expect_json=["title", "content"]) for p in prompts
    ]
    config = RunConfig(
        lanes=lanes,
        prompts=json_prompts,
        concurrency=levels,
        requests=5,
        sampling=Sampling(max_tokens=256, seed=7),
        label="seed: Ollama Q4 vs vLLM AWQ",
    )
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), label=config.label, status=status)
        for i, ((engine, url, model), name) in enumerate(zip(LANES, NAMES, strict=True)):
            store.add_lane(conn, run_id, i, name, engine, url, model, {"kind": engine}, {})
        rows = []
        for (lane, c, idx), text in sorted({**texts, **dict.fromkeys(errors, "")}.items()):
            prompt = config.prompts[idx % len(config.prompts)]
            error = errors.get((lane, c, idx))
            rows.append(
                {
                    "run_id": run_id,
                    "lane_idx": lane,
                    "concurrency": c,
                    "idx": idx,
                    "prompt_idx": idx % len(config.prompts),
                    "t_send": 1000.0 + idx,
                    "t_done": 1002.0 + idx,
                    "ttft_ms": 120.0,
                    "e2el_ms": 2000.0,
                    "output_tokens": None if error else 60,
                    "output_text": text,
                    "finish_reason": None if error else "stop",
                    "error": error,
                    "quality": None
                    if error
                    else quality.check_answer(
                        text,
                        expect_lang=prompt.expect_lang,
                        expect_json=prompt.expect_json,
                        finish_reason="stop",
                    ),
                }
            )
        store.add_requests(conn, rows)
        for lane in (0, 1):
            for c in levels:
                store.set_level(conn, run_id, lane, c, "completed", 1000.0, 1010.0)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "store.db"
    make_run(path)
    return path


@pytest.fixture
def data(db):
    loaded = review.load_review(db, "seed")
    assert loaded is not None
    return loaded


# --- loading and pairing -----------------------------------------------------------------


def test_load_review_reads_lanes_prompts_levels_and_answers(db, data):
    assert data.lanes == {0: NAMES[0], 1: NAMES[1]}
    assert data.levels == [1, 5]
    assert [p.text for p in data.prompts] == [KO_PROMPT]
    assert data.prompts[0].expect_json == ["title", "content"]
    assert len(data.answers) == 20
    assert data.answers[(1, 5, 0)].text == ZH_JSON
    assert review.load_review(db, "nope") is None


def test_pairs_by_request_index_with_send_numbers(data):
    items = review.pairs(data, 0, 1, concurrency=5)
    assert [p.idx for p in items] == [0, 1, 2, 3, 4]
    assert [(p.send, p.sends) for p in items] == [(k, 5) for k in range(1, 6)]
    assert all(p.a.lane_idx == 0 and p.b.lane_idx == 1 for p in items)
    assert all(p.a.idx == p.b.idx == p.idx for p in items)
    assert items[3].a.text == ZH_JSON and items[4].b.text == KO_JSON
    assert items[0].key == "c5-r0"

    every = review.pairs(data, 0, 1)
    assert [(p.concurrency, p.idx) for p in every][:6] == [(1, i) for i in range(5)] + [(5, 0)]
    assert len(every) == 10
    first = review.pairs(data, 0, 1, sends="first")
    assert [(p.concurrency, p.idx, p.send, p.sends) for p in first] == [(1, 0, 1, 5), (5, 0, 1, 5)]


def test_pairs_follow_the_page_lane_order_and_group_by_prompt(tmp_path):
    texts = {(lane, 2, idx): f"{lane}-{idx}" for lane in (0, 1) for idx in range(5)}
    make_run(tmp_path / "s.db", "two", texts=texts, prompts=[KO_PROMPT, "두 번째 질문입니다."])
    data = review.load_review(tmp_path / "s.db", "two")
    items = review.pairs(data, 1, 0)  # lane B picked first on the page
    # prompt 0 went out as requests 0, 2, 4 and prompt 1 as 1, 3
    assert [(p.prompt_idx, p.idx, p.send, p.sends) for p in items] == [
        (0, 0, 1, 3),
        (0, 2, 2, 3),
        (0, 4, 3, 3),
        (1, 1, 1, 2),
        (1, 3, 2, 2),
    ]
    assert items[0].a.text == "1-0" and items[0].b.text == "0-0"
    assert items[0].answer(0).text == "0-0"
    assert review.prompt_of(data, 1).text == "두 번째 질문입니다."
    assert review.prompt_of(data, 9).text == ""


def test_a_missing_or_failed_side_is_kept_and_flagged(tmp_path):
    texts = {(0, 1, 0): KO_JSON, (0, 1, 1): KO_JSON, (1, 1, 0): KO_JSON}
    make_run(tmp_path / "s.db", "gap", texts=texts, errors={(1, 1, 2): "HTTP 503"})
    data = review.load_review(tmp_path / "s.db", "gap")
    items = review.pairs(data, 0, 1)
    assert [(p.idx, p.a is not None, p.b is not None) for p in items] == [
        (0, True, True),
        (1, True, False),
        (2, False, True),
    ]
    assert review.flag_codes(items[1].b) == ["missing"]
    assert review.flag_codes(items[2].b) == ["error"]
    assert [b.label for b in review.badges(items[2].b)] == ["failed"]
    assert review.badges(items[2].b)[0].reason == "HTTP 503"
    pool, left_out = review.blind_pool(items)
    assert [p.idx for p in pool] == [0] and left_out == 2


# --- badges, filters, summaries ---------------------------------------------------------------


def test_badges_name_the_flag_and_the_language(data):
    drifted, broken, clean = (
        data.answers[(1, 5, 0)],
        data.answers[(1, 1, 2)],
        data.answers[(0, 1, 0)],
    )
    assert [(b.label, b.color) for b in review.badges(drifted)] == [
        ("lang drift → Chinese", "red"),
        ("JSON ok", "green"),
    ]
    assert "Chinese" in review.badges(drifted)[0].reason
    assert [b.label for b in review.badges(broken)] == ["JSON invalid", "Korean"]
    assert [b.label for b in review.badges(clean)] == ["Korean", "JSON ok", "no flags"]
    assert [b.label for b in review.badges(None)] == ["no answer"]


def test_badges_for_truncated_and_unchecked_answers():
    q = quality.check_answer(KO_JSON, expect_lang="ko", finish_reason="length")
    truncated = review.Answer(1, 0, 1, 0, 0, KO_JSON, quality=q)
    assert [b.label for b in review.badges(truncated)] == ["truncated", "Korean"]
    unchecked = review.Answer(2, 0, 1, 0, 0, "hello", quality=None)
    assert [b.label for b in review.badges(unchecked)] == ["not checked"]


def test_filters_flagged_and_disagree(data):
    items = review.pairs(data, 0, 1)
    assert len(review.filter_pairs(items, "all")) == 10
    flagged = review.filter_pairs(items, "flagged")
    # c=1: r2 (vLLM broken JSON); c=5: r0-r3 (vLLM Chinese; Ollama r3 Chinese too)
    assert [p.key for p in flagged] == ["c1-r2", "c5-r0", "c5-r1", "c5-r2", "c5-r3"]
    disagreeing = review.filter_pairs(items, "disagree")
    # c5-r3: both drifted to Chinese, both valid JSON -> they agree
    assert [p.key for p in disagreeing] == ["c1-r2", "c5-r0", "c5-r1", "c5-r2"]


def test_disagree_on_language_or_json_alone():
    def ans(lang: str, valid: bool | None, flags: list[str]) -> review.Answer:
        q = {
            "lang": {"detected": lang},
            "json_valid": valid,
            "flags": [{"code": c, "reason": "r"} for c in flags],
        }
        return review.Answer(0, 0, 1, 0, 0, "x", quality=q)

    def pair(a: review.Answer, b: review.Answer) -> review.Pair:
        return review.Pair(1, 0, 0, 1, 1, 0, 1, a, b)

    assert review.disagree(pair(ans("ko", None, []), ans("en", None, [])))  # language only
    assert review.disagree(pair(ans("ko", True, ["truncated"]), ans("ko", False, ["truncated"])))
    assert not review.disagree(
        pair(ans("ko", True, ["truncated"]), ans("ko", True, ["repetition"]))
    )
    assert not review.disagree(pair(ans("ko", True, []), ans("ko", True, [])))


def test_lane_summaries_say_who_drifted(data):
    at5 = {s.name: s for s in review.lane_summaries(data, 5)}
    assert at5[NAMES[1]].line == "4/5 drifted to Chinese · 0 JSON invalid"
    assert at5[NAMES[0]].line == "1/5 drifted to Chinese · 0 JSON invalid"
    assert (at5[NAMES[1]].answers, at5[NAMES[1]].flagged) == (5, 4)
    every = {s.name: s for s in review.lane_summaries(data)}
    assert every[NAMES[1]].line == "4/10 drifted to Chinese · 1 JSON invalid"


# --- diff ---------------------------------------------------------------------------------


def test_diff_is_per_sentence_and_empty_when_equal():
    assert review.answer_diff(KO_JSON, KO_JSON) == ""
    a = "첫 문장입니다. 둘째 문장입니다. 셋째 문장입니다."
    b = "첫 문장입니다. 둘째 문장이 다릅니다. 셋째 문장입니다."
    diff = review.answer_diff(a, b, "ollama", "vllm").splitlines()
    assert diff[:2] == ["--- ollama", "+++ vllm"]
    assert "-둘째 문장입니다." in diff and "+둘째 문장이 다릅니다." in diff
    assert " 첫 문장입니다." in diff and " 셋째 문장입니다." in diff
    # Chinese has no space after 。: it still splits per sentence
    zh = review.answer_diff("一句话。两句话。", "一句话。三句话。").splitlines()
    assert "-两句话。" in zh and "+三句话。" in zh and " 一句话。" in zh


def test_diff_keeps_markup_as_literal_text():
    diff = review.answer_diff("<script>alert(1)</script>", "안전한 답")
    assert "-<script>alert(1)</script>" in diff.splitlines()


# --- blind mode ---------------------------------------------------------------------------


def _pairs(n: int) -> list[review.Pair]:
    return [review.Pair(4, i, i % 3, 1, 1, 0, 1, None, None) for i in range(n)]


def test_blind_sides_are_deterministic_and_independent_of_page_order():
    items = _pairs(50)
    first = [review.left_lane("run1", p, "kim") for p in items]
    assert first == [review.left_lane("run1", p, "kim") for p in items]  # a rerun
    swapped = [review.Pair(4, i, i % 3, 1, 1, 1, 0, None, None) for i in range(50)]
    assert first == [review.left_lane("run1", p, "kim") for p in swapped]
    assert first != [review.left_lane("run1", p, "lee") for p in items]  # per voter
    assert first != [review.left_lane("run2", p, "kim") for p in items]  # per run
    left, right = review.sides("run1", items[0], "kim")
    assert {left, right} == {0, 1}


def test_blind_sides_are_balanced():
    for run_id in ("run1", "a3f9", "seed"):
        share = sum(review.left_lane(run_id, p) == 0 for p in _pairs(400)) / 400
        assert 0.42 <= share <= 0.58, (run_id, share)


def test_blind_order_is_a_stable_shuffle():
    items = _pairs(30)
    order = [p.key for p in review.blind_order("run1", items, "kim")]
    assert sorted(order) == sorted(p.key for p in items)
    assert order != [p.key for p in items]
    assert order == [p.key for p in review.blind_order("run1", list(reversed(items)), "kim")]


def test_side_choice_becomes_a_vote_for_the_real_lane():
    p = review.Pair(4, 0, 0, 1, 1, 0, 1, None, None)
    assert review.vote_for_side("left", 0, p) == ("A", 0, 1)
    assert review.vote_for_side("left", 1, p) == ("B", 0, 1)
    assert review.vote_for_side("right", 1, p) == ("A", 0, 1)
    assert review.vote_for_side("tie", 1, p) == ("tie", 0, 1)
    q = review.Pair(4, 0, 0, 1, 1, 2, 0, None, None)  # page order B-first
    assert review.vote_for_side("right", 2, q) == ("A", 0, 2)
    with pytest.raises(ValueError):
        review.vote_for_side("A", 0, p)


# --- votes in the store ---------------------------------------------------------------------


def test_vote_round_trip_replace_and_delete(db, data):
    item = review.pairs(data, 0, 1, concurrency=5)[0]
    left = review.left_lane("seed", item, "kim")
    vote_id = review.record_vote(db, "seed", item, "left", voter="kim")
    with store.opened(db) as conn:
        (vote,) = store.get_votes(conn, "seed")
    assert vote["id"] == vote_id
    assert (vote["concurrency"], vote["req_idx"], vote["prompt_idx"]) == (5, 0, 0)
    assert (vote["lane_a"], vote["lane_b"], vote["left_lane"]) == (0, 1, left)
    assert vote["request_a"] == item.a.request_id and vote["request_b"] == item.b.request_id
    assert review.winner_lane(vote) == left
    assert vote["voter"] == "kim" and vote["created_at"] > 0

    # the same voter again on the same pair (lanes picked the other way round): replaced
    swapped = review.pairs(data, 1, 0, concurrency=5)[0]
    assert review.record_vote(db, "seed", swapped, "both_bad", voter="kim") == vote_id
    review.record_vote(db, "seed", item, "tie")  # anonymous: a second row
    with store.opened(db) as conn:
        votes = store.get_votes(conn, "seed")
        assert [(v["vote"], v["voter"]) for v in votes] == [("both_bad", "kim"), ("tie", "")]
        assert [v["vote"] for v in store.get_votes(conn, "seed", voter="kim")] == ["both_bad"]
        mine = review.my_votes(votes, 1, 0, "kim")
        assert list(mine) == ["c5-r0"] and mine["c5-r0"]["vote"] == "both_bad"
        assert store.delete_votes(conn, "seed", voter="kim") == 1
        assert store.delete_votes(conn, "seed", vote_id=votes[1]["id"]) == 1
        assert store.get_votes(conn, "seed") == []


def test_add_vote_flips_a_descending_lane_pair(tmp_path):
    with store.opened(tmp_path / "s.db") as conn:
        store.create_run(conn, "r", {})
        store.add_vote(
            conn, "r", concurrency=1, req_idx=3, prompt_idx=0, lane_a=2, lane_b=0,
            left_lane=2, vote="A", request_a=20, request_b=10,
        )  # fmt: skip
        (v,) = store.get_votes(conn, "r")
        assert (v["lane_a"], v["lane_b"], v["vote"]) == (0, 2, "B")
        assert (v["request_a"], v["request_b"], v["left_lane"]) == (10, 20, 2)
        with pytest.raises(sqlite3.IntegrityError):  # only the four verdicts
            store.add_vote(
                conn, "r", concurrency=1, req_idx=4, prompt_idx=0, lane_a=0, lane_b=1,
                left_lane=0, vote="left",
            )  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError):  # the left lane is one of the pair
            store.add_vote(
                conn, "r", concurrency=1, req_idx=4, prompt_idx=0, lane_a=0, lane_b=1,
                left_lane=5, vote="A",
            )  # fmt: skip


def test_votes_go_with_their_run(db, data):
    review.record_vote(db, "seed", review.pairs(data, 0, 1)[0], "left")
    with store.opened(db) as conn:
        assert store.delete_run(conn, "seed")
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0


def test_migration_3_on_a_schema_2_store_keeps_runs_and_takes_votes(tmp_path):
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.executescript(store.MIGRATIONS[0])
    raw.executescript(store.MIGRATIONS[1])
    raw.execute("PRAGMA user_version = 2")
    raw.execute(
        "INSERT INTO runs (run_id, created_at, config_json, cancel_requested)"
        " VALUES ('old', 1.0, '{}', 5.0)"
    )
    raw.commit()
    assert "votes" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    with store.opened(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION >= 3
        assert store.get_run(conn, "old")["cancel_requested"] == 5.0
        store.add_vote(
            conn, "old", concurrency=1, req_idx=0, prompt_idx=0, lane_a=0, lane_b=1,
            left_lane=1, vote="tie", voter="kim",
        )  # fmt: skip
        assert [v["vote"] for v in store.get_votes(conn, "old")] == ["tie"]


# --- win rates ------------------------------------------------------------------------------


def test_wilson_interval_hand_computed():
    # p = 0.5, n = 10: centre 0.5, half-width 1.96/1.3841 * sqrt(0.025 + 0.0096) = 0.2634
    low, high = review.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    # 10 of 10: centre (1 + 0.1921)/1.3841 = 0.8613, half 1.4160 * 0.0980 = 0.1388
    low, high = review.wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0)
    low, high = review.wilson_interval(0, 10)
    assert low == pytest.approx(0.0) and high == pytest.approx(0.2775, abs=1e-4)
    # 8 of 20 (p = 0.4): the textbook 0.2188 .. 0.6134
    low, high = review.wilson_interval(8, 20)
    assert low == pytest.approx(0.2188, abs=1e-4) and high == pytest.approx(0.6134, abs=1e-4)
    assert review.wilson_interval(0, 0) is None


def test_win_rates_count_ties_as_half_and_leave_both_bad_out():
    votes = [
        {"lane_a": 0, "lane_b": 1, "vote": v, "concurrency": c}
        for v, c in [("A", 1), ("A", 5), ("A", 5), ("B", 5), ("tie", 5), ("both_bad", 5)]
    ]
    rows = {r["lane"]: r for r in review.win_rates(votes, {0: "ollama", 1: "vllm"})}
    o, v = rows["ollama"], rows["vllm"]
    assert (o["wins"], o["losses"], o["ties"], o["both_bad"], o["votes"]) == (3, 1, 1, 1, 6)
    assert o["win_rate"] == pytest.approx(3.5 / 5) and v["win_rate"] == pytest.approx(1.5 / 5)
    low, high = review.wilson_interval(3.5, 5)
    assert (o["ci_low"], o["ci_high"]) == (low, high) and low < 0.7 < high
    at1 = {r["lane"]: r for r in review.win_rates(votes, {0: "ollama", 1: "vllm"}, 1)}
    assert (at1["ollama"]["wins"], at1["vllm"]["losses"]) == (1, 1)
    none = review.win_rates([], {0: "ollama"})
    assert none[0]["win_rate"] is None and none[0]["ci_low"] is None
    assert review.win_rate_figure(rows.values(), {"ollama": "#0072B2"}).data


# --- export ---------------------------------------------------------------------------------


def test_votes_export_and_csv(db, data):
    items = {p.key: p for p in review.pairs(data, 0, 1)}
    review.record_vote(db, "seed", items["c5-r0"], "left", voter="=cmd|' /C calc'!A0")
    review.record_vote(db, "seed", items["c1-r0"], "tie")
    rows = review.votes_export(db, "seed")
    assert [r["request_index"] for r in rows] == [0, 0]
    first = rows[0]
    assert set(first) == set(review.EXPORT_FIELDS)
    left = review.left_lane("seed", items["c5-r0"], "=cmd|' /C calc'!A0")
    assert first["left"] == NAMES[left] and first["right"] == NAMES[1 - left]
    assert first["winner"] == NAMES[left] and first["vote"] == ("A" if left == 0 else "B")
    assert (first["lane_a"], first["lane_b"]) == (NAMES[0], NAMES[1])
    assert first["lane_a_flags"] == "" and first["lane_b_flags"] == "lang_drift"
    assert first["prompt"] == KO_PROMPT and first["concurrency"] == 5
    assert rows[1]["winner"] == "tie"
    parsed = list(csv.DictReader(io.StringIO(review.votes_csv(rows))))
    assert len(parsed) == 2 and parsed[0]["prompt"] == KO_PROMPT
    assert parsed[0]["voter"] == "'=cmd|' /C calc'!A0"  # no formula in a spreadsheet
    assert review.votes_export(db, "nope") == []


def test_page_count():
    assert [review.page_count(n) for n in (0, 1, 10, 11, 40)] == [1, 1, 1, 2, 4]


def test_votes_travel_with_the_run_document(db, data):
    from lib.analysis import results

    assert "votes" not in results.run_document(db, "seed")  # none cast yet
    item = review.pairs(data, 0, 1, concurrency=5)[0]
    review.record_vote(db, "seed", item, "left", voter="kim")
    (vote,) = results.run_document(db, "seed")["votes"]
    assert vote == review.votes_export(db, "seed")[0]
    assert vote["voter"] == "kim" and vote["run_id"] == "seed"
