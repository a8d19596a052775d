"""History page: lib/analysis/history.py, the overlay figures, and the page through AppTest."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib import store
from lib.analysis import history
from lib.charts import history as charts_history
from lib.core.records import LaneSpec, Prompt, RunConfig
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "history.py")


def make_run(
    db,
    run_id: str,
    lanes: list[tuple[str, str, str]],  # (engine, url, model)
    figures: dict[tuple[int, int], tuple[float, float, int]],  # (lane, c) -> (ttft, e2el, n)
    label: str = "",
    status: str = "completed",
    out_tokens: int = 100,
    created_at: float | None = None,
    started_by: str | None = None,
    host: str | None = None,
    kinds: list[str] | None = None,
) -> None:
    """A finished run written through lib.store, with requests whose figures are known.

    Each level's n requests are sent together at t=0 and all take e2el ms, so the
    level lasts e2el ms and its output throughput is n * out_tokens / (e2el / 1000).
    `kinds` are what each lane's endpoint said it is (default: ollama or vllm by engine).
    """
    config = RunConfig(
        lanes=[LaneSpec(engine=e, base_url=u, model=m) for e, u, m in lanes],  # type: ignore[arg-type]
        prompts=[Prompt.from_text("안녕하세요")],
        concurrency=sorted({c for _, c in figures}),
        label=label,
    )
    with store.opened(db) as conn:
        store.create_run(
            conn,
            run_id,
            config.to_dict(),
            label=label,
            status=status,
            started_by=started_by,
            host=host,
        )
        if created_at is not None:
            conn.execute("UPDATE runs SET created_at = ? WHERE run_id = ?", (created_at, run_id))
        for i, (engine, url, model) in enumerate(lanes):
            kind = kinds[i] if kinds else "ollama" if engine == "ollama" else "vllm"
            store.add_lane(
                conn, run_id, i, f"{kind}:{model}", engine, url, model, {"kind": kind}, {}
            )
        rows = []
        for (lane, c), (ttft, e2el, n) in figures.items():
            store.set_level(conn, run_id, lane, c, "completed", 1.0, 2.0)
            for k in range(n):
                rows.append(
                    {
                        "run_id": run_id,
                        "lane_idx": lane,
                        "concurrency": c,
                        "idx": k,
                        "prompt_idx": 0,
                        "t_send": 1000.0,
                        "t_done": 1000.0 + e2el / 1000.0,
                        "ttft_ms": ttft,
                        "e2el_ms": e2el,
                        "tpot_ms": (e2el - ttft) / (out_tokens - 1),
                        "tokens_per_s": out_tokens / (e2el / 1000.0),
                        "output_tokens": out_tokens,
                        "prompt_tokens": 10,
                        "output_text": "답",
                    }
                )
        store.add_requests(conn, rows)
        store.update_run(conn, run_id, finished_at=time.time())


VLLM = ("openai", "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct-AWQ")
OLLAMA = ("ollama", "http://127.0.0.1:11434", "qwen2.5:7b-instruct-q4_K_M")


@pytest.fixture
def two_runs(db):
    # Before: vLLM 4 req at c=1 in 1 s → 400 tok/s; 8 req at c=8 in 2 s → 400 tok/s.
    make_run(
        db,
        "run-a",
        [VLLM, OLLAMA],
        {(0, 1): (100.0, 1000.0, 4), (0, 8): (200.0, 2000.0, 8), (1, 1): (150.0, 1000.0, 4)},
        label="before",
        created_at=time.time() - 3600,
    )
    # After: vLLM at c=8 in 1.449 s → 552 tok/s (+38%), TTFT at c=1 80 ms (−20%).
    make_run(
        db,
        "run-b",
        [VLLM],
        {(0, 1): (80.0, 1000.0, 4), (0, 8): (200.0, 1449.0, 8)},
        label="after",
    )
    return db


# --- lib/analysis/history.py ---------------------------------------------------------


def test_history_frame_headlines(two_runs):
    runs = history.load_runs()
    assert [r["run_id"] for r in runs] == ["run-b", "run-a"]  # newest first
    frame = history.history_frame(runs, history.levels_for(runs))
    a = frame.set_index("run_id").loc["run-a"]
    assert a["label"] == "before" and a["status"] == "completed"
    assert a["lanes"] == "vllm:Qwen/Qwen2.5-7B-Instruct-AWQ, ollama:qwen2.5:7b-instruct-q4_K_M"
    assert a["models"] == "Qwen/Qwen2.5-7B-Instruct-AWQ, qwen2.5:7b-instruct-q4_K_M"
    assert a["levels"] == "1, 8"
    assert (a["completed"], a["failed"]) == (16, 0)
    assert a["best_out_tok_s"] == pytest.approx(400.0)
    assert a["ttft_p50_low_ms"] == pytest.approx(100.0)
    assert a["ttft_low_at"] == "c=1 · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ"
    b = frame.set_index("run_id").loc["run-b"]
    assert b["best_out_tok_s"] == pytest.approx(8 * 100 / 1.449)
    assert b["best_at"] == "c=8 · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ"


def test_history_frame_run_without_requests(db):
    with store.opened(db) as conn:
        config = RunConfig(lanes=[LaneSpec(*VLLM)], prompts=[Prompt.from_text("x")])  # type: ignore[arg-type]
        store.create_run(conn, "pending-1", config.to_dict(), status="pending")
    runs = history.load_runs()
    frame = history.history_frame(runs, history.levels_for(runs))
    row = frame.iloc[0]
    assert row["lanes"] == "openai:Qwen/Qwen2.5-7B-Instruct-AWQ"  # from the config
    assert row["completed"] == 0 and row["best_out_tok_s"] != row["best_out_tok_s"]  # NaN


def test_overlay_and_headline_diffs(two_runs):
    runs = history.load_runs()
    overlay = history.overlay_frame(runs, history.levels_for(runs), ["run-a", "run-b"])
    assert sorted(set(overlay["series"])) == [
        "after · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ",
        "before · ollama:qwen2.5:7b-instruct-q4_K_M",
        "before · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ",
    ]
    diffs = history.headline_diffs(overlay, "run-a").set_index("metric")
    assert diffs.loc["output throughput", "text"] == "+38% output throughput at c=8"
    assert bool(diffs.loc["output throughput", "better"]) is True
    assert diffs.loc["p50 TTFT", "text"] == "-20% p50 TTFT at c=1"
    assert bool(diffs.loc["p50 TTFT", "better"]) is True
    assert diffs.loc["p50 E2E latency", "concurrency"] == 8
    assert set(diffs["lane"]) == {"vllm:Qwen/Qwen2.5-7B-Instruct-AWQ"}  # Ollama lane unmatched
    reverse = history.headline_diffs(overlay, "run-b").set_index("metric")
    assert reverse.loc["output throughput", "text"] == "-28% output throughput at c=8"
    assert bool(reverse.loc["output throughput", "better"]) is False
    assert history.headline_diffs(overlay, "missing").empty


def test_match_lanes():
    a = [("vllm:X", "X"), ("ollama:y", "y")]
    assert history.match_lanes(a, [("ollama:y", "y")]) == [("ollama:y", "ollama:y")]
    assert history.match_lanes(a, [("vllm:X @h2", "X")]) == [("vllm:X", "vllm:X @h2")]
    # One lane left on each side: an engine-against-engine comparison.
    assert history.match_lanes([("vllm:X", "X")], [("ollama:y", "y")]) == [("vllm:X", "ollama:y")]
    assert history.match_lanes(a, [("p", "p"), ("q", "q")]) == []


def test_relabel_and_delete(two_runs):
    assert history.relabel_run("run-a", "  AWQ on the 4090  ") == "AWQ on the 4090"
    with store.opened(two_runs) as conn:
        assert store.get_run(conn, "run-a")["label"] == "AWQ on the 4090"
    with pytest.raises(ValueError, match="longer than"):
        history.relabel_run("run-a", "x" * 201)
    with pytest.raises(ValueError, match="control"):
        history.relabel_run("run-a", "a\x1bb")
    with pytest.raises(ValueError, match="No run"):
        history.relabel_run("nope", "x")
    history.delete_run("run-a")
    with store.opened(two_runs) as conn:
        assert store.get_run(conn, "run-a") is None
        assert store.get_requests(conn, "run-a") == []
    with pytest.raises(ValueError, match="No run"):
        history.delete_run("run-a")


def test_delete_refuses_a_live_run(db):
    make_run(db, "live-1", [VLLM], {(0, 1): (10.0, 100.0, 1)}, status="running")
    # A process whose command line names the run, as jobs.start's child does.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "live-1"])
    try:
        with store.opened(db) as conn:
            store.update_run(conn, "live-1", pid=child.pid)
        with pytest.raises(ValueError, match="cancel it"):
            history.delete_run("live-1")
    finally:
        child.kill()
        child.wait()
    history.delete_run("live-1")  # its process is gone: deletable


# --- overlay figures ----------------------------------------------------------------------


def test_overlay_figures(two_runs):
    runs = history.load_runs()
    overlay = history.overlay_frame(runs, history.levels_for(runs), ["run-a", "run-b"])
    fig = charts_history.throughput_overlay(overlay)
    traces = {t["name"]: t for t in charts_history.trace_summary(fig)}
    assert set(traces) == {
        "before · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ",
        "before · ollama:qwen2.5:7b-instruct-q4_K_M",
        "after · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ",
    }
    before_v = traces["before · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ"]
    after_v = traces["after · vllm:Qwen/Qwen2.5-7B-Instruct-AWQ"]
    assert before_v["color"] == after_v["color"]  # same lane, same colour
    assert before_v["dash"] != after_v["dash"]  # different run, different line
    assert before_v["x"] == [1, 8] and after_v["y"][1] == pytest.approx(552.1, abs=0.1)
    assert fig.layout.title.text.startswith("Output throughput")
    assert fig.layout.yaxis.title.text == "Output throughput (tok/s)"
    assert fig.layout.showlegend is True
    lat = charts_history.latency_overlay(overlay, "ttft_p50_ms")
    assert lat.layout.yaxis.title.text == "TTFT p50 (ms)"
    assert len(lat.data) == 3
    empty = charts_history.throughput_overlay(history.overlay_frame(runs, {}, ["run-a"]))
    assert len(empty.data) == 0 and empty.layout.annotations


# --- the page (AppTest) -------------------------------------------------------------------


def unescape(markdown: str) -> str:
    """The text a reader sees of markdown escaped by formatting.esc_md."""
    return markdown.replace("\\", "")


def run_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=30).run()


def relabel_input(at: AppTest):
    """The relabel form's text box (the label filter above the table is another)."""
    return next(t for t in at.text_input if t.label == "Label")


