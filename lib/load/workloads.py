"""Workloads: the built-in prompt presets and the user's own prompt files.

Presets live as JSONL under lib/load/presets/ and are read with the same loader as the
user's files, so the loader's rules are exercised on every import. Every loader error
is a `WorkloadError` with one line naming the file and, where it helps, the line.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.core.records import Prompt
from lib.quality import normalize_lang, parse_keys

# Bounds on a prompt file, stated in the errors: a benchmark never needs more, and a
# mistaken upload (a video, a database dump) must fail at once, not exhaust memory.
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PROMPTS = 100_000
EXTENSIONS: tuple[str, ...] = (".txt", ".jsonl", ".csv")
ROLES: tuple[str, ...] = ("system", "user", "assistant")

PRESET_DIR = Path(__file__).with_name("presets")


class WorkloadError(ValueError):
    """A prompt file or preset that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Preset:
    """A named prompt set shown in the run page and accepted by the CLI."""

    key: str
    title: str
    description: str
    prompts: list[Prompt]


def _fail(label: str, message: str, line: int | None = None) -> WorkloadError:
    where = f"{label} line {line}" if line is not None else label
    return WorkloadError(" ".join(f"{where}: {message}".split()))  # one line, always


def load_prompt_file(path: str | os.PathLike[str]) -> list[Prompt]:
    """Read prompts from a .txt (one per non-empty line), .jsonl or .csv file.

    .jsonl lines: {"prompt": "..."} or {"messages": [{"role", "content"}, ...]}, with
    optional "expect_lang" (ko, ja, zh, en), "expect_json" (list of keys or "a,b") and
    "name"; other fields are ignored. .csv: a `prompt` column, optional `expect_lang`,
    `expect_json` (comma-separated keys) and `name`. Raises WorkloadError.
    """
    p = Path(path)
    label = str(p)
    if not p.exists():
        raise _fail(label, "file not found")
    if not p.is_file():
        raise _fail(label, "not a regular file")
    _check_extension(label)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(label, f"file is {size / 2**20:.1f} MB, over the {_mb()} MB limit")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise _fail(label, f"cannot read the file ({exc.strerror or exc})") from exc
    return load_prompts_from_bytes(label, data)


def load_prompts_from_bytes(name: str, data: bytes) -> list[Prompt]:
    """Same rules as `load_prompt_file`, for bytes from the dashboard's file uploader;
    `name` (the uploaded file's name) picks the format and labels the errors."""
    label = name.replace("\n", " ") or "upload"
    ext = _check_extension(label)
    if len(data) > MAX_FILE_BYTES:
        raise _fail(label, f"file is {len(data) / 2**20:.1f} MB, over the {_mb()} MB limit")
    if not data.strip():
        raise _fail(label, "the file is empty, no prompts found")
    if b"\x00" in data:
        raise _fail(label, "not UTF-8 text (it holds NUL bytes: binary, or UTF-16?)")
    try:
        text = data.decode("utf-8-sig")  # a BOM from Excel or Notepad is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start]
        raise _fail(label, f"not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8", line) from exc
    parser = {".txt": _parse_txt, ".jsonl": _parse_jsonl, ".csv": _parse_csv}[ext]
    prompts = parser(label, text)
    if not prompts:
        raise _fail(label, "no prompts found")
    return prompts


def _mb() -> str:
    return f"{MAX_FILE_BYTES // 2**20}"


def _check_extension(label: str) -> str:
    ext = os.path.splitext(label)[1].lower()
    if ext not in EXTENSIONS:
        shown = f"'{ext}'" if ext else "none"
        raise _fail(label, f"unknown extension {shown} (use {', '.join(EXTENSIONS)})")
    return ext


def _add(label: str, prompts: list[Prompt], prompt: Prompt, line: int) -> None:
    if len(prompts) >= MAX_PROMPTS:
        raise _fail(label, f"more than {MAX_PROMPTS:,} prompts (the limit)", line)
    prompts.append(prompt)


