"""A run's votes exported as flat rows and CSV, with lane names, sides and flag codes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lib import store
from lib.core import csv_safe
from lib.quality.review.flags import flag_codes
from lib.quality.review.pairing import Db, ReviewData, load_review, prompt_of
from lib.quality.review.votes import winner_lane

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
