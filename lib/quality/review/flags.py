"""What the review shows about answers: flag badges, the filters over pairs, each lane's
one-line summary of its checks, and the diff of two answers.

Flag reasons and answer texts are untrusted: callers show them as plain text only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lib import quality
from lib.quality.review.pairing import Answer, Pair, ReviewData

FilterMode = Literal["all", "flagged", "disagree"]

FILTERS: dict[str, str] = {
    "all": "All answers",
    "flagged": "Only flagged",
    "disagree": "Only where lanes disagree",
}

_FLAG_LABELS: dict[str, tuple[str, str, str]] = {
    # code: (label, colour, icon)
    "json_invalid": ("JSON invalid", "orange", ":material/data_object:"),
    "json_missing_keys": ("JSON keys missing", "orange", ":material/data_object:"),
    "json_empty_value": ("JSON value empty", "orange", ":material/data_object:"),
    "reasoning_leak": ("reasoning leak", "violet", ":material/psychology:"),
    "empty": ("empty answer", "red", ":material/block:"),
    "truncated": ("truncated", "yellow", ":material/content_cut:"),
    "repetition": ("repetition", "yellow", ":material/repeat:"),
}


@dataclass(frozen=True)
class Badge:
    """A flag badge: a fixed label from our own vocabulary, plus the check's reason
    (untrusted: it may quote the answer) for a tooltip."""

    label: str
    color: str
    icon: str | None = None
    reason: str | None = None


def flag_codes(answer: Answer | None) -> list[str]:
    """The answer's flag codes; a failed request is 'error', a missing one 'missing'."""
    if answer is None:
        return ["missing"]
    if answer.error:
        return ["error"]
    flags = (answer.quality or {}).get("flags") or []
    return list(dict.fromkeys(str(f.get("code")) for f in flags))


def is_flagged(answer: Answer | None) -> bool:
    """True when the answer failed, is missing or carries any quality flag."""
    return bool(flag_codes(answer))


def detected_lang(answer: Answer | None) -> str | None:
    """The language the answer was written in (the one it drifted to, if it drifted)."""
    if answer is None or answer.error or not answer.quality:
        return None
    return (answer.quality.get("lang") or {}).get("detected")


def json_valid(answer: Answer | None) -> bool | None:
    """Whether the answer is usable JSON as asked; None when no JSON was asked or checked."""
    if answer is None or answer.error or not answer.quality:
        return None
    return answer.quality.get("json_valid")


def badges(answer: Answer | None) -> list[Badge]:
    """Badges for an answer: its flags first (red/orange/yellow), then what is fine
    (language, JSON ok) in green or grey, so a clean answer is visibly clean."""
    if answer is None:
        return [Badge("no answer", "gray", ":material/remove:")]
    if answer.error:
        return [Badge("failed", "red", ":material/error:", answer.error)]
    q = answer.quality or {}
    out: list[Badge] = []
    seen: set[str] = set()
    for flag in q.get("flags") or []:
        code = str(flag.get("code"))
        if code in seen:
            continue
        seen.add(code)
        reason = flag.get("reason")
        if code == "lang_drift":
            lang = quality.LANG_NAMES.get(detected_lang(answer) or "", "another language")
            out.append(Badge(f"lang drift → {lang}", "red", ":material/translate:", reason))
        elif code in _FLAG_LABELS:
            label, color, icon = _FLAG_LABELS[code]
            out.append(Badge(label, color, icon, reason))
        else:
            out.append(Badge(code.replace("_", " "), "gray", None, reason))
    if not q:
        out.append(Badge("not checked", "gray"))
        return out
    lang = detected_lang(answer)
    if lang and "lang_drift" not in seen:
        out.append(Badge(quality.LANG_NAMES.get(lang, lang), "gray", ":material/translate:"))
    if q.get("json_valid") is True:
        out.append(Badge("JSON ok", "green", ":material/data_object:"))
    if not seen:
        out.append(Badge("no flags", "green", ":material/check:"))
    return out


def disagree(pair: Pair) -> bool:
    """The lanes disagree on this item: one flagged and the other not, a different
    detected language, or different JSON validity."""
    if is_flagged(pair.a) != is_flagged(pair.b):
        return True
    la, lb = detected_lang(pair.a), detected_lang(pair.b)
    if la and lb and la != lb:
        return True
    ja, jb = json_valid(pair.a), json_valid(pair.b)
    return ja is not None and jb is not None and ja != jb


def filter_pairs(items: Iterable[Pair], mode: FilterMode | str) -> list[Pair]:
    """Keep all pairs, the flagged ones (either side), or those where the lanes disagree."""
    items = list(items)
    if mode == "flagged":
        return [p for p in items if is_flagged(p.a) or is_flagged(p.b)]
    if mode == "disagree":
        return [p for p in items if disagree(p)]
    return items


@dataclass(frozen=True)
class LaneSummary:
    """A lane's answer checks over the shown scope, as one line."""

    lane_idx: int
    name: str
    answers: int
    line: str  # "4/5 drifted to Chinese · 0 JSON invalid · 1 truncated"
    flagged: int


def lane_summaries(data: ReviewData, concurrency: int | None = None) -> list[LaneSummary]:
    """Per lane: the drift line (quality.drift_summary), JSON invalid and other flag counts,
    failed requests, over one level or all."""
    json_asked = any(p.expect_json is not None for p in data.prompts)
    out = []
    for li, name in data.lanes.items():
        mine = [
            a
            for (lane, c, _), a in data.answers.items()
            if lane == li and (concurrency is None or c == concurrency)
        ]
        checks = [a.quality for a in mine if not a.error and a.quality]
        failed = sum(1 for a in mine if a.error)
        parts = [quality.drift_summary(checks)] if checks else ["not checked"]
        if checks and (json_asked or any(q.get("json_valid") is not None for q in checks)):
            invalid = sum(1 for q in checks if q.get("json_valid") is False)
            parts.append(f"{invalid} JSON invalid")
        counts = quality.summarize_flags(checks)
        for code, n in counts.items():
            if n and code != "lang_drift" and not code.startswith("json_"):
                parts.append(f"{n} {_FLAG_LABELS.get(code, (code,))[0]}")
        if failed:
            parts.append(f"{failed} failed")
        flagged = sum(1 for a in mine if is_flagged(a))
        out.append(LaneSummary(li, name, len(mine), " · ".join(parts), flagged))
    return out


# --- diff ----------------------------------------------------------------------------

# After sentence-ending punctuation: CJK answers have few newlines, so a line diff would
# be one '-' line against one '+' line; sentences make the difference readable.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_WORD = re.compile(r"\w")
MAX_DIFF_CHARS = 20_000


def _units(text: str) -> list[str]:
    out = []
    for line in text[:MAX_DIFF_CHARS].splitlines():
        pieces: list[str] = []
        for piece in _SENTENCE_END.split(line):
            if pieces and not _WORD.search(piece):
                pieces[-1] += piece  # a closing quote or brace stays with its sentence
            elif piece.strip():
                pieces.append(piece)
        out += pieces or [line]
    return out


def answer_diff(a: str, b: str, a_label: str = "A", b_label: str = "B", context: int = 2) -> str:
    """A unified diff of two answers, one sentence or line per diff line; "" when equal."""
    lines = difflib.unified_diff(
        _units(a), _units(b), fromfile=a_label, tofile=b_label, lineterm="", n=context
    )
    return "\n".join(lines)
