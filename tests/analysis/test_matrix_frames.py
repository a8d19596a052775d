"""lib/analysis/matrix_frames.py: a matrix run's cells side by side, checked by hand.

`make_matrix_run` writes a matrix run as lib/load/launched_lane.py stores one, through
lib.store: three cells run one after another, each lane with its `engine_process` record
and its engine's memory samples every 0.5 s from the spawn. The Results page's and the
report's tests reuse it.

- cell 0, "llama.cpp · Q4_K_M": ready after 1.5 s, 700 MiB at most; each request 1 s
  (TTFT 100 ms): 50 tok/s at c=1, 100 tok/s at c=2.
- cell 1, "vLLM · bf16 · seqs 4": ready after 20 s, 2,500 MiB resident (5,000 MiB on the
  GPU with `gpu`); each request 0.5 s (TTFT 50 ms): 100 tok/s at c=1, 200 at c=2.
- cell 2, "vLLM · AWQ": exited during start-up; its levels failed with the reason, its
  log's last lines hold markup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from lib import quality, store
from lib.analysis import matrix_frames as mf
from lib.analysis import results
from lib.core import metrics
from lib.core.recipes import EngineRecipe
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.core.slo import Slo
from lib.launch import phases
from tests.analysis.test_frames import T0, make_seed_run

CELL_NAMES = ["llama.cpp · Q4_K_M", "vLLM · bf16 · seqs 4", "vLLM · AWQ"]
LEVELS = (1, 2)
PER_LEVEL = 4
TOKENS = 50
MIB = 1024 * 1024
FAIL_REASON = "the engine exited during start-up (exit code 1)"
FAIL_TAIL = ["Traceback (most recent call last):", "ValueError: <b>awq</b> needs a GPU"]
RECIPES = [
    EngineRecipe("llama.cpp", "/models/q4_k_m.gguf", variant="Q4_K_M", threads=4),
    EngineRecipe("vllm", "Qwen/Qwen2.5-0.5B", variant="bf16", dtype="bfloat16", max_num_seqs=4),
    EngineRecipe("vllm", "Qwen/Qwen2.5-0.5B-AWQ", variant="AWQ", quantization="awq"),
]
# Per cell: when its engine started (seconds after the run's start), its phases (name,
# seconds after the spawn, MiB resident then), its peak, start-up, request timing.
CELLS: list[dict[str, Any]] = [
    {
        "spawn": 0.01,
        "phases": [
            (phases.STARTED, 0.0, 6),
            (phases.WEIGHTS, 1.0, 600),
            (phases.KV_CACHE, 1.4, 620),
            (phases.READY, 1.5, 621),
            (phases.FIRST_REQUEST, 2.0, 621),
            (phases.IDLE, 9.0, 700),
            (phases.STOPPED, 9.2, 700),
        ],
        "peak": 700,
        "ready_s": 1.5,
        "ttft_ms": 100.0,
        "e2e_ms": 1000.0,
    },
    {
        "spawn": 10.0,
        "phases": [
            (phases.STARTED, 0.0, 3),
            (phases.WEIGHTS, 8.0, 1500),
            (phases.KV_CACHE, 15.0, 2300),
            (phases.READY, 20.0, 2310),
            (phases.FIRST_REQUEST, 20.5, 2310),
            (phases.IDLE, 24.0, 2500),
            (phases.STOPPED, 24.5, 0),  # as vLLM's: noted once its processes were gone
        ],
        "peak": 2500,
        "ready_s": 20.0,
        "ttft_ms": 50.0,
        "e2e_ms": 500.0,
    },
    {
        "spawn": 40.0,
        "phases": [(phases.STARTED, 0.0, 3), (phases.STOPPED, 2.0, 280)],
        "peak": 300,
        "ready_s": None,
    },
]


def _rss_at(cell: dict[str, Any], at: float) -> float:
    """The cell's resident MiB `at` seconds after its spawn: the last phase's figure,
    the peak while it served."""
    marks = [(t, mib) for _, t, mib in cell["phases"] if t <= at]
    return float(marks[-1][1]) if marks else 0.0


def _gpu_at(at: float) -> float:
    """The vLLM cell's GPU MiB: 0, 3,000 once its weights are in (the reading before its
    log said so at 8 s), 5,000 with its KV cache (by 15 s)."""
    return 0.0 if at < 7.5 else 3000.0 if at < 14.5 else 5000.0


def _requests(run_id: str, lane: int, c: int, start: float, cell: dict[str, Any]) -> list:
    rows = []
    e2e, ttft = cell["e2e_ms"], cell["ttft_ms"]
    for idx in range(PER_LEVEL):
        t_send = start + (idx // c) * e2e / 1000.0  # c at a time, back to back
        rows.append(
            {
                "run_id": run_id,
                "lane_idx": lane,
                "concurrency": c,
                "idx": idx,
                "warmup": False,
                "prompt_idx": 0,
                "t_send": t_send,
                "t_done": t_send + e2e / 1000.0,
                "ttft_ms": ttft,
                "e2el_ms": e2e,
                "tpot_ms": metrics.tpot_ms(ttft, e2e, TOKENS),
                "tokens_per_s": metrics.tokens_per_second(TOKENS, e2e),
                "itl_ms": [(e2e - ttft) / (TOKENS - 1)] * (TOKENS - 1),
                "prompt_tokens": 20,
                "output_tokens": TOKENS,
                "token_source": "server",
                "output_text": "hello",
                "finish_reason": "stop",
                "error": None,
                "server": None,
                "quality": quality.check_answer("hello", prompt_text="Say hello."),
            }
        )
    return rows


def _process(run_id: str, lane: int, cell: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """The lane's engine_process record, as launched_lane stores it at the end."""
    recipe = RECIPES[lane]
    spawned = T0 + cell["spawn"]
    failed = cell["ready_s"] is None
    return {
        "recipe": recipe.to_dict(),
        "settings": recipe.settings(),
        "variant": recipe.variant,
        "state": "failed" if failed else "stopped",
        "ready_s": cell["ready_s"],
        "exit": 1 if failed else 0,
        "exit_reason": "exited by itself" if failed else "stopped by servescope",
        "peak_memory_mib": cell["peak"],
        "peak_gpu_memory_mib": 5000 if gpu and lane == 1 else None,
        "log_tail": FAIL_TAIL if failed else ["INFO: Application startup complete."],
        "log": f"/data/jobs/{run_id}/lane-{lane}.log",
        "argv": ["engine"],
        "port": 8000 + lane,
        "pid": 100 + lane,
        "started_at": spawned,
        "first_sample_t": spawned + 0.001,
        "phases": [
            {"phase": name, "t": spawned + at, "rss_mib": mib, "at_s": at}
            for name, at, mib in cell["phases"]
        ],
        "error": FAIL_REASON if failed else None,
        "leftover_pids": [],
    }


