"""lib/analysis/frames.py: DataFrames from store rows and results documents, checked by hand.

`make_seed_run` writes the seed log's situation through lib.store (Ollama queueing,
vLLM batching, the AWQ lane answering a Korean prompt in Chinese); the AppTests of the
Results and Run pages reuse it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from lib import quality, store
from lib.analysis import frames, results
from lib.core import metrics
from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling

KOREAN_PROMPT = "인공지능 기술에 관한 짧은 뉴스 기사를 한국어로 써 주세요."
KOREAN_ANSWER = "인공지능 기술이 빠르게 발전하며 여러 산업에 변화를 이끌고 있습니다."
CHINESE_ANSWER = "人工智能技术正在快速发展，推动各个行业的变革。"
OLLAMA = ("ollama", "http://127.0.0.1:11434", "qwen2.5:7b-instruct-q4_K_M")
VLLM = ("openai", "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct-AWQ")
LANE_NAMES = ["Ollama · qwen2.5:7b-instruct-q4_K_M", "vLLM · Qwen/Qwen2.5-7B-Instruct-AWQ"]
T0 = 1_750_000_000.0
E2E_MS = 1000.0  # every request takes 1 s of service
TOKENS = 50


def _request(run_id: str, lane: int, c: int, idx: int, t_send: float, e2e_ms: float, text: str):
    ttft = 100.0 + (e2e_ms - E2E_MS)  # any wait is time before the first token
    row = {
        "run_id": run_id,
        "lane_idx": lane,
        "concurrency": c,
        "idx": idx,
        "warmup": False,
        "prompt_idx": 0,
        "t_send": t_send,
        "t_done": t_send + e2e_ms / 1000.0,
        "ttft_ms": ttft,
        "e2el_ms": e2e_ms,
        "tpot_ms": metrics.tpot_ms(ttft, e2e_ms, TOKENS),
        "tokens_per_s": metrics.tokens_per_second(TOKENS, e2e_ms),
        "itl_ms": [],
        "prompt_tokens": 20,
        "output_tokens": TOKENS,
        "token_source": "server",
        "output_text": text,
        "finish_reason": "stop",
        "error": None,
        "server": None,
        "quality": quality.check_answer(text, prompt_text=KOREAN_PROMPT),
    }
    if lane == 0:  # Ollama reports its own timings; the wait shows as queue
        row["server"] = metrics.ollama_server_timings(
            {
                "total_duration": int(e2e_ms * 1e6),
                "prompt_eval_duration": int(100 * 1e6),
                "eval_duration": int((E2E_MS - 100) * 1e6),
                "eval_count": TOKENS,
            }
        )
    return row


def make_seed_run(
    db: str | os.PathLike[str],
    run_id: str = "20250609-100000-seed01",
    status: str = "completed",
    levels: tuple[int, ...] = (1, 5),
    requests: int = 5,
    with_requests: bool = True,
) -> str:
    """A run as the seed log saw it, written through lib.store.

    Level c of each lane starts at T0 + 10 s × position; at c=1 requests go one after
    another (1 s each). At c=5 all five are sent at once: vLLM serves them together
    (all 1 s), Ollama in turn (1, 2, 3, 4, 5 s). The vLLM lane answers 4 of 5 requests
    of each level in Chinese.
    """
    config = RunConfig(
        lanes=[
            LaneSpec(e, u, m, name=n)  # type: ignore[arg-type]
            for (e, u, m), n in zip((OLLAMA, VLLM), LANE_NAMES, strict=True)
        ],
        prompts=[Prompt.from_text(KOREAN_PROMPT)],
        concurrency=list(levels),
        requests=requests,
        sampling=Sampling(max_tokens=64, seed=7),
        label="seed: Ollama Q4 vs vLLM AWQ",
    )
    env = {"hardware": {"gpu": "NVIDIA RTX 4090", "cpus": 16}, "tool_version": "0.1.0"}
    with store.opened(db) as conn:
        store.create_run(conn, run_id, config.to_dict(), config.label, env, status=status)
        store.update_run(conn, run_id, started_at=T0)
        infos = [
            ({"kind": "ollama", "version": "0.9.0"}, {"quantization": "Q4_K_M"}),
            ({"kind": "vllm", "version": "0.9.1"}, {"quantization": "AWQ"}),
        ]
        pairs = zip((OLLAMA, VLLM), LANE_NAMES, strict=True)
        for i, ((engine, url, model), name) in enumerate(pairs):
            info, model_info = infos[i]
            model_info = {**model_info, "context_length": 32768, "digest": f"sha256:{i}"}
            store.add_lane(conn, run_id, i, name, engine, url, model, info, model_info)
        rows = []
        position = 0
        for lane in (0, 1):
            for c in levels:
                start = T0 + 10.0 * position
                position += 1
                done = status == "completed"
                store.set_level(
                    conn,
                    run_id,
                    lane,
                    c,
                    "completed" if done else "running",
                    start,
                    start + 6.0 if done else None,
                )
                if not with_requests:
                    continue
                for idx in range(requests):
                    if c == 1:
                        t_send, e2e = start + idx * E2E_MS / 1000.0, E2E_MS
                    else:
                        t_send = start
                        e2e = E2E_MS * (idx + 1) if lane == 0 else E2E_MS
                    text = CHINESE_ANSWER if lane == 1 and idx % 5 != 0 else KOREAN_ANSWER
                    rows.append(_request(run_id, lane, c, idx, t_send, e2e, text))
        store.add_requests(conn, rows)
        if status == "completed":
            store.update_run(conn, run_id, finished_at=T0 + 10.0 * position)
    return run_id


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


def _rows(db: Path, run_id: str) -> list[dict]:
    with store.opened(db) as conn:
        return store.get_requests(conn, run_id)


def test_request_log_reads_only_new_rows(db):
    run_id = make_seed_run(db)
    log = frames.RequestLog(run_id)
    with store.opened(db) as conn:
        assert log.refresh(conn) == 20
        assert log.refresh(conn) == 0  # nothing new: nothing read again
        extra = _request(run_id, 1, 5, 99, T0 + 100, E2E_MS, KOREAN_ANSWER)
        store.add_requests(conn, [extra])
        assert log.refresh(conn) == 1
    rows = log.rows()
    assert len(rows) == len(log) == 21
    assert set(rows[0]) == set(frames.SLIM_FIELDS)  # answers are not kept in memory
    assert rows[-1]["idx"] == 99


def test_request_frame_times_and_failures(db):
    run_id = make_seed_run(db)
    with store.opened(db) as conn:
        failed = _request(run_id, 0, 1, 9, T0 + 3.0, E2E_MS, "")
        failed |= {"error": "timed out after 2 s", "e2el_ms": None, "ttft_ms": None}
        failed["t_done"] = T0 + 5.0
        store.add_requests(conn, [failed])
        run = store.get_run(conn, run_id)
    rows = _rows(db, run_id)
    t0 = frames.run_start(run, rows)
    assert t0 == T0
    frame = frames.request_frame(rows, LANE_NAMES, t0)
    assert list(frame.columns) == list(frames.REQUEST_COLUMNS)
    assert len(frame) == 21
    assert frame.loc[0, "lane"] == LANE_NAMES[0]
    assert frame.loc[0, "t_rel_s"] == 0.0
    bad = frame[frame["failed"]]
    assert len(bad) == 1
    assert bad.iloc[0]["elapsed_ms"] == pytest.approx(2000.0)  # shown where it happened
    assert math.isnan(bad.iloc[0]["e2el_ms"])


def test_level_frame_matches_results_document(db):
    """The live view (level_frame over slim rows) and a finished run's document agree."""
    run_id = make_seed_run(db)
    live = frames.level_frame(_rows(db, run_id), LANE_NAMES, [1, 5])
    doc = frames.summary_frame(results.run_document(db, run_id))
    assert list(live.columns) == list(frames.LEVEL_COLUMNS)
    assert live[["lane", "concurrency"]].values.tolist() == [
        [LANE_NAMES[0], 1],
        [LANE_NAMES[0], 5],
        [LANE_NAMES[1], 1],
        [LANE_NAMES[1], 5],
    ]
    for col in ("out_tok_per_s", "ttft_p50_ms", "e2el_p50_ms", "tok_per_s_p50"):
        assert live[col].tolist() == pytest.approx(doc[col].tolist())
    by = live.set_index(["lane_idx", "concurrency"])
    # Ollama queues at c=5: latencies 1..5 s, the level takes 5 s, throughput stays flat.
    assert by.loc[(0, 5), "e2el_p50_ms"] == pytest.approx(3000.0)
    assert by.loc[(0, 5), "out_tok_per_s"] == pytest.approx(5 * TOKENS / 5.0)
    # vLLM batches: 1 s each, all five in 1 s, five times the throughput.
    assert by.loc[(1, 5), "e2el_p50_ms"] == pytest.approx(1000.0)
    assert by.loc[(1, 5), "out_tok_per_s"] == pytest.approx(5 * TOKENS / 1.0)