def test_page_empty_store(db):
    at = run_page()
    assert not at.exception
    assert "No runs yet" in at.info[0].value
    assert len(at.dataframe) == 0


def test_page_lists_runs(two_runs):
    at = run_page()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run_id"]) == ["run-b", "run-a"]
    assert list(table["label"]) == ["after", "before"]
    assert table.loc[table["run_id"] == "run-a", "best_out_tok_s"].iloc[0] == pytest.approx(400)
    assert at.multiselect(key="history_pick").options == ["after · completed · run-b",
                                                          "before · completed · run-a"]  # fmt: skip


def test_page_relabel(two_runs):
    at = run_page()
    at.multiselect(key="history_pick").set_value(["run-a"]).run()
    assert not at.exception
    relabel_input(at).input("Q4_K_M vs AWQ, 4090")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    with store.opened(two_runs) as conn:
        assert store.get_run(conn, "run-a")["label"] == "Q4_K_M vs AWQ, 4090"
    assert unescape(at.success[0].value) == "Label saved."
    assert "Q4_K_M vs AWQ, 4090" in list(at.dataframe[0].value["label"])
    # A bad label: one line on the page, nothing stored.
    relabel_input(at).input("bad\x07label")
    at.button[0].click().run()
    assert not at.exception
    assert "control characters" in at.error[0].value