def make_matrix_run(
    db: str | os.PathLike[str],
    run_id: str = "20250611-100000-matrix",
    slo: Slo | None = None,
    gpu: bool = False,
    names: list[str] | None = None,
) -> str:
    """A matrix run of three cells (see the module's docstring), through lib.store."""
    names = names or CELL_NAMES
    config = RunConfig(
        lanes=[LaneSpec.launched(r, name=n) for r, n in zip(RECIPES, names, strict=True)],
        prompts=[Prompt.from_text("Say hello.")],
        concurrency=list(LEVELS),
        requests=PER_LEVEL,
        sampling=Sampling(max_tokens=TOKENS),
        label="matrix",
        slo=slo,
    )
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), config.label, {}, status="completed")
        store.update_run(conn, run_id, started_at=T0)
        rows: list[dict[str, Any]] = []
        for lane, (recipe, name, cell) in enumerate(zip(RECIPES, names, CELLS, strict=True)):
            kind = recipe.engine
            info = {"kind": kind, "version": "1.0"}
            url = f"http://127.0.0.1:{8000 + lane}/v1"
            store.add_lane(conn, run_id, lane, name, "openai", url, recipe.served(), info, {})
            store.set_lane_process(conn, run_id, lane, _process(run_id, lane, cell, gpu))
            spawned = T0 + cell["spawn"]
            end = cell["phases"][-1][1]  # stopped: no reading from then on
            samples = []
            for i in range(math.ceil(end / 0.5)):
                at = 0.001 + 0.5 * i
                labels = {"processes": "1"}
                samples.append(
                    {
                        "t": spawned + at,
                        "source": "process",
                        "name": "rss_bytes",
                        "value": _rss_at(cell, at) * MIB,
                        "labels": labels,
                    }
                )
                if gpu and lane == 1:
                    samples.append(
                        {
                            "t": spawned + at,
                            "source": "process",
                            "name": "gpu_memory_used_bytes",
                            "value": _gpu_at(at) * MIB,
                            "labels": labels,
                        }
                    )
            store.add_samples(conn, run_id, lane, samples)
            for n, c in enumerate(LEVELS):
                if cell["ready_s"] is None:
                    reason = f"engine not ready: {FAIL_REASON}"
                    store.set_level(conn, run_id, lane, c, "failed", spawned, spawned, reason)
                    continue
                start = spawned + cell["ready_s"] + 0.5 + 3.0 * n
                store.set_level(conn, run_id, lane, c, "completed", start, start + 3.0)
                rows += _requests(run_id, lane, c, start, cell)
        store.add_requests(conn, rows)
        store.update_run(conn, run_id, finished_at=T0 + 45.0)
    return run_id


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def doc(db: Path) -> dict[str, Any]:
    return results.run_document(db, make_matrix_run(db))