def test_progress_frame_and_kpis(db):
    run_id = make_seed_run(db, status="running", levels=(1, 5))
    with store.opened(db) as conn:
        counts = store.count_requests(conn, run_id)
        levels = store.get_levels(conn, run_id)
    counts[(1, 5)] = {"completed": 2, "failed": 1}
    levels = [lv for lv in levels if (lv["lane_idx"], lv["concurrency"]) != (1, 5)]
    progress = frames.progress_frame(LANE_NAMES, [1, 5], 5, counts, levels)
    assert list(progress.columns) == list(frames.PROGRESS_COLUMNS)
    last = progress.iloc[-1]
    assert (last["completed"], last["failed"], last["total"]) == (2, 1, 5)
    assert last["fraction"] == pytest.approx(0.6)
    assert last["status"] == "waiting"
    assert progress.iloc[0]["status"] == "running"

    level_df = frames.level_frame(_rows(db, run_id), LANE_NAMES, [1, 5])
    kpis = frames.kpis(level_df, [*LANE_NAMES, "third lane, no data yet"])
    assert [k["concurrency"] for k in kpis] == [5, 5, None]
    assert kpis[0]["ttft_p50_ms"] == pytest.approx(2100.0)  # 100 ms + 2 s in the queue
    assert kpis[1]["out_tok_per_s"] == pytest.approx(250.0)
    assert kpis[2]["ttft_p50_ms"] is None and kpis[2]["failed"] == 0


