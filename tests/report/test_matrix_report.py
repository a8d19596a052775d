"""The HTML report's "Variants side by side" for a matrix run (tests/analysis/
test_matrix_frames.py's: two cells measured, one that never started): the table with
each column's best marked, the memory rows, the failed cell's reason and log tail, all
escaped, and the matrix charts packed after the run's own (and the capacity section's).
"""

from __future__ import annotations

import re

from lib import report
from lib.charts import matrix as matrix_charts
from lib.core.slo import Slo
from lib.report import matrix_section
from tests.analysis.test_matrix_frames import CELL_NAMES, FAIL_REASON, make_matrix_run
from tests.charts.test_capacity_charts import make_rate_run
from tests.report.test_report import page_figures

MATRIX_TITLES = [
    matrix_charts.MEMORY_TITLE,
    "Start-up time and peak memory by cell",
    "Output throughput by cell (tok/s)",
    "TTFT p50 by cell (ms)",
    "TPOT p50 by cell (ms)",
    "E2E p50 by cell (ms)",
]
RUN_FIGURES = 7  # the run's own charts (lib/report/sections.figures)
BEST = f'<td class="num" style="{matrix_section.BEST_STYLE}">'


def _section(page: str) -> str:
    start = page.index(f"<h2>{matrix_section.TITLE}</h2>")
    return page[start : page.index("<h2>", start + 10)]


def _rows(section: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)


def test_matrix_section(tmp_path):
    db = tmp_path / "store.db"
    page = report.html_report(db, make_matrix_run(db))
    section = _section(page)
    # Right after what the numbers say: the question a matrix answers.
    assert page.index("<h2>What the numbers say</h2>") < page.index(section)
    header, *rows = _rows(section)
    for label in (
        "Cell",
        "Settings",
        "Start-up to ready (s)",
        "Peak memory (MiB)",
        "Output throughput (tok/s) · c=1",
        "E2E p50 (ms) · c=2",
    ):
        assert f"<th>{label}</th>" in header
    assert "Capacity" not in header and "Within SLO" not in header  # no targets
    assert [CELL_NAMES[i] in row for i, row in enumerate(rows)] == [True] * 3
    llama, vllm, awq = rows
    # Each column's best: vLLM's throughput and latency, llama.cpp's start-up and memory.
    assert f"{BEST}200.0</td>" in vllm and f"{BEST}50</td>" in vllm
    assert f"{BEST}1.50</td>" in llama and f"{BEST}700</td>" in llama
    assert BEST not in awq  # a failed cell never wins (its 300 MiB included)
    assert '<td class="error">failed</td>' in awq
    assert "dtype bfloat16, max_num_seqs 4" in vllm
    # The memory rows and the failed cell, with its log's last lines.
    assert "6 MiB → 600 (weights loaded) → 620 (KV cache reserved) → 700 (peak under load)" in (
        section
    )
    assert f"<b>{CELL_NAMES[2]}</b> failed: {FAIL_REASON}" in section
    assert "ValueError: &lt;b&gt;awq&lt;/b&gt; needs a GPU" in section
    assert "<b>awq</b>" not in page
    # Its charts: cells fig7 on, packed after the run's own seven.
    assert [f"fig{RUN_FIGURES + i}" for i in range(6)] == re.findall(r'id="(fig\d+)"', section)
    figures = page_figures(page)
    assert [f["layout"]["title"]["text"] for f in figures[RUN_FIGURES:]] == MATRIX_TITLES


def test_matrix_with_targets_after_the_capacity_charts(tmp_path):
    db = tmp_path / "store.db"
    page = report.html_report(db, make_matrix_run(db, slo=Slo(ttft_ms=80)))
    section = _section(page)
    header, llama, vllm, awq = _rows(section)
    assert '<td class="num">none</td>' in awq  # never started: no load met anything
    assert "<th>Capacity at SLO (users at once)</th>" in header
    assert "<th>Within SLO (%) · c=1</th>" in header
    assert "<th>Goodput (req/s) · c=2</th>" in header
    assert f"{BEST}≥ 2</td>" not in vllm  # the only capacity: nothing to beat
    assert '<td class="num">≥ 2</td>' in vllm and '<td class="num">none</td>' in llama
    assert (
        "judge every cell by the run&#x27;s targets: TTFT ≤ 80 ms, for 90% of requests" in section
    )
    figures = page_figures(page)
    capacity = 3  # goodput, latency and the Pareto view
    first = RUN_FIGURES + capacity
    assert re.findall(r'id="fig(\d+)"', section)[0] == str(first)
    titles = [f["layout"]["title"]["text"] for f in figures[first:]]
    assert titles == [*MATRIX_TITLES, "Within SLO by cell (%)", "Goodput by cell (req/s)"]


def test_cell_names_are_escaped(tmp_path):
    db = tmp_path / "store.db"
    names = ["<script>alert(1)</script>", "a & b", "<img src=x>"]
    page = report.html_report(db, make_matrix_run(db, names=names))
    section = _section(page)
    assert "<script>alert" not in section and "<img src=x>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "a &amp; b" in section


def test_plain_run_has_no_matrix_section(tmp_path):
    db = tmp_path / "store.db"
    page = report.html_report(db, make_rate_run(db))
    assert matrix_section.TITLE not in page
    assert len(page_figures(page)) == RUN_FIGURES