def test_is_matrix(db, doc):
    assert mf.is_matrix(doc)
    assert [lane["name"] for lane in mf.cells(doc)] == CELL_NAMES
    plain = results.run_document(db, make_seed_run(db))
    assert not mf.is_matrix(plain)
    assert mf.matrix_frame(plain).empty
    assert mf.memory_rows(plain) == [] and mf.memory_frame(plain).empty


def test_matrix_frame_one_row_per_cell(doc):
    frame = mf.matrix_frame(doc)
    assert frame["cell"].tolist() == CELL_NAMES
    assert frame["engine"].tolist() == ["llama.cpp", "vllm", "vllm"]
    assert frame["variant"].tolist() == ["Q4_K_M", "bf16", "AWQ"]
    assert frame["settings"].tolist() == [
        "threads 4",
        "dtype bfloat16, max_num_seqs 4",
        "quantization awq",
    ]
    assert frame["state"].tolist() == ["stopped", "stopped", "failed"]
    assert frame["error"].isna().tolist() == [True, True, False]
    assert frame["error"].iloc[2] == FAIL_REASON
    assert frame["ready_s"].tolist()[:2] == [1.5, 20.0] and math.isnan(frame["ready_s"].iloc[2])
    assert frame["peak_memory_mib"].tolist() == [700.0, 2500.0, 300.0]
    # No GPU reading, no SLO: no such columns.
    assert "peak_gpu_memory_mib" not in frame
    assert not [c for c in frame if c.startswith(("slo_met_pct", "goodput", "capacity"))]
    # Per load: all four requests' tokens over the level's span.
    assert frame["out_tok_per_s@c=1"].tolist()[:2] == pytest.approx([50.0, 100.0])
    assert frame["out_tok_per_s@c=2"].tolist()[:2] == pytest.approx([100.0, 200.0])
    assert frame["ttft_p50_ms@c=1"].tolist()[:2] == [100.0, 50.0]
    assert frame["tpot_p50_ms@c=2"].tolist()[:2] == pytest.approx([900 / 49, 450 / 49])
    assert frame["e2el_p50_ms@c=2"].tolist()[:2] == [1000.0, 500.0]
    # The failed cell measured nothing.
    assert frame.iloc[2][mf.level_columns(frame, "out_tok_per_s")].isna().all()
    assert mf.level_columns(frame, "ttft_p50_ms") == ["ttft_p50_ms@c=1", "ttft_p50_ms@c=2"]


def test_column_labels():
    assert mf.column_label("out_tok_per_s@c=4") == "Output throughput (tok/s) · c=4"
    assert mf.column_label("ttft_p50_ms@2 req/s") == "TTFT p50 (ms) · 2 req/s"
    assert mf.column_label("peak_memory_mib") == "Peak memory (MiB)"
    assert mf.column_label("ready_s") == "Start-up to ready (s)"
    assert mf.column_label("capacity_users") == "Capacity at SLO (users at once)"
    assert mf.column_label("settings") == "Settings"
    assert mf.split_column("cell") == ("cell", None)


