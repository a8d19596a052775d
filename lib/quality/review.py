"""The Compare page's logic: answers paired per prompt, flag badges, filters, diffs,
blind shuffling, votes and win rates. No Streamlit here.

A *pair* is one request index at one concurrency level seen through two lanes. The
runner sends prompt `idx % len(prompts)` as request `idx` on every lane, so the same
index on two lanes is the same prompt in the same round: pairing by index is exact,
and a prompt sent five times gives five pairs ("send 1 of 5" ... "send 5 of 5").

Votes name the real lane that won (A = the lower lane index of the pair, B = the
higher), whichever side it was shown on; the side shown on the left is stored beside
the vote so that position bias can be checked afterwards. Answer texts, prompts and
flag reasons are untrusted: callers show them as plain text only.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import sqrt
from typing import Any, Literal

import plotly.graph_objects as go

from lib import quality, store
from lib.core import csv_safe

Db = str | os.PathLike[str] | None
Sends = Literal["all", "first"]
FilterMode = Literal["all", "flagged", "disagree"]

FILTERS: dict[str, str] = {
    "all": "All answers",
    "flagged": "Only flagged",
    "disagree": "Only where lanes disagree",
}
SENDS: dict[str, str] = {"all": "Every send", "first": "First send only"}
VOTES: tuple[str, ...] = ("A", "B", "tie", "both_bad")
# What the reviewer clicks in blind mode: a side, not a lane.
SIDE_CHOICES: dict[str, str] = {
    "left": "Left is better",
    "right": "Right is better",
    "tie": "Tie",
    "both_bad": "Both are bad",
}
Z_95 = 1.959963984540054
PAGE_SIZE = 10

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


# --- loading -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One measured request of one lane, as the review needs it."""

    request_id: int
    lane_idx: int
    concurrency: int
    idx: int
    prompt_idx: int
    text: str
    error: str | None = None
    finish_reason: str | None = None
    output_tokens: int | None = None
    ttft_ms: float | None = None
    e2el_ms: float | None = None
    quality: dict[str, Any] | None = None


@dataclass(frozen=True)
class PromptInfo:
    """A prompt of the run: its user text and what its answers are checked for."""

    text: str
    name: str | None = None
    expect_lang: str | None = None
    expect_json: list[str] | None = None


@dataclass(frozen=True)
class ReviewData:
    """Everything the Compare page reads of a run, loaded once per run state."""

    run_id: str
    status: str
    label: str
    lanes: dict[int, str]  # lane_idx -> display name
    prompts: list[PromptInfo]
    levels: list[int]
    answers: dict[tuple[int, int, int], Answer] = field(repr=False)  # (lane, c, idx)


def _prompt_info(spec: Mapping[str, Any]) -> PromptInfo:
    text = ""
    messages = spec.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message.get("content") or ""
            break
    return PromptInfo(
        text=str(text),
        name=spec.get("name"),
        expect_lang=spec.get("expect_lang"),
        expect_json=spec.get("expect_json"),
    )


def stamp(db: Db, run_id: str) -> tuple[Any, ...]:
    """A cheap fingerprint of a run's answers: changes whenever a request is added or the
    run's status changes, so a cached ReviewData is reloaded exactly then."""
    with store.opened(db) as conn:
        row = conn.execute(
            "SELECT r.status, r.finished_at, (SELECT MAX(id) FROM requests q"
            " WHERE q.run_id = r.run_id) FROM runs r WHERE r.run_id = ?",
            (run_id,),
        ).fetchone()
    return tuple(row) if row else ()


def load_review(db: Db, run_id: str) -> ReviewData | None:
    """The run's lanes, prompts and measured answers; None when there is no such run."""
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            return None
        lanes = store.get_lanes(conn, run_id)
        requests = store.get_requests(conn, run_id)  # measured only: warm-ups are not judged
    config = run.get("config") or {}
    names = {lane["lane_idx"]: str(lane["name"]) for lane in lanes}
    if not names:  # a pending run: names from the config, as the Results page does
        for i, spec in enumerate(config.get("lanes") or []):
            names[i] = spec.get("name") or f"{spec.get('engine')}:{spec.get('model')}"
    answers = {}
    for rec in requests:
        answer = Answer(
            request_id=rec["id"],
            lane_idx=rec["lane_idx"],
            concurrency=rec["concurrency"],
            idx=rec["idx"],
            prompt_idx=rec["prompt_idx"],
            text=rec.get("output_text") or "",
            error=rec.get("error"),
            finish_reason=rec.get("finish_reason"),
            output_tokens=rec.get("output_tokens"),
            ttft_ms=rec.get("ttft_ms"),
            e2el_ms=rec.get("e2el_ms"),
            quality=rec.get("quality"),
        )
        answers[(answer.lane_idx, answer.concurrency, answer.idx)] = answer
    configured = list(config.get("concurrency") or [])
    seen = {c for (_, c, _) in answers}
    levels = [c for c in configured if c in seen] + sorted(seen - set(configured))
    return ReviewData(
        run_id=run_id,
        status=run["status"],
        label=run.get("label") or "",
        lanes=dict(sorted(names.items())),
        prompts=[_prompt_info(p) for p in config.get("prompts") or []],
        levels=levels,
        answers=answers,
    )