def _parse_txt(label: str, text: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            _add(label, prompts, Prompt.from_text(line.strip()), number)
    return prompts


def _parse_jsonl(label: str, text: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(label, f"not valid JSON ({exc.msg} at column {exc.colno})", number) from exc
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            raise _fail(label, f'expected an object like {{"prompt": "..."}}, got a {kind}', number)
        _add(label, prompts, _prompt_from_fields(label, obj, number), number)
    return prompts


def _parse_csv(label: str, text: str) -> list[Prompt]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # no silent half-rows
    try:
        header = next(reader, None)
        if header is None:
            raise _fail(label, "the file is empty, no prompts found")
        columns = [column.strip().lower() for column in header]
        if "prompt" not in columns:
            shown = ", ".join(c for c in columns if c) or "none"
            raise _fail(label, f"no 'prompt' column in the header (columns: {shown})", 1)
        prompts: list[Prompt] = []
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns):
                raise _fail(
                    label,
                    f"{len(row)} fields but the header has {len(columns)}"
                    " (quote prompts that contain commas)",
                    number,
                )
            fields = {c: v for c, v in zip(columns, row, strict=False) if c and v.strip()}
            fields["prompt"] = fields.get("prompt", "")
            _add(label, prompts, _prompt_from_fields(label, fields, number), number)
    except csv.Error as exc:
        hints = {
            "field larger": " (use .jsonl for very long prompts)",
            "end of data": " (unclosed quote?)",
        }
        hint = next((h for key, h in hints.items() if key in str(exc)), "")
        raise _fail(label, f"malformed CSV ({exc}){hint}", reader.line_num) from exc
    return prompts


def _prompt_from_fields(label: str, obj: dict[str, Any], line: int) -> Prompt:
    """Build a Prompt from one JSONL object or CSV row, checking every field."""
    text, messages = obj.get("prompt"), obj.get("messages")
    if text is not None and messages is not None:
        raise _fail(label, 'give either "prompt" or "messages", not both', line)
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise _fail(label, '"prompt" must be a non-empty string', line)
        messages = [{"role": "user", "content": text}]
    elif messages is not None:
        messages = _check_messages(label, messages, line)
    else:
        raise _fail(label, 'needs "prompt" (text) or "messages" (a chat list)', line)
    try:
        lang = obj.get("expect_lang")
        if lang is not None and not isinstance(lang, str):
            raise ValueError(f"expect_lang must be a string like 'ko', got {lang!r}")
        expect_lang = normalize_lang(lang)
    except ValueError as exc:
        raise _fail(label, str(exc), line) from exc
    keys = obj.get("expect_json")
    if isinstance(keys, str):
        keys = parse_keys(keys)
    elif keys is not None and not (
        isinstance(keys, list) and all(isinstance(k, str) and k.strip() for k in keys)
    ):
        raise _fail(label, '"expect_json" must be a list of key names or "a,b"', line)
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail(label, '"name" must be a string', line)
    return Prompt(messages=messages, expect_lang=expect_lang, expect_json=keys, name=name)


def _check_messages(label: str, messages: Any, line: int) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _fail(label, '"messages" must be a non-empty list', line)
    checked = []
    for i, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise _fail(label, f"message {i} must be an object with role and content", line)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _fail(label, f"message {i} has role {role!r} (use {', '.join(ROLES)})", line)
        if not isinstance(content, str):
            raise _fail(label, f"message {i} needs a string content", line)
        checked.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in checked):
        raise _fail(label, '"messages" has no non-empty user message', line)
    return checked


def _load_preset_file(stem: str) -> list[Prompt]:
    return load_prompt_file(PRESET_DIR / f"{stem}.jsonl")


def _interleave(*groups: list[Prompt]) -> list[Prompt]:
    """Round-robin, so a run of a few requests still samples every language."""
    out: list[Prompt] = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _build_presets() -> dict[str, Preset]:
    ko, en = _load_preset_file("korean"), _load_preset_file("english")
    ja, zh = _load_preset_file("japanese"), _load_preset_file("chinese")
    news = [p for p in ko if p.name == "ko-news-json"]
    presets = [
        Preset(
            "ko-news-json",
            "Korean news article as JSON (the team's prompt)",
            "One Korean prompt: a short news article about AI technology, answered only as "
            "JSON with 'title' and 'content'. The prompt of the 2025-06-09 comparison, "
            "where quantized models answered in Chinese.",
            news,
        ),
        Preset("korean", "Korean", f"{len(ko)} Korean prompts, short and long, some JSON.", ko),
        Preset("english", "English", f"{len(en)} English prompts, short and long, some JSON.", en),
        Preset("japanese", "Japanese", f"{len(ja)} Japanese prompts, some JSON.", ja),
        Preset("chinese", "Chinese", f"{len(zh)} Chinese (simplified) prompts, some JSON.", zh),
        Preset(
            "mixed",
            "Mixed (ko, en, ja, zh)",
            "All Korean, English, Japanese and Chinese prompts, taking turns by language.",
            _interleave(ko, en, ja, zh),
        ),
    ]
    return {preset.key: preset for preset in presets}


# Read-only: use get_preset() for prompts that a caller may change.
PRESETS: dict[str, Preset] = _build_presets()


def get_preset(key: str) -> Preset:
    """A copy of the preset `key`; WorkloadError naming the known keys otherwise."""
    if key not in PRESETS:
        raise WorkloadError(f"unknown preset {key!r} (known: {', '.join(PRESETS)})")
    return copy.deepcopy(PRESETS[key])