def test_page_delete_needs_confirmation(two_runs):
    at = run_page()
    at.multiselect(key="history_pick").set_value(["run-a"]).run()
    delete = next(b for b in at.button if b.label == "Delete run")
    assert delete.disabled
    at.checkbox(key="history_confirm_delete").check().run()
    delete = next(b for b in at.button if b.label == "Delete run")
    assert not delete.disabled
    delete.click().run()
    assert not at.exception
    with store.opened(two_runs) as conn:
        assert store.get_run(conn, "run-a") is None
        assert store.get_run(conn, "run-b") is not None
    assert unescape(at.success[0].value) == "Deleted run run-a."
    assert list(at.dataframe[0].value["run_id"]) == ["run-b"]
    assert at.multiselect(key="history_pick").value == []


def test_page_compare_two_runs(two_runs):
    at = run_page()
    at.multiselect(key="history_pick").set_value(["run-a", "run-b"]).run()
    assert not at.exception
    diffs = at.dataframe[1].value
    assert "+38% output throughput at c=8" in list(diffs["text"])
    assert len(at.get("plotly_chart")) == 2
    at.selectbox(key="history_baseline").set_value("run-b").run()
    assert not at.exception
    assert "-28% output throughput at c=8" in list(at.dataframe[1].value["text"])
    at.selectbox(key="history_latency_metric").set_value("e2el_p50_ms").run()
    assert not at.exception


