"""Prompt presets and the user's prompt files (.txt, .jsonl, .csv), with their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.core.records import Prompt
from lib.load import workloads
from lib.load.workloads import (
    MAX_FILE_BYTES,
    MAX_PROMPTS,
    PRESETS,
    WorkloadError,
    get_preset,
    load_prompt_file,
    load_prompts_from_bytes,
)
from lib.quality import detect_language

# --- presets -----------------------------------------------------------------------------------


def test_required_presets_exist_with_display_fields() -> None:
    for key in ("ko-news-json", "korean", "english", "japanese", "chinese", "mixed"):
        preset = PRESETS[key]
        assert preset.key == key
        assert preset.title and preset.description
        assert preset.prompts and all(isinstance(p, Prompt) for p in preset.prompts)


def test_team_prompt_is_the_korean_news_article_as_json() -> None:
    (prompt,) = PRESETS["ko-news-json"].prompts
    assert prompt.expect_lang == "ko"
    assert prompt.expect_json == ["title", "content"]
    assert prompt.messages == [{"role": "user", "content": prompt.text}]
    for word in ("뉴스", "기사", "JSON", '"title"', '"content"'):
        assert word in prompt.text
    assert detect_language(prompt.text) == "ko"


@pytest.mark.parametrize(
    ("key", "lang"), [("korean", "ko"), ("english", "en"), ("japanese", "ja"), ("chinese", "zh")]
)
def test_language_presets(key: str, lang: str) -> None:
    prompts = PRESETS[key].prompts
    assert len(prompts) >= 10
    assert all(p.expect_lang == lang for p in prompts)
    assert all(detect_language(p.text) == lang for p in prompts)
    lengths = sorted(len(p.text) for p in prompts)
    assert lengths[-1] >= 4 * lengths[0]  # short and long prompts
    json_prompts = [p for p in prompts if p.expect_json]
    assert len(json_prompts) >= 3
    for p in json_prompts:  # every required key is asked for in the prompt itself
        assert "JSON" in p.text
        assert all(f'"{key}"' in p.text for key in p.expect_json)
    names = [p.name for p in prompts]
    assert all(names) and len(set(names)) == len(names)


def test_mixed_preset_takes_turns_by_language() -> None:
    mixed = PRESETS["mixed"].prompts
    singles = sum(len(PRESETS[k].prompts) for k in ("korean", "english", "japanese", "chinese"))
    assert len(mixed) == singles
    assert [p.expect_lang for p in mixed[:4]] == ["ko", "en", "ja", "zh"]
    assert {p.expect_lang for p in mixed} == {"ko", "en", "ja", "zh"}


def test_get_preset_returns_a_copy_and_names_unknown_keys() -> None:
    copy = get_preset("korean")
    copy.prompts[0].messages[0]["content"] = "changed"
    assert PRESETS["korean"].prompts[0].text != "changed"
    with pytest.raises(WorkloadError, match=r"unknown preset 'nope' \(known: ko-news-json,"):
        get_preset("nope")


# --- loading files ----------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_txt_one_prompt_per_non_empty_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.txt", "첫 번째 질문\n\n  second prompt  \r\n\n三番目\n")
    prompts = load_prompt_file(path)
    assert [p.text for p in prompts] == ["첫 번째 질문", "second prompt", "三番目"]
    assert all(p.expect_lang is None and p.expect_json is None for p in prompts)


def test_jsonl_prompt_messages_and_options(tmp_path: Path) -> None:
    lines = [
        {"prompt": "뉴스 기사를 JSON으로", "expect_lang": "ko-KR", "expect_json": ["title"]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
        },
        {"prompt": "x", "expect_json": "title, content", "name": "n1", "id": 7},
    ]
    path = _write(tmp_path, "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b, c = load_prompt_file(path)
    assert (a.expect_lang, a.expect_json) == ("ko", ["title"])
    assert b.messages[0] == {"role": "system", "content": "Be brief."}
    assert b.text == "Hi"
    assert (c.expect_json, c.name) == (["title", "content"], "n1")


def test_csv_prompt_column_and_options(tmp_path: Path) -> None:
    content = (
        "\ufeffPrompt,expect_lang,expect_json\n"
        '"Hello, world",en,\n'
        '"뉴스 기사를 써 주세요",ko,"title,content"\n'
        '"두 줄\n프롬프트",,\n'
        ",,\n"
    )
    prompts = load_prompt_file(_write(tmp_path, "p.csv", content))
    assert [p.text for p in prompts] == ["Hello, world", "뉴스 기사를 써 주세요", "두 줄\n프롬프트"]
    assert [p.expect_lang for p in prompts] == ["en", "ko", None]
    assert prompts[1].expect_json == ["title", "content"]
    assert prompts[0].expect_json is None


def test_bytes_follow_the_same_rules() -> None:
    prompts = load_prompts_from_bytes("upload.txt", b"a\nb\n")
    assert [p.text for p in prompts] == ["a", "b"]
    with pytest.raises(WorkloadError, match=r"upload\.jsonl line 2: not valid JSON"):
        load_prompts_from_bytes("upload.jsonl", b'{"prompt": "a"}\n{"prompt": }\n')


# --- errors: one line, naming the file (and the line) -------------------------------------------


def _error(tmp_path: Path, name: str, content: str | bytes) -> str:
    with pytest.raises(WorkloadError) as info:
        load_prompt_file(_write(tmp_path, name, content))
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    return message


def test_workload_error_is_a_value_error() -> None:
    assert issubclass(WorkloadError, ValueError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"nothere\.txt: file not found"):
        load_prompt_file(tmp_path / "nothere.txt")
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(WorkloadError, match="not a regular file"):
        load_prompt_file(tmp_path / "d.txt")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    assert "empty, no prompts found" in _error(tmp_path, "e.txt", content)


def test_header_only_csv_has_no_prompts(tmp_path: Path) -> None:
    assert _error(tmp_path, "h.csv", "prompt,expect_lang\n").endswith("no prompts found")


def test_binary_and_non_utf8(tmp_path: Path) -> None:
    assert "NUL bytes" in _error(tmp_path, "b.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    message = _error(tmp_path, "l.txt", "first line\nsecond caf\xe9\n".encode("latin-1"))
    assert "l.txt line 2: not UTF-8 text (byte 0xe9)" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a"}\n{"prompt": "b",}\n', "line 2: not valid JSON (Expecting"),
        ('{"prompt": "a"}\n["b"]\n', "line 2: expected an object"),
        ('{"text": "a"}\n', 'line 1: needs "prompt" (text) or "messages"'),
        ('{"prompt": ""}\n', 'line 1: "prompt" must be a non-empty string'),
        ('{"prompt": "a", "messages": []}\n', "line 1: give either"),
        ('{"messages": [{"role": "bot", "content": "a"}]}\n', "line 1: message 1 has role 'bot'"),
        ('{"messages": [{"role": "system", "content": "a"}]}\n', "no non-empty user message"),
        ('{"messages": "hi"}\n', '"messages" must be a non-empty list'),
        ('{"prompt": "a", "expect_lang": "fr"}\n', "line 1: unsupported language 'fr'"),
        ('{"prompt": "a", "expect_json": [1]}\n', '"expect_json" must be a list'),
        ('{"prompt": "a", "name": 3}\n', '"name" must be a string'),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in _error(tmp_path, "p.jsonl", content)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("text,lang\nhello,en\n", "line 1: no 'prompt' column in the header (columns: text, lang)"),
        ("prompt,expect_lang\nHello, world,en\n", "line 2: 3 fields but the header has 2"),
        ("prompt,expect_lang\n,ko\n", 'line 2: "prompt" must be a non-empty string'),
        ("prompt,expect_lang\nhi,klingon\n", "line 2: unsupported language 'klingon'"),
        ('prompt\nfine\n"unclosed\nmore\n', "line 4: malformed CSV (unexpected end of data)"),
        ('prompt\n"a"b\n', "line 2: malformed CSV"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in _error(tmp_path, "p.csv", content)


def test_unknown_extension(tmp_path: Path) -> None:
    message = _error(tmp_path, "p.json", '[{"prompt": "a"}]')
    assert "unknown extension '.json' (use .txt, .jsonl, .csv)" in message
    assert "extension none" in _error(tmp_path, "prompts", "a\n")


def test_size_bound_is_stated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_FILE_BYTES == 20 * 1024 * 1024
    monkeypatch.setattr(workloads, "MAX_FILE_BYTES", 1024 * 1024)
    message = _error(tmp_path, "big.txt", "x" * (1024 * 1024 + 10))
    assert "over the 1 MB limit" in message
    with pytest.raises(WorkloadError, match=r"up\.txt: file is 1\.0 MB, over the 1 MB limit"):
        load_prompts_from_bytes("up.txt", b"y" * (1024 * 1024 + 10))


def test_prompt_count_bound_is_stated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_PROMPTS == 100_000
    monkeypatch.setattr(workloads, "MAX_PROMPTS", 3)
    assert "line 4: more than 3 prompts (the limit)" in _error(tmp_path, "n.txt", "a\nb\nc\nd\n")
    assert len(load_prompt_file(_write(tmp_path, "ok.txt", "a\nb\nc\n"))) == 3
