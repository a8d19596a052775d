"""Pure checks on model answers: language drift, JSON shape, reasoning leaks, empty,
truncated and looping answers.

Stdlib only and deterministic, so the runner, the CLI, the pages and the report can run
them on every answer for microseconds each. The script counting behind language drift
lives in lib/quality/language.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lib.quality.language import (
    CODE_BLOCK_RE,
    LANG_NAMES,
    LANGS,
    SENTENCE_RE,
    check_language,
    detect_language,
    normalize_lang,
    snippet,
)

__all__ = [
    "FLAG_CODES",
    "LANGS",
    "LANG_NAMES",
    "check_answer",
    "check_json",
    "check_language",
    "check_repetition",
    "detect_language",
    "drift_summary",
    "normalize_lang",
    "parse_keys",
    "run_quality_cli",
    "strip_reasoning",
    "summarize_flags",
]

FLAG_CODES: tuple[str, ...] = (
    "lang_drift",
    "json_invalid",
    "json_missing_keys",
    "json_empty_value",
    "reasoning_leak",
    "empty",
    "truncated",
    "repetition",
)

_JSON_KEY_RE = re.compile(r'"[^"\n]{1,60}"\s*:')  # keys of JSON that does not parse
_THINK_TAG_RE = re.compile(r"<(/?)(?:think|thinking|reasoning)>", re.I)
_JSON_FENCE_OPEN_RE = re.compile(r"\A\s*```(?:json)?[ \t]*\n", re.I)
_FENCED_RE = re.compile(r"\A\s*```[\w-]*[ \t]*\n(.*?)\n?[ \t]*```\s*\Z", re.S)
_WORD_RE = re.compile(r"\w")


def parse_keys(spec: str | None) -> list[str] | None:
    """'title, content' -> ['title', 'content']; None or blank -> None."""
    if spec is None or not spec.strip():
        return None
    return [key.strip() for key in spec.split(",") if key.strip()]


def _unfence(text: str) -> str:
    match = _FENCED_RE.match(text)
    if match:
        return match.group(1)
    # An answer cut off (max tokens) inside its ```json fence: no closing fence came, but
    # what follows the opening line is still the answer, not code to skip.
    opened = _JSON_FENCE_OPEN_RE.match(text)
    if opened and "```" not in text[opened.end() :]:
        return text[opened.end() :].strip()
    return text.strip()


def check_json(text: str, keys: list[str]) -> tuple[Any, list[dict[str, str]]]:
    """Parse an answer that must be JSON (a ``` or ```json fence is allowed around it).

    Returns the parsed value (None when it does not parse) and the flags: json_invalid,
    json_missing_keys, json_empty_value (required keys must hold non-empty strings).
    """
    body = _unfence(text)
    try:
        value = json.loads(body)
    except ValueError as exc:
        reason = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end and (start > 0 or end < len(body) - 1):
            try:
                json.loads(body[start : end + 1])
                reason = "JSON is wrapped in other text"
            except ValueError:
                pass
        return None, [{"code": "json_invalid", "reason": reason}]
    if not keys:
        return value, []
    if not isinstance(value, dict):
        kind = type(value).__name__
        reason = f"JSON is a {kind}, not an object with keys {', '.join(keys)}"
        return value, [{"code": "json_invalid", "reason": reason}]
    flags = []
    missing = [key for key in keys if key not in value]
    if missing:
        reason = f"missing key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
        flags.append({"code": "json_missing_keys", "reason": reason})
    for key in keys:
        if key in value:
            v = value[key]
            if not isinstance(v, str):
                reason = f"key {key!r} holds a {type(v).__name__}, not a string"
                flags.append({"code": "json_empty_value", "reason": reason})
            elif not v.strip():
                flags.append({"code": "json_empty_value", "reason": f"key {key!r} is empty"})
    return value, flags


def _strings(value: Any) -> list[str]:
    """String leaves of parsed JSON: the values, never the keys."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def strip_reasoning(text: str) -> tuple[str, bool]:
    """Remove <think>…</think> (also <thinking>, <reasoning>) from an answer.

    Returns the answer proper and whether reasoning leaked. A lone closing tag (the
    opening one was in the chat template) drops everything before it; a lone opening
    tag (cut off while thinking) drops everything after it.
    """
    tags = list(_THINK_TAG_RE.finditer(text))
    if not tags:
        return text, False
    # One linear pass over the tags (a regex for whole blocks goes quadratic on many
    # unclosed tags).
    kept: list[str] = []
    pos, inside = 0, False
    for tag in tags:
        if tag.group(1):  # closing tag
            if not inside:
                kept = []  # lone closing tag: everything before it was reasoning
            inside, pos = False, tag.end()
        elif not inside:
            kept.append(text[pos : tag.start()])
            inside = True
    if not inside:
        kept.append(text[pos:])
    return "".join(kept), True


def _loop_at_end(text: str) -> tuple[int, int] | None:
    """(unit length, repeats) when the text ends in a unit repeated >= 3 times, >= 40 chars."""
    text = text.rstrip()
    n = len(text)
    if n < 40:
        return None
    probe = text[-8:]
    start = max(0, n - 4000)
    pos = text.rfind(probe, start, n - 1)
    for _ in range(6):  # a few candidate periods, nearest first
        if pos < 0:
            return None
        period = n - 8 - pos
        unit = text[n - period :]
        repeats = 1
        while (
            repeats < 1000
            and n - (repeats + 1) * period >= 0
            and (text[n - (repeats + 1) * period : n - repeats * period] == unit)
        ):
            repeats += 1
        if repeats >= 3 and repeats * period >= 40 and _WORD_RE.search(unit):
            return period, repeats
        pos = text.rfind(probe, start, pos + 7)
    return None