def test_lane_names_before_and_after_lanes_are_written():
    run = {"config": {"lanes": [{"engine": "ollama", "model": "m", "name": ""}]}}
    assert frames.lane_names(run, []) == ["ollama:m"]
    lanes = [{"lane_idx": 1, "name": "B"}, {"lane_idx": 0, "name": "A"}]
    assert frames.lane_names(run, lanes) == ["A", "B"]


def test_level_spans(db):
    run_id = make_seed_run(db, status="running")
    with store.opened(db) as conn:
        levels = store.get_levels(conn, run_id)
    spans = frames.level_spans(levels, LANE_NAMES, T0, now=T0 + 100)
    assert [(s["lane_idx"], s["concurrency"], s["start_s"]) for s in spans] == [
        (0, 1, 0.0),
        (0, 5, 10.0),
        (1, 1, 20.0),
        (1, 5, 30.0),
    ]
    assert spans[-1]["end_s"] == 100.0  # still running: up to now
    assert frames.level_spans(levels, LANE_NAMES, None) == []


def test_documents_to_tables(db):
    run_id = make_seed_run(db)
    doc = results.run_document(db, run_id)

    info = frames.lane_info_frame(doc)
    assert info["engine"].tolist() == ["ollama", "vllm"]
    assert info["quantization"].tolist() == ["Q4_K_M", "AWQ"]
    assert info["context_length"].tolist() == [32768, 32768]

    settings = dict(frames.settings_frame(doc).values.tolist())
    assert settings["Seed"] == "7"
    assert settings["Concurrency levels"] == "1, 5"
    assert settings["Hardware: gpu"] == "NVIDIA RTX 4090"
    assert settings["servescope version"] == "0.1.0"

    q = frames.quality_frame(doc).set_index("lane")
    assert q.loc[LANE_NAMES[1], "language"] == "8/10 drifted to Chinese"
    assert q.loc[LANE_NAMES[0], "language"] == "0/10 drifted"
    assert q.loc[LANE_NAMES[1], "lang_drift"] == 8

    server = frames.server_timings_frame(doc)
    assert server["lane"].unique().tolist() == [LANE_NAMES[0]]  # only Ollama reports them
    queue = server.set_index("concurrency")["server_queue_ms"]
    assert queue[1] == pytest.approx(0.0)
    assert queue[5] == pytest.approx(2000.0)  # median wait of 0, 1, 2, 3, 4 s


def test_answers_by_prompt(db):
    run_id = make_seed_run(db)
    doc = results.run_document(db, run_id)
    assert frames.levels_of(doc) == [1, 5]
    items = frames.answers_by_prompt(doc)  # lowest level by default
    assert len(items) == 1
    assert items[0]["prompt"] == KOREAN_PROMPT
    answers = items[0]["answers"]
    assert list(answers) == LANE_NAMES
    assert len(answers[LANE_NAMES[1]]) == 5
    assert answers[LANE_NAMES[1]][1]["output_text"] == CHINESE_ANSWER
    assert frames.answers_by_prompt(doc, concurrency=64) == []


def test_empty_inputs_give_empty_frames():
    assert frames.request_frame([], [], None).empty
    assert frames.level_frame([], []).empty
    empty_doc = {"lanes": [], "settings": {}, "environment": {}}
    assert frames.summary_frame(empty_doc).empty
    assert frames.quality_frame(empty_doc).empty
    assert frames.server_timings_frame(empty_doc).empty
    assert frames.answers_by_prompt(empty_doc) == []
