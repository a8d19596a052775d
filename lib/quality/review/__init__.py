"""The Compare page's logic: answers paired per prompt, flag badges, filters, diffs,
blind shuffling, votes and win rates. No Streamlit here.

The public API the page and tests use as `review.<name>`; the code lives in submodules:
pairing (loading a run's answers, pairing two lanes by request), flags (badges,
filters, lane summaries, diffs), votes (blind sides, votes, win rates) and exports
(votes as rows and CSV). Answer texts, prompts and flag reasons are untrusted: callers
show them as plain text only.
"""

from __future__ import annotations

from lib.quality.review.exports import EXPORT_FIELDS, export_rows, votes_csv, votes_export
from lib.quality.review.flags import (
    FILTERS,
    Badge,
    FilterMode,
    LaneSummary,
    answer_diff,
    badges,
    detected_lang,
    disagree,
    filter_pairs,
    flag_codes,
    is_flagged,
    json_valid,
    lane_summaries,
)
from lib.quality.review.pairing import (
    SENDS,
    Answer,
    Db,
    Pair,
    PromptInfo,
    ReviewData,
    Sends,
    load_review,
    pairs,
    prompt_of,
    stamp,
)
from lib.quality.review.votes import (
    SIDE_CHOICES,
    VOTES,
    Z_95,
    blind_order,
    blind_pool,
    left_lane,
    my_votes,
    record_vote,
    sides,
    verdict,
    vote_for_side,
    wilson_interval,
    win_rate_figure,
    win_rates,
    winner_lane,
)

__all__ = [
    "EXPORT_FIELDS",
    "FILTERS",
    "PAGE_SIZE",
    "SENDS",
    "SIDE_CHOICES",
    "VOTES",
    "Z_95",
    "Answer",
    "Badge",
    "Db",
    "FilterMode",
    "LaneSummary",
    "Pair",
    "PromptInfo",
    "ReviewData",
    "Sends",
    "answer_diff",
    "badges",
    "blind_order",
    "blind_pool",
    "detected_lang",
    "disagree",
    "export_rows",
    "filter_pairs",
    "flag_codes",
    "is_flagged",
    "json_valid",
    "lane_summaries",
    "left_lane",
    "load_review",
    "my_votes",
    "page_count",
    "pairs",
    "prompt_of",
    "record_vote",
    "sides",
    "stamp",
    "verdict",
    "vote_for_side",
    "votes_csv",
    "votes_export",
    "wilson_interval",
    "win_rate_figure",
    "win_rates",
    "winner_lane",
]

PAGE_SIZE = 10


def page_count(n_items: int, size: int = PAGE_SIZE) -> int:
    """Pages needed for n items (at least 1)."""
    return max(1, -(-n_items // size))