def check_repetition(text: str) -> dict[str, str] | None:
    """A repetition flag when a sentence or line (>= 12 chars) comes >= 3 times, or the
    answer runs into a loop (a unit repeated >= 3 times, >= 40 chars in all)."""
    loop = _loop_at_end(text)
    if loop:
        period, repeats = loop
        unit = snippet(text.rstrip()[-period:])
        return {"code": "repetition", "reason": f"ends in a loop: {unit!r} × {repeats}"}
    prose = CODE_BLOCK_RE.sub("\n", text) if "```" in text else text  # code may repeat lines
    segs = [seg.strip() for seg in SENTENCE_RE.findall(prose)]
    for seg, times in Counter(segs).most_common():
        if times < 3:
            break
        if len(seg) >= 12 and _WORD_RE.search(seg):
            return {"code": "repetition", "reason": f"{snippet(seg)!r} repeated {times} times"}
    for seg in segs:
        if len(seg) >= 200 and (loop := _loop_at_end(seg)):
            unit = snippet(seg[-loop[0] :])
            return {"code": "repetition", "reason": f"loops on {unit!r} × {loop[1]}"}
    return None


def check_answer(
    text: str,
    *,
    expect_lang: str | None = None,
    prompt_text: str | None = None,
    expect_json: list[str] | None = None,
    finish_reason: str | None = None,
    output_tokens: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Run every check on one answer.

    `expect_lang` wins; else the language is detected from `prompt_text`; with neither,
    no drift is judged. `expect_json` lists required keys ([] = any JSON); None = no JSON
    expected, and then `json_valid` is None. `json_valid` is True only when the answer
    is usable as asked: it parses, and required keys hold non-empty strings.
    Returns {"lang_drift", "lang": {"expected", "detected", "shares",
    "drifted_sentences"}, "json_valid", "flags": [{"code", "reason"}]}; `detected` is
    the language drifted to when the answer drifted.
    """
    expected = normalize_lang(expect_lang)
    if expected is None and prompt_text:
        expected = detect_language(prompt_text)
    flags: list[dict[str, str]] = []
    answer, leaked = strip_reasoning(text or "")
    if leaked:
        flags.append({"code": "reasoning_leak", "reason": "<think> reasoning left in the answer"})
    if not answer.strip():
        reason = "no answer after the reasoning" if leaked else "empty answer"
        flags.append({"code": "empty", "reason": reason})
    parsed: Any = None
    json_valid: bool | None = None
    if expect_json is not None:
        if answer.strip():
            parsed, json_flags = check_json(answer, expect_json)
        else:
            json_flags = [{"code": "json_invalid", "reason": "no JSON: the answer is empty"}]
        json_valid = not json_flags
    else:
        json_flags = []
        body = answer.lstrip()
        if body.startswith(("{", "[", "```")):
            try:  # JSON nobody asked for: still judge only its values
                parsed = json.loads(_unfence(body))
            except ValueError:
                parsed = None
    if parsed is not None:
        blocks = _strings(parsed)
    else:
        # JSON that does not parse (the seed log's excerpt): drop its keys, and its quotes
        # so that values do not read as quoted examples. A JSON answer cut off inside its
        # ```json fence is judged as the answer it is, not skipped as code.
        text_block = _unfence(answer) if _JSON_FENCE_OPEN_RE.match(answer) else answer
        blocks = [
            _JSON_KEY_RE.sub(" ", text_block).replace('"', " ")
            if '":' in text_block
            else text_block
        ]
    lang, lang_flags = check_language(blocks, expected)
    flags += lang_flags + json_flags
    if finish_reason == "length":
        reason = "stopped at max tokens (finish_reason length)"
        flags.append({"code": "truncated", "reason": reason})
    elif output_tokens is not None and max_tokens is not None and output_tokens >= max_tokens:
        reason = f"stopped at max tokens ({output_tokens} of {max_tokens})"
        flags.append({"code": "truncated", "reason": reason})
    if answer.strip() and (rep := check_repetition(answer)):
        flags.append(rep)
    return {"lang_drift": bool(lang_flags), "lang": lang, "json_valid": json_valid, "flags": flags}


def summarize_flags(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many answers carry each flag code (every code present, zeros included)."""
    counts = dict.fromkeys(FLAG_CODES, 0)
    for result in results:
        for code in {flag["code"] for flag in result.get("flags", [])}:
            counts[code] = counts.get(code, 0) + 1
    return counts


def drift_summary(results: list[dict[str, Any]]) -> str:
    """One line for a lane: '4/5 drifted to Chinese', '0/5 drifted',
    '3/5 drifted (2 to Chinese, 1 to Japanese)'."""
    n = len(results)
    targets = Counter(
        LANG_NAMES.get(r["lang"].get("detected") or "", "another language")
        for r in results
        if r.get("lang_drift")
    )
    drifted = sum(targets.values())
    if not drifted:
        return f"0/{n} drifted"
    if len(targets) == 1:
        return f"{drifted}/{n} drifted to {next(iter(targets))}"
    parts = ", ".join(f"{k} to {name}" for name, k in targets.most_common())
    return f"{drifted}/{n} drifted ({parts})"


def run_quality_cli(
    stdin_text: str, expect_lang: str | None, expect_json: list[str] | None
) -> dict[str, Any]:
    """What `python -m lib.cli quality --expect-lang ko [--expect-json title,content]`
    prints for one answer read on stdin. Raises ValueError for an unsupported language
    (the caller exits 2 with the message)."""
    return check_answer(stdin_text, expect_lang=expect_lang, expect_json=expect_json)