def test_page_with_a_run_made_by_the_cli(db):
    """A real run through `python -m lib.cli run` against the scripted vLLM server."""
    script = OpenAIScript(models=["scripted-model"], ttft_ms=5, gap_ms=1, tokens=8)
    with OpenAIServer(script) as server:
        done = subprocess.run(
            [sys.executable, "-m", "lib.cli", "run", "--engine", "openai",
             "--base-url", server.base_url, "--model", "scripted-model", "--prompt", "hi",
             "--concurrency", "1,2", "--requests", "4", "--max-tokens", "8",
             "--label", "cli run", "--db", str(db), "--quiet"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    at = run_page()
    assert not at.exception
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["label"] == "cli run" and row["status"] == "completed"
    assert row["levels"] == "1, 2" and row["completed"] == 8
    assert row["best_out_tok_s"] > 0


def test_page_inside_the_app_links_to_results(two_runs, monkeypatch):
    """Through app.py's navigation the Open link is a real page link with ?run=."""
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")  # the sidebar probes nothing
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    app = str(Path(PAGE).parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=30).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    at.multiselect(key="history_pick").set_value(["run-a"]).run()
    assert not at.exception
    links = [(x.proto.page, x.proto.query_string) for x in at.get("page_link")]
    assert ("results", "run=run-a") in links


def test_page_says_which_runs_failed(two_runs):
    """A run whose lane's every request failed is not listed as "completed", whether the
    runner judged it (new runs) or it was stored before outcomes were judged."""
    with store.opened(two_runs) as conn:
        conn.execute(
            "UPDATE requests SET error = 'timed out after 60 s', ttft_ms = NULL,"
            " e2el_ms = NULL, output_tokens = NULL WHERE run_id = 'run-a' AND lane_idx = 1"
        )
    at = run_page()
    assert not at.exception
    table = at.dataframe[0].value
    status = dict(zip(table["run_id"], table["status"], strict=True))
    assert status == {"run-a": "completed with failures", "run-b": "completed"}
    assert "before · completed with failures · run-a" in at.multiselect(key="history_pick").options