def prompt_of(data: ReviewData, prompt_idx: int) -> PromptInfo:
    """The prompt at that index (an empty one when the config does not list it)."""
    if 0 <= prompt_idx < len(data.prompts):
        return data.prompts[prompt_idx]
    return PromptInfo(text="")


# --- pairing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Two lanes' answers to one request index at one level (either may be missing)."""

    concurrency: int
    idx: int
    prompt_idx: int
    send: int  # 1-based: which time this prompt was sent at this level
    sends: int  # how many times it was sent at this level
    lane_a: int
    lane_b: int
    a: Answer | None
    b: Answer | None

    @property
    def key(self) -> str:
        """A short stable id of the item within its run ("c5-r12")."""
        return f"c{self.concurrency}-r{self.idx}"

    def answer(self, lane_idx: int) -> Answer | None:
        """The answer of that lane of the pair."""
        return self.a if lane_idx == self.lane_a else self.b


def pairs(
    data: ReviewData,
    lane_a: int,
    lane_b: int,
    concurrency: int | None = None,
    sends: Sends = "all",
) -> list[Pair]:
    """The two lanes' answers paired by request index, ordered by prompt, level, send.

    `concurrency` None takes every level; `sends="first"` keeps only the first time each
    prompt was sent at each level.
    """
    keys = sorted(
        {
            (c, i)
            for (li, c, i) in data.answers
            if li in (lane_a, lane_b) and (concurrency is None or c == concurrency)
        }
    )
    built = []
    for c, i in keys:
        a = data.answers.get((lane_a, c, i))
        b = data.answers.get((lane_b, c, i))
        prompt_idx = (a or b).prompt_idx  # type: ignore[union-attr]
        built.append((prompt_idx, c, i, a, b))
    level_order = {c: n for n, c in enumerate(data.levels)}
    built.sort(key=lambda t: (t[0], level_order.get(t[1], len(level_order)), t[1], t[2]))
    totals = Counter((p, c) for p, c, *_ in built)
    seen: Counter[tuple[int, int]] = Counter()
    out = []
    for p, c, i, a, b in built:
        seen[(p, c)] += 1
        if sends == "first" and seen[(p, c)] > 1:
            continue
        out.append(Pair(c, i, p, seen[(p, c)], totals[(p, c)], lane_a, lane_b, a, b))
    return out


# --- flags, badges and filters -------------------------------------------------------


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


# --- blind review --------------------------------------------------------------------


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def left_lane(run_id: str, pair: Pair, voter: str = "") -> int:
    """The lane shown on the left in blind mode: a coin flip seeded by run, item, lane pair
    and voter, so reruns and reloads show the same sides, and each reviewer their own."""
    lo, hi = sorted((pair.lane_a, pair.lane_b))
    return lo if _digest(run_id, pair.key, lo, hi, voter)[0] & 1 == 0 else hi


def sides(run_id: str, pair: Pair, voter: str = "") -> tuple[int, int]:
    """(left lane, right lane) in blind mode."""
    left = left_lane(run_id, pair, voter)
    return left, pair.lane_b if left == pair.lane_a else pair.lane_a


def blind_pool(items: Iterable[Pair]) -> tuple[list[Pair], int]:
    """Pairs that can be judged (both lanes answered without error), and how many were
    left out."""
    items = list(items)
    pool = [p for p in items if p.a and p.b and not p.a.error and not p.b.error]
    return pool, len(items) - len(pool)


def blind_order(run_id: str, items: Iterable[Pair], voter: str = "") -> list[Pair]:
    """The pool in a seeded shuffled order, so one prompt's sends are not judged in a row
    (and the same answer is not recognised from the previous item)."""
    return sorted(items, key=lambda p: _digest("order", run_id, p.key, voter))