def test_winners_leave_failed_cells_out(doc):
    frame = mf.matrix_frame(doc)
    best = mf.winners(frame)
    vllm, llama = CELL_NAMES[1], CELL_NAMES[0]
    assert best["out_tok_per_s@c=1"] == vllm  # most throughput
    assert best["ttft_p50_ms@c=2"] == vllm  # least latency
    assert best["ready_s"] == llama  # quickest start
    # Least memory is llama.cpp's 700 MiB: the failed cell's 300 MiB does not count.
    assert best["peak_memory_mib"] == llama
    assert CELL_NAMES[2] not in best.values()
    # A shared best, or a single value, has no winner.
    tie = frame.copy()
    tie["ttft_p50_ms@c=1"] = 80.0
    tie.loc[0, "ready_s"] = float("nan")
    assert "ttft_p50_ms@c=1" not in mf.winners(tie)
    assert "ready_s" not in mf.winners(tie)


def test_page_slo_adds_attainment_goodput_and_capacity(doc):
    # TTFT ≤ 80 ms: only vLLM's 50 ms requests are within it.
    frame = mf.matrix_frame(doc, Slo(ttft_ms=80))
    assert frame["slo_met_pct@c=1"].tolist()[:2] == [0.0, 100.0]
    assert frame["goodput_req_per_s@c=2"].tolist()[:2] == pytest.approx([0.0, 4.0])
    assert frame["capacity_reason"].tolist() == ["none", "ceiling", "none"]
    assert math.isnan(frame["capacity_users"].iloc[0])
    assert frame["capacity_users"].iloc[1] == 2.0
    texts = mf.cell_texts(frame)
    assert texts["capacity_users"].tolist() == ["none", "≥ 2", "none"]
    assert texts["slo_met_pct@c=1"].tolist() == ["0", "100", "–"]
    best = mf.winners(frame)
    assert best["goodput_req_per_s@c=1"] == CELL_NAMES[1]
    assert "capacity_users" not in best  # one cell has a capacity: nothing to compare
    # A looser target: both cells hold at every load measured, a shared best.
    loose = mf.matrix_frame(doc, {"ttft_ms": 150})
    assert loose["capacity_users"].tolist()[:2] == [2.0, 2.0]
    assert "capacity_users" not in mf.winners(loose)


def test_run_with_its_own_slo_is_judged_by_it(db):
    own = results.run_document(db, make_matrix_run(db, "20250611-100001-own", Slo(ttft_ms=80)))
    frame = mf.matrix_frame(own)
    assert frame["slo_met_pct@c=2"].tolist()[:2] == [0.0, 100.0]
    assert frame["capacity_reason"].tolist()[1] == "ceiling"


def test_cell_texts(doc):
    texts = mf.cell_texts(mf.matrix_frame(doc))
    assert texts["ready_s"].tolist() == ["1.50", "20.00", "–"]
    assert texts["peak_memory_mib"].tolist() == ["700", "2,500", "300"]
    assert texts["out_tok_per_s@c=2"].tolist() == ["100.0", "200.0", "–"]
    assert texts["error"].tolist() == ["–", "–", FAIL_REASON]


def test_failed_cells(doc):
    (item,) = mf.failed_cells(doc)
    assert item["cell"] == CELL_NAMES[2] and item["lane_idx"] == 2
    assert item["reason"] == FAIL_REASON and item["exit"] == 1
    assert item["log_tail"] == FAIL_TAIL
    assert item["log"].endswith("/lane-2.log")
    levels = doc["lanes"][2]["levels"]
    assert {lv["error"] for lv in levels} == {f"engine not ready: {FAIL_REASON}"}


def test_memory_rows_seed_style(doc):
    rows = mf.memory_rows(doc)
    assert [r["row"] for r in rows] == [
        "6 MiB → 600 (weights loaded) → 620 (KV cache reserved) → 700 (peak under load)",
        "3 MiB → 1,500 (weights loaded) → 2,300 (KV cache reserved) → 2,500 (peak under load)",
        "3 MiB → 300 (peak)",  # never served: its peak is no load's
    ]
    assert [r["gpu_row"] for r in rows] == [None, None, None]
    assert [r["state"] for r in rows] == ["stopped", "stopped", "failed"]


def test_memory_rows_on_a_gpu(db):
    doc = results.run_document(db, make_matrix_run(db, gpu=True))
    rows = mf.memory_rows(doc)
    assert rows[1]["gpu_row"] == (
        "0 MiB → 3,000 (weights loaded) → 5,000 (KV cache reserved) → 5,000 (peak under load)"
    )
    assert rows[0]["gpu_row"] is None
    frame = mf.matrix_frame(doc)
    assert frame["peak_gpu_memory_mib"].tolist()[1] == 5000.0
    assert math.isnan(frame["peak_gpu_memory_mib"].iloc[0])
    memory = mf.memory_frame(doc)
    vllm = memory[(memory["lane_idx"] == 1) & (memory["kind"] == "sample")]
    assert vllm["gpu_mib"].max() == 5000.0
    assert memory[memory["lane_idx"] == 0]["gpu_mib"].isna().all()


