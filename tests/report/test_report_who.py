"""Who started a run and on which host, in every file made from it: the results document,
the HTML report's header, the card, the vLLM JSON and the Parquet metadata; escaped where
drawn, and left out (or null) for a run stored before runs recorded either."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lib import report, store
from lib.analysis import results
from lib.core.records import LaneSpec, Prompt, RunConfig
from lib.report import card_body, exports, facts

HOSTILE_USER = "<b>mallory</b>"


def seed(db: Path, run_id: str, started_by: str | None, host: str | None) -> None:
    """A finished one-lane run with two measured requests at c=1, written through the
    store; who and where as given (None, None: a run stored before migration 8)."""
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url="http://h:8000/v1", model="m")],
        prompts=[Prompt.from_text("hi")],
        concurrency=[1],
    ).to_dict()
    with store.opened(db) as conn:
        store.create_run(
            conn, run_id, config, label="who", status="completed", started_by=started_by, host=host
        )
        if started_by is None and host is None:
            conn.execute(
                "UPDATE runs SET started_by = NULL, host = NULL WHERE run_id = ?", (run_id,)
            )
        store.add_lane(
            conn, run_id, 0, "vllm:m", "openai", "http://h:8000/v1", "m", {"kind": "vllm"}, {}
        )
        store.set_level(conn, run_id, 0, 1, "completed", 1000.0, 1001.0)
        rows = [
            {
                "run_id": run_id, "lane_idx": 0, "concurrency": 1, "idx": k, "prompt_idx": 0,
                "t_send": 1000.0 + k, "t_done": 1000.5 + k, "ttft_ms": 50.0, "e2el_ms": 500.0,
                "tpot_ms": 5.0, "tokens_per_s": 20.0, "output_tokens": 10, "prompt_tokens": 3,
                "output_text": "hello",
            }
            for k in range(2)
        ]  # fmt: skip
        store.add_requests(conn, rows)
        store.update_run(conn, run_id, started_at=1000.0, finished_at=1002.0)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("who") / "s.db"
    seed(path, "mine", HOSTILE_USER, "gpu-1")
    seed(path, "old", None, None)
    return path


def test_the_results_document_says_who_and_where(db):
    doc = results.run_document(db, "mine")
    assert (doc["started_by"], doc["host"]) == (HOSTILE_USER, "gpu-1")
    old = results.run_document(db, "old")
    assert (old["started_by"], old["host"]) == (None, None)


def test_report_header_and_card_say_it_escaped(db):
    view = facts.load_view(db, "mine")
    assert facts.run_by(view.doc) == "by <b>mallory</b> on gpu-1"
    page = report.html_report(db, "mine")
    expected = f"{facts.run_date(view.doc)} · by &lt;b&gt;mallory&lt;/b&gt; on gpu-1 · 1 lanes"
    assert expected in page
    assert "<b>mallory" not in page
    card = card_body.card_html(view)
    assert f"<b>{facts.run_date(view.doc)}</b> · by &lt;b&gt;mallory&lt;/b&gt; on gpu-1" in card
    assert "<b>mallory" not in card


def test_an_old_run_says_nothing_of_who(db):
    view = facts.load_view(db, "old")
    assert facts.run_by(view.doc) == ""
    page = report.html_report(db, "old")
    assert f"{facts.run_date(view.doc)} · 1 lanes" in page
    assert f"<b>{facts.run_date(view.doc)}</b></div>" in card_body.card_html(view)


def test_a_long_name_is_cut(db):
    doc = {"started_by": "x" * 200, "host": "h"}
    assert len(facts.run_by(doc)) == 80 and facts.run_by(doc).endswith("…")


def test_exports_carry_who_and_where(db):
    (result,) = exports.vllm_results(db, "mine")
    assert (result["servescope_started_by"], result["servescope_host"]) == (HOSTILE_USER, "gpu-1")
    meta = pq.read_table(io.BytesIO(exports.parquet_bytes(db, "mine"))).schema.metadata
    assert meta[b"servescope.started_by"] == HOSTILE_USER.encode()
    assert meta[b"servescope.host"] == b"gpu-1"
    (old,) = exports.vllm_results(db, "old")
    assert (old["servescope_started_by"], old["servescope_host"]) == (None, None)
    meta = pq.read_table(io.BytesIO(exports.parquet_bytes(db, "old"))).schema.metadata
    assert b"servescope.started_by" not in meta and b"servescope.host" not in meta
    assert meta[b"servescope.run_id"] == b"old"
