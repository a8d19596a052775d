"""A run's answers as the review reads them, and two lanes' answers paired per request.

A *pair* is one request index at one concurrency level seen through two lanes. The
runner sends prompt `idx % len(prompts)` as request `idx` on every lane, so the same
index on two lanes is the same prompt in the same round: pairing by index is exact,
and a prompt sent five times gives five pairs ("send 1 of 5" ... "send 5 of 5").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lib import store

Db = str | os.PathLike[str] | None
Sends = Literal["all", "first"]

SENDS: dict[str, str] = {"all": "Every send", "first": "First send only"}


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
        return store.run_stamp(conn, run_id)


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
