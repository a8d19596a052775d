"""Blind review and its votes: which lane shows on which side, recording a vote, the
reveal after it, and the lanes' win rates over all votes.

Votes name the real lane that won (A = the lower lane index of the pair, B = the
higher), whichever side it was shown on; the side shown on the left is stored beside
the vote so that position bias can be checked afterwards.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from math import sqrt
from typing import Any

import plotly.graph_objects as go

from lib import store
from lib.quality.review.pairing import Db, Pair

VOTES: tuple[str, ...] = ("A", "B", "tie", "both_bad")
# What the reviewer clicks in blind mode: a side, not a lane.
SIDE_CHOICES: dict[str, str] = {
    "left": "Left is better",
    "right": "Right is better",
    "tie": "Tie",
    "both_bad": "Both are bad",
}
Z_95 = 1.959963984540054


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