def vote_for_side(choice: str, left: int, pair: Pair) -> tuple[str, int, int]:
    """A side choice ('left', 'right', 'tie', 'both_bad') as (vote, lane_a, lane_b) with
    lane_a < lane_b and vote naming the real lane that won."""
    if choice not in SIDE_CHOICES:
        raise ValueError(f"unknown choice {choice!r}")
    lo, hi = sorted((pair.lane_a, pair.lane_b))
    if choice in ("tie", "both_bad"):
        return choice, lo, hi
    right = hi if left == lo else lo
    winner = left if choice == "left" else right
    return ("A" if winner == lo else "B"), lo, hi


def record_vote(db: Db, run_id: str, pair: Pair, choice: str, voter: str = "") -> int:
    """Store a blind vote on a pair (replacing this voter's earlier vote on it); returns
    the vote's id."""
    left = left_lane(run_id, pair, voter)
    vote, lo, hi = vote_for_side(choice, left, pair)
    a, b = pair.answer(lo), pair.answer(hi)
    with store.opened(db) as conn:
        return store.add_vote(
            conn,
            run_id,
            concurrency=pair.concurrency,
            req_idx=pair.idx,
            prompt_idx=pair.prompt_idx,
            request_a=a.request_id if a else None,
            request_b=b.request_id if b else None,
            lane_a=lo,
            lane_b=hi,
            left_lane=left,
            vote=vote,
            voter=voter,
        )


def my_votes(
    votes: Iterable[Mapping[str, Any]], lane_a: int, lane_b: int, voter: str = ""
) -> dict[str, dict[str, Any]]:
    """This voter's votes on this lane pair, by pair key."""
    lo, hi = sorted((lane_a, lane_b))
    return {
        f"c{v['concurrency']}-r{v['req_idx']}": dict(v)
        for v in votes
        if v["lane_a"] == lo and v["lane_b"] == hi and (v.get("voter") or "") == voter
    }


def winner_lane(vote: Mapping[str, Any]) -> int | None:
    """The lane index that won the vote; None for a tie or both bad."""
    if vote["vote"] == "A":
        return int(vote["lane_a"])
    if vote["vote"] == "B":
        return int(vote["lane_b"])
    return None


def verdict(vote: Mapping[str, Any], lanes: Mapping[int, str]) -> str:
    """The reveal after a vote: which lane was on which side and what the vote means."""
    left = int(vote["left_lane"])
    right = int(vote["lane_b"] if left == vote["lane_a"] else vote["lane_a"])
    sides_text = f"Left was {lanes.get(left, left)}, right was {lanes.get(right, right)}."
    won = winner_lane(vote)
    if won is None:
        said = "tie" if vote["vote"] == "tie" else "both bad"
        return f"{sides_text} You voted: {said}."
    side = "left" if won == left else "right"
    return f"{sides_text} You voted {side}: {lanes.get(won, won)} wins."


# --- win rates -----------------------------------------------------------------------


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None when n is 0. `successes` may be
    fractional (ties counted as half a win)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rates(
    votes: Iterable[Mapping[str, Any]],
    lanes: Mapping[int, str],
    concurrency: int | None = None,
) -> list[dict[str, Any]]:
    """Per lane over every vote it took part in (any opponent, any voter): wins, losses,
    ties, both bad, and the win rate with a 95 % Wilson interval.

    Ties count as half a win and half a loss; "both bad" votes are excluded from the
    rate (they say nothing about which lane is better) but are counted.
    """
    stats: dict[int, Counter[str]] = {li: Counter() for li in lanes}
    for v in votes:
        if concurrency is not None and v["concurrency"] != concurrency:
            continue
        won = winner_lane(v)
        for li in (int(v["lane_a"]), int(v["lane_b"])):
            s = stats.setdefault(li, Counter())
            if v["vote"] == "both_bad":
                s["both_bad"] += 1
            elif v["vote"] == "tie":
                s["ties"] += 1
            elif won == li:
                s["wins"] += 1
            else:
                s["losses"] += 1
    out = []
    for li, s in stats.items():
        n = s["wins"] + s["losses"] + s["ties"]
        score = s["wins"] + 0.5 * s["ties"]
        ci = wilson_interval(score, n)
        out.append(
            {
                "lane_idx": li,
                "lane": lanes.get(li, f"lane {li}"),
                "votes": n + s["both_bad"],
                "wins": s["wins"],
                "losses": s["losses"],
                "ties": s["ties"],
                "both_bad": s["both_bad"],
                "win_rate": score / n if n else None,
                "ci_low": ci[0] if ci else None,
                "ci_high": ci[1] if ci else None,
                "interval": f"{ci[0]:.0%} – {ci[1]:.0%}" if ci else "",
            }
        )
    return out


