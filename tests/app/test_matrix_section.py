"""The Results page's "Variants side by side" through AppTest, over
tests/analysis/test_matrix_frames.py's matrix run (two cells measured, one that never
started): the table with each column's best, the failed cell's reason and log tail, the
memory rows and the matrix charts; the page's latency targets judging the cells; a run
in progress and a run of plain endpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import charts, store
from lib.analysis import matrix_frames as mf
from lib.analysis import results
from lib.app import matrix_section
from tests.analysis.test_frames import make_seed_run
from tests.analysis.test_matrix_frames import CELL_NAMES, FAIL_REASON, FAIL_TAIL, make_matrix_run

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "results.py")


def _open(run_id: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["run"] = run_id
    return at.run()


def _texts(elements) -> list[str]:
    """Element texts with markdown escapes undone (names are escaped before display)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "settings" in d.value.columns]
    return table


def _chart_titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_matrix_run_side_by_side(db):
    run_id = make_matrix_run(db)
    at = _open(run_id)
    assert not at.exception
    assert matrix_section.TITLE in _texts(at.subheader)
    table = _table(at)
    assert table["cell"].tolist() == CELL_NAMES
    assert table["state"].tolist() == ["stopped", "stopped", "failed"]
    assert table["settings"].tolist() == [
        "threads 4",
        "dtype bfloat16, max_num_seqs 4",
        "quantization awq",
    ]
    assert table["ready_s"].tolist() == ["1.50", "20.00", "–"]
    assert table["out_tok_per_s@c=2"].tolist() == ["100.0", "200.0", "–"]
    # Columns the reader never needs are left out; no SLO until targets are set.
    assert not {"lane_idx", "error", "capacity_reason"} & set(table.columns)
    assert "capacity_users" not in table
    assert any("best of each column" in t for t in _texts(at.caption))
    # The failed cell: its reason, and its log's last lines as code (markup and all).
    assert f"**{CELL_NAMES[2]}** failed: {FAIL_REASON}" in _texts(at.error)
    assert any(CELL_NAMES[2] in e.label for e in at.expander)
    assert "\n".join(FAIL_TAIL) in [c.value for c in at.code]
    # The memory rows, seed-style.
    rows = " ".join(_texts(at.markdown))
    assert f"**{CELL_NAMES[0]}**: 6 MiB → 600 (weights loaded) → 620 (KV cache reserved)" in rows
    assert f"**{CELL_NAMES[2]}**: 3 MiB → 300 (peak)" in rows
    # The matrix charts after the run's own.
    titles = _chart_titles(at)
    for title in (
        "Engine memory from its first second (MiB)",
        "Start-up time and peak memory by cell",
        "Output throughput by cell (tok/s)",
        "TTFT p50 by cell (ms)",
        "TPOT p50 by cell (ms)",
        "E2E p50 by cell (ms)",
    ):
        assert titles.count(title) == 1, title


def test_page_targets_judge_the_cells(db):
    run_id = make_matrix_run(db)
    at = _open(run_id)
    at.toggle(key=f"slo-open-{run_id}").set_value(True).run()
    assert not at.exception
    table = _table(at)
    # The default TTFT limit of a second: both measured cells within it at every load.
    assert table["capacity_users"].tolist() == ["≥ 2", "≥ 2", "none"]
    assert table["slo_met_pct@c=1"].tolist() == ["100", "100", "–"]
    at.number_input(key=f"slo-ttft_ms-{run_id}").set_value(80.0).run()
    table = _table(at)  # judged by the inputs' new value in the same rerun
    assert table["capacity_users"].tolist() == ["none", "≥ 2", "none"]
    assert table["slo_met_pct@c=2"].tolist() == ["0", "100", "–"]
    assert any("judge every cell by TTFT ≤ 80 ms" in t for t in _texts(at.caption))
    assert "Goodput by cell (req/s)" in _chart_titles(at)
    # Targets closed again: the columns go.
    at.toggle(key=f"slo-open-{run_id}").set_value(False).run()
    assert "capacity_users" not in _table(at)


def test_styled_table_marks_each_columns_best(db):
    doc = results.run_document(db, make_matrix_run(db))
    frame = mf.matrix_frame(doc)
    colors = charts.lane_colors(CELL_NAMES)
    styler = matrix_section.styled_table(frame, colors)
    shown = matrix_section.shown_columns(frame)
    assert list(styler.data.columns) == shown
    ctx = styler._compute().ctx

    def style(row: int, column: str) -> str:
        return "; ".join(f"{k}: {v}" for k, v in ctx.get((row, shown.index(column)), []))

    assert "font-weight: 700" in style(1, "out_tok_per_s@c=1")  # vLLM: most throughput
    assert "font-weight: 700" not in style(0, "out_tok_per_s@c=1")
    assert "font-weight: 700" in style(0, "ready_s")  # llama.cpp: quickest start
    assert "font-weight: 700" in style(0, "peak_memory_mib")  # not the failed cell's 300
    assert "font-weight: 700" not in style(2, "peak_memory_mib")
    assert colors[CELL_NAMES[1]].lower() in style(1, "cell").lower()
    assert "#b3261e" in style(2, "state")
    config = matrix_section.column_config(frame)
    assert config["out_tok_per_s@c=1"]["label"] == "Output throughput (tok/s) · c=1"
    assert config["ready_s"]["label"] == "Start-up to ready (s)"


def test_a_running_matrix_shows_its_table_only_once_it_ends(db):
    run_id = make_matrix_run(db)
    with store.opened(db) as conn:
        store.update_run(conn, run_id, status="running", finished_at=None)
    at = _open(run_id)
    assert not at.exception
    assert matrix_section.TITLE not in _texts(at.subheader)
    assert "Engine memory from its first second (MiB)" not in _chart_titles(at)


def test_plain_run_has_no_matrix_section(db):
    at = _open(make_seed_run(db))
    assert not at.exception
    assert matrix_section.TITLE not in _texts(at.subheader)
    assert not any(matrix_section.TITLE in t for t in _texts(at.caption))
    assert "Engine memory from its first second (MiB)" not in _chart_titles(at)