def test_run_start_from_the_first_sample(doc):
    # The store's creation time is "now"; the run started at T0, when the samples' t
    # count from: the first sample's epoch time says so.
    assert abs(doc["created_at"] - T0) > 1000
    assert mf.run_start(doc) == pytest.approx(T0, abs=1e-6)


def test_memory_frame_counts_from_each_spawn(doc):
    memory = mf.memory_frame(doc)
    assert list(memory.columns) == mf.MEMORY_COLUMNS
    samples = memory[memory["kind"] == "sample"]
    for lane, cell in enumerate(CELLS):
        mine = samples[samples["lane_idx"] == lane].sort_values("t_s")
        # The first reading 1 ms after its own spawn, whenever in the run that was.
        assert mine["t_s"].iloc[0] == pytest.approx(0.001, abs=1e-6)
        assert mine["t_s"].iloc[1] == pytest.approx(0.501, abs=1e-6)
        held = [m for p, _, m in cell["phases"] if p != phases.STOPPED]
        assert mine["rss_mib"].max() == pytest.approx(max(held))
    vllm = samples[samples["lane_idx"] == 1].set_index("t_s")["rss_mib"]
    assert vllm.loc[vllm.index[vllm.index > 8.0][0]] == 1500.0  # weights in by 8 s
    marks = memory[(memory["kind"] == "phase") & (memory["lane_idx"] == 1)]
    assert marks["phase"].tolist() == [p for p, _, _ in CELLS[1]["phases"]]
    assert marks["t_s"].tolist() == [t for _, t, _ in CELLS[1]["phases"]]
    assert marks["rss_mib"].tolist() == [m for _, _, m in CELLS[1]["phases"]]
    assert set(memory["cell"]) == set(CELL_NAMES)


def _rate_level(rate: float | None, label: str, tok_s: float, passed: bool) -> dict[str, Any]:
    """A rate level of a run document, as results.run_document gives one."""
    return {
        "load_mode": "rate",
        "load": rate,
        "load_label": label,
        "completed": 8,
        "status": "completed",
        "output_throughput": tok_s,
        "ttft_ms": {"p50": 100.0},
        "tpot_ms": {"p50": 20.0},
        "e2el_ms": {"p50": 1000.0},
        "slo": {"attainment": 1.0 if passed else 0.5, "goodput": 2.0, "passed": passed},
    }


def rate_matrix_doc() -> dict[str, Any]:
    """A judged open-loop run document of one plain endpoint and one cell."""
    levels = [
        _rate_level(8.0, "8 req/s", 80.0, False),
        _rate_level(None, "all at once", 90.0, False),
        _rate_level(2.0, "2 req/s", 20.0, True),
    ]
    process = {"state": "stopped", "recipe": {"engine": "vllm"}, "settings": {}}
    capacity = {"value": 2.0, "reason": "found", "mode": "rate"}
    return {
        "lanes": [
            {"name": "plain endpoint", "levels": levels},
            {"name": "cell", "levels": levels, "engine_process": process, "capacity": capacity},
        ]
    }


def test_rate_cells_by_their_rates():
    """A judged rate matrix: loads in rate order ("all at once" last), capacity in req/s."""
    doc = rate_matrix_doc()
    assert mf.load_labels(doc) == ["2 req/s", "8 req/s", "all at once"]
    frame = mf.matrix_frame(doc)
    assert frame["cell"].tolist() == ["cell"]  # the plain endpoint is no cell
    assert frame["lane_idx"].tolist() == [1]
    assert mf.level_columns(frame, "out_tok_per_s") == [
        "out_tok_per_s@2 req/s",
        "out_tok_per_s@8 req/s",
        "out_tok_per_s@all at once",
    ]
    assert frame["capacity_req_per_s"].tolist() == [2.0] and "capacity_users" not in frame
    assert mf.column_label("capacity_req_per_s") == "Capacity at SLO (req/s)"
    assert frame["slo_met_pct@8 req/s"].tolist() == [50.0]