def win_rate_figure(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> go.Figure:
    """Each lane's win rate as a dot with its 95 % interval as a bar; 50 % marked."""
    fig = go.Figure()
    shown = [r for r in rows if r["win_rate"] is not None]
    for r in shown:
        fig.add_trace(
            go.Scatter(
                x=[r["win_rate"]],
                y=[r["lane"]],
                mode="markers",
                marker={"size": 12, "color": colors.get(r["lane"], "#555555")},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["win_rate"]],
                    "arrayminus": [r["win_rate"] - r["ci_low"]],
                    "thickness": 2,
                    "width": 6,
                },
                name=r["lane"],
                hovertemplate=(
                    f"{r['wins']} wins, {r['losses']} losses, {r['ties']} ties"
                    "<br>win rate %{x:.0%}<extra></extra>"
                ),
            )
        )
    fig.add_vline(x=0.5, line_dash="dot", line_color="#888888")
    fig.update_layout(
        template="plotly_white",
        title={"text": "Win rate with 95 % Wilson interval", "x": 0.0, "font": {"size": 15}},
        height=110 + 48 * max(len(shown), 1),
        margin={"l": 20, "r": 24, "t": 48, "b": 40},
        showlegend=False,
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": "win rate (ties = ½)"},
        yaxis={"automargin": True, "autorange": "reversed"},
    )
    return fig


# --- export --------------------------------------------------------------------------

EXPORT_FIELDS: tuple[str, ...] = (
    "run_id",
    "vote_id",
    "created_at",
    "voter",
    "concurrency",
    "request_index",
    "prompt_idx",
    "prompt_name",
    "prompt",
    "lane_a",
    "lane_b",
    "left",
    "right",
    "vote",
    "winner",
    "lane_a_flags",
    "lane_b_flags",
    "request_a_id",
    "request_b_id",
)


def votes_export(db: Db, run_id: str) -> list[dict[str, Any]]:
    """Every vote of the run as flat rows (EXPORT_FIELDS), oldest first, with lane names,
    the side each was shown on, the winner's name and both answers' flag codes."""
    data = load_review(db, run_id)
    if data is None:
        return []
    with store.opened(db) as conn:
        votes = store.get_votes(conn, run_id)
    return export_rows(data, votes)


def export_rows(data: ReviewData, votes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """votes_export over a run already loaded and its votes already read."""
    by_id = {a.request_id: a for a in data.answers.values()}
    names = data.lanes
    out = []
    for v in votes:
        lane_a, lane_b, left = int(v["lane_a"]), int(v["lane_b"]), int(v["left_lane"])
        won = winner_lane(v)
        prompt = prompt_of(data, v["prompt_idx"])
        out.append(
            {
                "run_id": data.run_id,
                "vote_id": v["id"],
                "created_at": datetime.fromtimestamp(v["created_at"], UTC).isoformat(),
                "voter": v["voter"],
                "concurrency": v["concurrency"],
                "request_index": v["req_idx"],
                "prompt_idx": v["prompt_idx"],
                "prompt_name": prompt.name or "",
                "prompt": prompt.text,
                "lane_a": names.get(lane_a, str(lane_a)),
                "lane_b": names.get(lane_b, str(lane_b)),
                "left": names.get(left, str(left)),
                "right": names.get(lane_b if left == lane_a else lane_a, ""),
                "vote": v["vote"],
                "winner": names.get(won, str(won)) if won is not None else v["vote"],
                "lane_a_flags": " ".join(flag_codes(by_id.get(v["request_a"]))),
                "lane_b_flags": " ".join(flag_codes(by_id.get(v["request_b"]))),
                "request_a_id": v["request_a"],
                "request_b_id": v["request_b"],
            }
        )
    return out


def _csv_cell(value: Any) -> Any:
    # Prompts and voter names are user text: csv_safe keeps formulas out of spreadsheets.
    return "" if value is None else csv_safe.guard(value)


def votes_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The exported votes as CSV text (header row first)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in EXPORT_FIELDS})
    return buf.getvalue()


def page_count(n_items: int, size: int = PAGE_SIZE) -> int:
    """Pages needed for n items (at least 1)."""
    return max(1, -(-n_items // size))
