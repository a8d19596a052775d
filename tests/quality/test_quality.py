"""Answer-quality checks: agreement with hand-labelled answers, and each check on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.quality import (
    FLAG_CODES,
    check_answer,
    check_json,
    check_repetition,
    detect_language,
    drift_summary,
    normalize_lang,
    parse_keys,
    run_quality_cli,
    strip_reasoning,
    summarize_flags,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
NEWS = ["title", "content"]


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text("utf-8").splitlines()]


def _check(row: dict) -> dict:
    return check_answer(
        row["text"],
        expect_lang=row["expect_lang"],
        expect_json=row.get("expect_json"),
        finish_reason=row.get("finish_reason"),
        output_tokens=row.get("output_tokens"),
        max_tokens=row.get("max_tokens"),
    )


def _agrees(row: dict, result: dict) -> bool:
    codes = sorted({flag["code"] for flag in result["flags"]})
    return (
        result["lang_drift"] == row["drift"]
        and result["json_valid"] == row.get("json_valid")
        and codes == row["flags"]
    )


def _codes(result: dict) -> set[str]:
    return {flag["code"] for flag in result["flags"]}


# --- the labelled sets ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quality_labelled.jsonl", "quality_heldout.jsonl"])
def test_agreement_with_labelled_answers(name: str) -> None:
    rows = _load(name)
    mismatches = [row["id"] for row in rows if not _agrees(row, _check(row))]
    agreement = 1 - len(mismatches) / len(rows)
    assert agreement >= 0.95, f"{agreement:.1%} agreement; mismatches: {mismatches}"


def test_labelled_set_covers_the_cases_that_matter() -> None:
    rows = _load("quality_labelled.jsonl")
    assert len(rows) >= 60
    categories = {row["category"] for row in rows}
    for needed in ("ko_plain", "ko_zh", "ko_zh_mid", "ko_hanja", "ko_terms", "ko_zh_json"):
        assert needed in categories
    for needed in ("ja", "zh", "en", "ko_code", "mixed"):
        assert needed in categories
    assert sum(row["drift"] for row in rows) >= 20
    assert sum(not row["drift"] for row in rows) >= 30
    assert all(set(row["flags"]) <= set(FLAG_CODES) for row in rows)


def test_labelled_drift_agrees_on_every_answer_of_the_seed_kind() -> None:
    # Korean answers to the team's news prompt, clean or drifted to Chinese, are the
    # case servescope exists for: no miss there.
    rows = [r for r in _load("quality_labelled.jsonl") if r["category"].startswith("ko_")]
    assert len(rows) >= 30
    assert [r["id"] for r in rows if _check(r)["lang_drift"] != r["drift"]] == []


# --- result shape ---------------------------------------------------------------------------


def test_result_has_exactly_the_documented_shape() -> None:
    result = check_answer("안녕하세요.", expect_lang="ko")
    assert set(result) == {"lang_drift", "lang", "json_valid", "flags"}
    assert set(result["lang"]) == {"expected", "detected", "shares", "drifted_sentences"}
    assert set(result["lang"]["shares"]) == {"hangul", "han", "kana", "latin"}
    assert result["json_valid"] is None
    assert result["flags"] == []
    json.dumps(result)  # goes to the store and the CLI as JSON


def test_every_flag_has_a_known_code_and_a_reason() -> None:
    text = "<think>생각</think>" + "好的。" * 30
    result = check_answer(text, expect_lang="ko", expect_json=NEWS, finish_reason="length")
    assert _codes(result) == {
        "reasoning_leak",
        "lang_drift",
        "json_invalid",
        "truncated",
        "repetition",
    }
    for flag in result["flags"]:
        assert flag["code"] in FLAG_CODES
        assert flag["reason"] and "\n" not in flag["reason"]


# --- language ----------------------------------------------------------------------------------


def test_reference_example_han_share() -> None:
    # shared/reference/engine_apis.md §6: han share 0.72, drift.
    result = check_answer("안녕하세요! 我很高兴见到你，今天天气很好。", expect_lang="ko")
    assert result["lang"]["shares"]["han"] == pytest.approx(0.72, abs=0.01)
    assert result["lang_drift"] is True
    assert result["lang"]["detected"] == "zh"
    assert result["flags"][0]["reason"] == (
        "answer is mostly Chinese (han 72%) for a Korean prompt"
    )


def test_pure_korean_has_no_han() -> None:
    result = check_answer("오늘은 날씨가 정말 좋네요. 산책하러 가요.", expect_lang="ko")
    assert result["lang"]["shares"]["han"] == 0.0
    assert result["lang"]["detected"] == "ko"
    assert result["lang_drift"] is False


@pytest.mark.parametrize(
    "text",
    [
        "대한민국(大韓民國)은 동아시아에 있다.",
        "훈민정음 (訓民正音)은 세종대왕(世宗大王)이 만들었다.",
        "一石二鳥(일석이조)는 한 번에 두 가지 이익을 얻는다는 뜻입니다.",
        "'知彼知己 百戰不殆'라는 말은 손자병법에 나옵니다.",
    ],
)
def test_hanja_glosses_and_quotes_are_not_drift(text: str) -> None:
    assert check_answer(text, expect_lang="ko")["lang_drift"] is False


def test_english_terms_inside_korean_are_not_drift() -> None:
    text = "자연어 처리(NLP)와 API 설계에서 AI 모델의 latency와 throughput을 함께 봐야 합니다."
    result = check_answer(text, expect_lang="ko")
    assert result["lang_drift"] is False
    assert result["lang"]["detected"] == "ko"


def test_code_blocks_and_inline_code_are_not_drift() -> None:
    text = (
        "아래 코드를 실행하세요.\n\n```python\n# 解析JSON字符串并检查字段\n"
        "data = json.loads(s)\n```\n"
        "`字段检查` 함수는 필요 없습니다."
    )
    assert check_answer(text, expect_lang="ko")["lang_drift"] is False


def test_json_keys_do_not_count_but_drifted_values_do() -> None:
    korean = '{"title": "AI 기술 동향", "content": "인공지능 기술이 빠르게 발전하고 있다."}'
    chinese = '{"title": "人工智能技术的发展", "content": "人工智能技术正在改变各行各业。"}'
    ok = check_answer(korean, expect_lang="ko", expect_json=NEWS)
    assert ok["lang"]["shares"]["latin"] == pytest.approx(2 / 22, abs=0.001)  # "AI" only
    assert ok["lang_drift"] is False
    assert ok["json_valid"] is True
    drifted = check_answer(chinese, expect_lang="ko", expect_json=NEWS)
    assert drifted["lang_drift"] is True
    assert drifted["json_valid"] is True  # well-formed JSON, wrong language


def test_unparseable_json_keys_do_not_count() -> None:
    # The seed log's excerpt: key/value lines without braces.
    text = '"title": "AI 기술의 미래",\n"content": "인공지능이 산업을 바꾸고 있다."'
    result = check_answer(text, expect_lang="ko")
    assert result["lang"]["shares"]["latin"] == pytest.approx(2 / 19, abs=0.01)


def test_mid_answer_drift_is_caught_per_sentence() -> None:
    text = (
        "인공지능 기술은 최근 몇 년 사이 크게 발전했습니다. 기업들은 고객 상담과 문서 처리에 "
        "AI를 적극 도입하고 있습니다. 앞으로도 이 흐름은 계속될 것입니다. "
        "然而，人工智能的发展也带来了隐私问题。"
    )
    result = check_answer(text, expect_lang="ko")
    assert result["lang"]["shares"]["han"] < 0.3  # the overall share alone would miss it
    assert result["lang_drift"] is True
    assert result["lang"]["drifted_sentences"] == 1
    assert result["flags"][0]["reason"].startswith("1 of 4 sentences drifted to Chinese")


def test_sentence_that_turns_chinese_halfway() -> None:
    text = "AI 기술은 여러 산업에서 활용되고 있으며, 特别是在医疗和金融领域发挥着重要作用。"
    assert check_answer(text, expect_lang="ko")["lang_drift"] is True


def test_chinese_words_sprinkled_into_korean() -> None:
    text = "최근 인공지능 技术의 발전은 社会 전반에 큰 影响을 미치고 있습니다."
    assert check_answer(text, expect_lang="ko")["lang_drift"] is True


def test_full_width_punctuation_is_a_signal() -> None:
    without = check_answer("네 알겠습니다. 好的", expect_lang="ko")
    with_punct = check_answer("네 알겠습니다. 好的。", expect_lang="ko")
    assert without["lang_drift"] is False
    assert with_punct["lang_drift"] is True


def test_japanese_with_kanji_is_japanese_and_not_chinese() -> None:
    text = "日本銀行は金融政策決定会合で、短期金利の誘導目標を引き上げることを決定した。"
    result = check_answer(text, expect_lang="ja")
    assert result["lang"]["detected"] == "ja"
    assert result["lang_drift"] is False


def test_chinese_answer_to_japanese_prompt_is_drift() -> None:
    text = "东京是日本的首都，也是全国政治、经济和文化的中心。"
    result = check_answer(text, expect_lang="ja")
    assert result["lang_drift"] is True
    assert result["lang"]["detected"] == "zh"


def test_chinese_answer_to_chinese_prompt_is_fine() -> None:
    text = "人工智能是计算机科学的一个分支，致力于让机器具备学习和推理的能力。"
    result = check_answer(text, expect_lang="zh")
    assert result["lang_drift"] is False
    assert result["lang"]["detected"] == "zh"


def test_korean_prompt_answered_in_japanese_or_english() -> None:
    ja = check_answer("人工知能の技術は近年めざましい進歩を遂げています。", expect_lang="ko")
    en = check_answer("AI is transforming the way businesses operate every day.", expect_lang="ko")
    assert (ja["lang_drift"], ja["lang"]["detected"]) == (True, "ja")
    assert (en["lang_drift"], en["lang"]["detected"]) == (True, "en")


def test_english_answer_with_chinese_tail() -> None:
    text = "Quantization cuts memory use by four. 但是，量化也可能导致模型输出质量下降。"
    assert check_answer(text, expect_lang="en")["lang_drift"] is True
    names = "Seoul (서울), Beijing (北京) and Tokyo (東京) are capitals."
    assert check_answer(names, expect_lang="en")["lang_drift"] is False


def test_expected_language_comes_from_the_prompt_when_not_given() -> None:
    answer = "人工智能技术正在快速发展。"
    from_prompt = check_answer(answer, prompt_text="AI 기술에 대한 기사를 써 주세요.")
    assert from_prompt["lang"]["expected"] == "ko"
    assert from_prompt["lang_drift"] is True
    unknown = check_answer(answer)
    assert unknown["lang"]["expected"] is None
    assert unknown["lang_drift"] is False
    assert unknown["lang"]["detected"] == "zh"
    given = check_answer(answer, expect_lang="zh", prompt_text="AI 기술에 대한 기사")
    assert given["lang_drift"] is False  # expect_lang wins over the prompt


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("인공지능 기술에 관한 기사를 써 주세요.", "ko"),
        ("東京の天気はどうですか?", "ja"),
        ("请写一篇关于人工智能的新闻。", "zh"),
        ("Write a short news article about AI.", "en"),
        ("API와 SDK의 차이를 설명해 주세요.", "ko"),
        ("1234 !!!", None),
        ("", None),
    ],
)
def test_detect_language(text: str, lang: str | None) -> None:
    assert detect_language(text) == lang


def test_normalize_lang() -> None:
    assert normalize_lang("ko-KR") == "ko"
    assert normalize_lang("ZH_cn") == "zh"
    assert normalize_lang(" ") is None
    assert normalize_lang(None) is None
    with pytest.raises(ValueError, match="unsupported language 'fr'"):
        normalize_lang("fr")


# --- JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"title": "제목", "content": "본문"}',
        '```json\n{"title": "제목", "content": "본문"}\n```',
        '```\n{"title": "제목", "content": "본문"}\n```',
        '  \n```JSON\n{"title": "제목", "content": "본문", "tags": ["AI"]}\n```\n',
    ],
)
def test_json_valid_forms(text: str) -> None:
    value, flags = check_json(text, NEWS)
    assert flags == []
    assert value["title"] == "제목"


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ('{"title": "제목", "content": "본문",}', "json_invalid", "not valid JSON"),
        ('다음과 같습니다.\n{"title": "a", "content": "b"}', "json_invalid", "wrapped in other"),
        ('[{"title": "a", "content": "b"}]', "json_invalid", "JSON is a list"),
        ('{"title": "a"}', "json_missing_keys", "missing key: content"),
        ("{}", "json_missing_keys", "missing keys: title, content"),
        ('{"title": "a", "content": "  "}', "json_empty_value", "'content' is empty"),
        ('{"title": "a", "content": ["b"]}', "json_empty_value", "holds a list"),
    ],
)
def test_json_problems(text: str, code: str, reason: str) -> None:
    result = check_answer(text, expect_json=NEWS)
    assert result["json_valid"] is False
    assert code in _codes(result)
    assert any(reason in flag["reason"] for flag in result["flags"])


def test_json_with_no_required_keys_accepts_any_json() -> None:
    assert check_answer("[1, 2, 3]", expect_json=[])["json_valid"] is True
    assert check_answer("그냥 텍스트", expect_json=[])["json_valid"] is False


def test_json_not_expected_gives_none() -> None:
    assert check_answer("{not json", expect_lang="en")["json_valid"] is None


def test_parse_keys() -> None:
    assert parse_keys("title, content") == ["title", "content"]
    assert parse_keys("title,,") == ["title"]
    assert parse_keys("") is None
    assert parse_keys(None) is None


# --- reasoning, empty, truncated -------------------------------------------------------------


def test_reasoning_block_is_flagged_and_not_judged_for_language() -> None:
    text = "<think>\n用户要求用韩语写新闻。\n</think>\n\n인공지능 기술이 발전하고 있습니다."
    result = check_answer(text, expect_lang="ko")
    assert _codes(result) == {"reasoning_leak"}
    assert strip_reasoning(text) == ("\n\n인공지능 기술이 발전하고 있습니다.", True)


def test_reasoning_with_only_a_closing_tag_or_only_an_opening_tag() -> None:
    closing = "The user asks X.\n</think>\nAnswer."
    assert strip_reasoning(closing) == ("\nAnswer.", True)
    opening = "Answer first. <thinking>and then more thoughts"
    assert strip_reasoning(opening) == ("Answer first. ", True)
    assert strip_reasoning("no tags here") == ("no tags here", False)
    assert strip_reasoning("A <think>x</think> B </think> C") == (" C", True)
    assert strip_reasoning("a<think>b<think>c</think>d") == ("ad", True)


def test_only_reasoning_means_empty() -> None:
    result = check_answer("<think>still thinking", expect_lang="en")
    assert _codes(result) == {"reasoning_leak", "empty"}
    assert "no answer after the reasoning" in result["flags"][1]["reason"]


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_answer(text: str) -> None:
    result = check_answer(text, expect_lang="ko")
    assert _codes(result) == {"empty"}
    assert result["lang_drift"] is False


def test_truncated_by_finish_reason_or_token_count() -> None:
    assert "truncated" in _codes(check_answer("abc", finish_reason="length"))
    hit = check_answer("abc", finish_reason="stop", output_tokens=128, max_tokens=128)
    assert hit["flags"] == [{"code": "truncated", "reason": "stopped at max tokens (128 of 128)"}]
    assert (
        _codes(check_answer("abc", finish_reason="stop", output_tokens=90, max_tokens=128)) == set()
    )
    assert _codes(check_answer("abc", output_tokens=128)) == set()  # no limit known


# --- repetition ---------------------------------------------------------------------------------


def test_repeated_sentence() -> None:
    text = "인공지능 기술은 빠르게 발전하고 있습니다. " * 4
    flag = check_repetition(text)
    assert flag is not None and flag["code"] == "repetition"


def test_loop_at_the_end() -> None:
    flag = check_repetition("Here is the answer: " + "and then " * 12)
    assert flag is not None and "ends in a loop" in flag["reason"]
    assert check_repetition("결과는 다음과 같습니다 " + "的" * 50) is not None


def test_loop_inside_a_long_line_that_then_stops() -> None:
    text = "서론입니다. " + "좋아요 정말 좋아요 " * 30 + "\n마지막 문장입니다."
    assert check_repetition(text) is not None


def test_no_repetition_in_normal_text_tables_and_code() -> None:
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n" + "-" * 60
    code = "설명입니다.\n```python\n" + "print('hello world!!')\n" * 3 + "```"
    prose = "첫 문장입니다. 두 번째 문장은 다릅니다. 세 번째 문장도 다릅니다."
    assert check_repetition(table) is None
    assert check_repetition(code) is None
    assert check_repetition(prose) is None


# --- summaries and CLI -------------------------------------------------------------------------


def test_summarize_flags_counts_answers_per_code() -> None:
    results = [
        check_answer("人工智能技术正在改变世界。", expect_lang="ko"),
        check_answer("人工智能技术正在改变世界。", expect_lang="ko", finish_reason="length"),
        check_answer("", expect_lang="ko"),
        check_answer("인공지능 기술입니다.", expect_lang="ko"),
    ]
    counts = summarize_flags(results)
    assert list(counts) == list(FLAG_CODES)
    assert counts["lang_drift"] == 2
    assert counts["truncated"] == 1
    assert counts["empty"] == 1
    assert counts["repetition"] == 0


def test_drift_summary_lines() -> None:
    zh = check_answer("人工智能技术正在改变世界。", expect_lang="ko")
    ja = check_answer("人工知能の技術は進歩しています。", expect_lang="ko")
    ok = check_answer("인공지능 기술입니다.", expect_lang="ko")
    assert drift_summary([zh, zh, zh, zh, ok]) == "4/5 drifted to Chinese"
    assert drift_summary([ok, ok]) == "0/2 drifted"
    assert drift_summary([zh, zh, ja, ok]) == "3/4 drifted (2 to Chinese, 1 to Japanese)"
    assert drift_summary([]) == "0/0 drifted"


def test_run_quality_cli_contract() -> None:
    out = run_quality_cli('{"title": "人工智能", "content": "人工智能技术。"}\n', "ko", NEWS)
    assert set(out) == {"lang_drift", "lang", "json_valid", "flags"}
    assert out["lang_drift"] is True
    assert out["json_valid"] is True
    assert json.loads(json.dumps(out, ensure_ascii=False)) == out
    with pytest.raises(ValueError, match="unsupported language"):
        run_quality_cli("text", "xx", None)


def test_json_answer_cut_off_inside_its_fence_is_judged_not_skipped_as_code():
    # vLLM bf16 serving the sandbox's real Qwen2.5-Coder-0.5B at temperature 0, stopped
    # at max tokens inside its ```json fence: the drift ("자연语言 처리, 정보检索") must be
    # found, not skipped as an unclosed code block.
    answer = (
        '```json\n{\n  "title": "AI 기술의 발전과 변화",\n  "content": "AI는 인공지능이라는 '
        "개념을 통해 컴퓨터와 인공지능을 결합하여 새로운 기술을 개발하고 사용할 수 있습니다. "
        "AI는 데이터를 처리하고 분석하는 데 도움이 됩니다. AI는 자연语言 처리, 정보检索, "
        "자동화 등 다양한 기능을 제공합니다. AI는 다양한 분야에서 활용되고 있습니다."
    )
    result = check_answer(
        answer, expect_lang="ko", expect_json=["title", "content"], finish_reason="length"
    )
    codes = [flag["code"] for flag in result["flags"]]
    assert result["lang_drift"] is True
    assert result["lang"]["detected"] == "zh"
    assert {"lang_drift", "json_invalid", "truncated"} <= set(codes)
    # A closed fence of real code stays code: nothing to judge.
    code = check_answer("```python\nprint('안녕')\n```", expect_lang="ko")
    assert code["lang_drift"] is False
