"""Results page through AppTest: empty store, a finished run, an unknown id, a run that
is still going (driven with repeated at.run(): AppTest cannot fire run_every)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lib import store
from tests.analysis.test_frames import (
    CHINESE_ANSWER,
    KOREAN_ANSWER,
    KOREAN_PROMPT,
    LANE_NAMES,
    T0,
    _request,
    make_seed_run,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "results.py")
APP = str(ROOT / "app.py")


def _texts(elements) -> list[str]:
    """Element texts with markdown escapes undone (names are escaped before display)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _open(run_id: str | None = None, page: str = PAGE) -> AppTest:
    at = AppTest.from_file(page, default_timeout=30)
    if run_id:
        at.query_params["run"] = run_id
    return at.run()


def test_empty_store(db):
    at = _open()
    assert not at.exception
    assert any("No runs yet" in t for t in _texts(at.info))


def test_unknown_run_id_is_a_message(db):
    make_seed_run(db)
    at = _open("does-not-exist")
    assert not at.exception
    assert any("No run does-not-exist in the store" in t for t in _texts(at.error))
    # The picker falls back to the newest run.
    assert at.selectbox(key="results_run").value == "20250609-100000-seed01"


def test_finished_run(db):
    run_id = make_seed_run(db)
    at = _open(run_id)
    assert not at.exception
    assert at.selectbox(key="results_run").value == run_id
    assert "active_run" not in at.session_state  # browsing results leaves the Run page be
    markdown = " ".join(_texts(at.markdown))
    assert "seed: Ollama Q4 vs vLLM AWQ" in markdown
    assert ":green-badge[completed]" in markdown
    # Per-lane tiles with units.
    metrics = {(m.label, m.value) for m in at.metric}
    assert ("TTFT p50", "2,100 ms") in metrics  # Ollama at c=5: 100 ms + 2 s queued
    assert ("Output tok/s", "250 tok/s") in metrics  # vLLM at c=5
    # Six charts, keyed per page and run.
    charts = at.get("plotly_chart")
    assert len(charts) == 6
    # Summary table with units in the headers' config.
    summary = at.dataframe[0]
    frame = summary.value
    assert frame[["lane", "concurrency"]].values.tolist() == [
        [LANE_NAMES[0], 1],
        [LANE_NAMES[0], 5],
        [LANE_NAMES[1], 1],
        [LANE_NAMES[1], 5],
    ]
    assert frame["out_tok_per_s"].tolist() == pytest.approx([50.0, 50.0, 50.0, 250.0])
    # The verdict in words: the seed team's finding, Ollama queues while vLLM batches.
    assert "What the numbers say" in _texts(at.subheader)
    assert f"**{LANE_NAMES[0]}**: queues: serves about 1 request at a time" in markdown
    assert f"**{LANE_NAMES[1]}**: batches: at 5 users each keeps" in markdown
    # Quality: the quantized lane drifted to Chinese.
    assert "8/10 drifted to Chinese" in markdown
    assert "0/10 drifted" in markdown
    # Answers side by side, as code blocks (plain text), both lanes.
    codes = _texts(at.code)
    assert KOREAN_ANSWER in codes and CHINESE_ANSWER not in codes  # first vLLM answer: Korean
    assert KOREAN_PROMPT in _texts(at.text)
    assert len(at.dataframe) >= 4  # summary, server timings, lanes, settings


def test_answers_at_another_level(db):
    run_id = make_seed_run(db)
    at = _open(run_id)
    at.selectbox(key=f"answers-level-{run_id}").set_value(5).run()
    assert not at.exception
    assert at.selectbox(key=f"answers-level-{run_id}").value == 5


def test_untrusted_output_is_never_markdown(db):
    run_id = make_seed_run(db, with_requests=False)
    nasty = "**bold** <img src=x onerror=alert(1)> [link](http://evil) :red[x]"
    with store.opened(db) as conn:
        row = _request(run_id, 0, 1, 0, T0, 1000.0, nasty)
        row["quality"] = {"flags": [{"code": "repetition", "reason": f"loop: '{nasty}'"}]}
        store.add_requests(conn, [row])
    at = _open(run_id)
    assert not at.exception
    assert nasty in _texts(at.code)  # verbatim, in a code block
    for element in [*at.markdown, *at.warning, *at.caption]:
        # Wherever the text reaches markdown it is escaped: no live link, tag or colour.
        text = str(element.value)
        assert not re.search(r"(?<!\\)\[link(?<!\\)\]", text), text
        assert not re.search(r"(?<!\\)<img", text), text
        assert not re.search(r"(?<!\\):red(?<!\\)\[", text), text


def test_active_run_is_live_then_final(db):
    """A running run: progress grows over reruns; when it ends the results appear."""
    run_id = make_seed_run(db, status="running", with_requests=False)
    with store.opened(db) as conn:
        store.update_run(conn, run_id, status="running")
    at = _open(run_id)
    assert not at.exception
    assert any("c=1: 0/5 requests" in str(p.text) for p in at.get("progress"))
    assert any("appear here when the run ends" in t for t in _texts(at.caption))

    with store.opened(db) as conn:
        store.add_requests(conn, [_request(run_id, 0, 1, i, T0 + i, 1000.0, "x") for i in range(3)])
    at.run()
    assert not at.exception
    progress = [str(p.text) for p in at.get("progress")]
    assert any("c=1: 3/5 requests" in t for t in progress), progress

    with store.opened(db) as conn:
        store.add_requests(
            conn, [_request(run_id, 0, 1, i, T0 + i, 1000.0, "x") for i in range(3, 5)]
        )
        store.update_run(conn, run_id, status="completed", finished_at=T0 + 50)
    at.run()
    assert not at.exception
    assert not at.get("progress")  # finished: a caption instead of bars
    # Levels that never got a request still show, with nothing completed.
    assert at.dataframe[0].value["completed"].tolist() == [5, 0, 0, 0]


def test_through_app_navigation(db):
    run_id = make_seed_run(db)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["run"] = run_id
    at.switch_page("app_pages/results.py").run()
    assert not at.exception
    assert at.dataframe[0].value["lane"].nunique() == 2
    assert at.selectbox(key="results_run").value == run_id


# --- telemetry beside the run -----------------------------------------------------------


def _cli_run(db) -> str:
    """A real run: the CLI against scripted Ollama and vLLM servers, which answer
    /api/ps and /metrics, so the recorder stores their samples as it would live."""
    from lib import cli
    from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer

    out = Path(db).with_suffix(".json")
    vllm_script = OpenAIScript(ttft_ms=30, gap_ms=5, models=["qwen-awq"])
    with (
        OllamaServer(OllamaScript(ttft_ms=30, gap_ms=5)) as ollama,
        OpenAIServer(vllm_script) as vllm,
    ):
        code = cli.main(
            [
                "run",
                "--lane", "ollama", ollama.url, "qwen2.5:7b-instruct-q4_K_M",
                "--lane", "openai", vllm.base_url, "qwen-awq",
                "--prompt", KOREAN_PROMPT,
                "--concurrency", "1,4",
                "--requests", "4",
                "--warmup", "0",
                "--max-tokens", "8",
                "--db", str(db),
                "--output-json", str(out),
            ]
        )  # fmt: skip
    assert code == 0
    import json

    return json.loads(out.read_text())["run_id"]


def _chart_titles(at: AppTest) -> list[str]:
    import json

    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_telemetry_of_a_cli_run_with_gpu_samples(db):
    """NVML samples shaped like the seed log (this machine has no GPU) added to a real
    run: the memory chart, vLLM's KV cache and queue, Ollama's models; peak memory per
    lane in the summary; the GPU model, driver and memory in the settings."""
    from tests.analysis.test_telemetry_frames import GPU_NAME, GPU_TOTAL, seed_samples

    run_id = _cli_run(db)
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
        # The vLLM engine came up shortly before the run: its steps lie just before t0.
        nvml = seed_samples(t0=run["started_at"] - 9.0)[None]
        store.add_samples(conn, run_id, None, nvml)
        env = dict(run["env"])
        env["telemetry"] = {**env.get("telemetry", {}), "nvml": "ok"}
        gpu = {"index": 0, "name": GPU_NAME, "memory_total_bytes": GPU_TOTAL}
        env["hardware"] = {**env["hardware"], "gpu": {"available": True, "driver": "550.54.15"}}
        env["hardware"]["gpu"]["gpus"] = [gpu]
        store.update_run(conn, run_id, env=env)
    at = _open(run_id)
    assert not at.exception
    assert "Memory and engine telemetry" in " ".join(_texts(at.markdown))
    titles = _chart_titles(at)
    assert len(titles) == 6 + 4
    assert titles[6:] == [
        f"GPU 0 memory over the run: {GPU_NAME}",
        "vLLM KV cache usage over the run",
        "vLLM requests running and waiting",
        "Ollama loaded models: size and share in VRAM",
    ]
    assert not any(t.startswith("GPU memory:") for t in _texts(at.caption))
    summary = at.dataframe[0].value
    peaks = summary.drop_duplicates("lane").set_index("lane")["peak_gpu_mem_gib"]
    assert peaks["ollama:qwen2.5:7b-instruct-q4_K_M"] == pytest.approx(5.3)
    assert peaks["vllm:qwen-awq"] == pytest.approx(20.9)  # held since before the run
    assert any(
        "Peak GPU memory per lane, from engine processes (NVML)" in t for t in _texts(at.caption)
    )
    settings = {row[0]: row[1] for df in at.dataframe for row in df.value.values.tolist()}
    assert settings["Hardware: GPU 0"] == "NVIDIA RTX A6000 (48.0 GiB)"
    assert settings["Hardware: GPU driver"] == "550.54.15"


def test_telemetry_of_a_cli_run_without_gpu(db):
    """As recorded on this machine: no NVIDIA GPU, one caption instead of a memory chart,
    and the engines' own charts (vLLM /metrics, Ollama /api/ps) still there."""
    run_id = _cli_run(db)
    at = _open(run_id)
    assert not at.exception
    captions = _texts(at.caption)
    assert "GPU memory: no NVIDIA GPU on this machine (NVML library not found)" in captions
    titles = _chart_titles(at)
    assert titles[6:] == [
        "vLLM KV cache usage over the run",
        "vLLM requests running and waiting",
        "Ollama loaded models: size and share in VRAM",
    ]
    summary = at.dataframe[0].value
    peaks = summary.drop_duplicates("lane").set_index("lane")["peak_gpu_mem_gib"]
    # The scripted Ollama says its model is all in VRAM (/api/ps); vLLM's memory is unknown.
    assert peaks["ollama:qwen2.5:7b-instruct-q4_K_M"] == pytest.approx(4_683_087_332 / 2**30)
    assert pd.isna(peaks["vllm:qwen-awq"])
    shown = summary.drop_duplicates("lane").set_index("lane")["peak_gpu_mem"]
    assert shown.to_dict() == {"ollama:qwen2.5:7b-instruct-q4_K_M": "4.4", "vllm:qwen-awq": "–"}
    assert (
        "Peak GPU memory per lane, from ollama:qwen2.5:7b-instruct-q4_K_M: Ollama /api/ps"
        " size_vram; vllm:qwen-awq: –, no NVIDIA GPU on this machine (NVML library not"
        " found)."
    ) in captions
    settings = {row[0]: row[1] for df in at.dataframe for row in df.value.values.tolist()}
    assert settings["Hardware: GPU"] == "none: no NVIDIA GPU (NVML library not found)"


def _array_len(array) -> int:
    """Length of a Plotly JSON array: a list, or a typed array {"dtype", "bdata"}."""
    if isinstance(array, list):
        return len(array)
    import base64

    import numpy as np

    return len(base64.b64decode(array["bdata"])) // np.dtype(array["dtype"]).itemsize


def test_telemetry_follows_a_running_run(db):
    """Inside the live fragment: samples written between reruns reach the memory chart
    (AppTest cannot fire run_every; each at.run() is one tick)."""
    import json

    from tests.analysis.test_telemetry_frames import seed_samples

    run_id = make_seed_run(db, status="running", with_requests=False)
    nvml = seed_samples()[None]
    with store.opened(db) as conn:
        store.add_samples(conn, run_id, None, [s for s in nvml if s.t < T0 + 5])
    at = _open(run_id)
    assert not at.exception

    def vllm_points() -> int:
        (chart,) = [
            c for c in at.get("plotly_chart") if c.key == f"results-telemetry-gpu0-{run_id}"
        ]
        traces = json.loads(chart.proto.spec)["data"]
        return sum(_array_len(t["x"]) for t in traces if "EngineCore" in t["name"])

    assert vllm_points() == 4  # appeared at 1 s; readings at 1, 2, 3, 4 s
    with store.opened(db) as conn:
        store.add_samples(conn, run_id, None, [s for s in nvml if s.t >= T0 + 5])
    at.run()
    assert not at.exception
    assert vllm_points() == 40


def test_re_tokenized_counts_are_said_so(db):
    """llama-cpp-python streams report no usage: its counts come from the server's
    tokenizer, and the page says so beside the summary."""
    import json

    from lib import cli
    from tests.scripted import OpenAIScript, OpenAIServer

    out = Path(db).with_suffix(".json")
    script = OpenAIScript(
        flavor="llama-cpp-python", usage="none", ttft_ms=20, gap_ms=2, models=["m-q4_0"]
    )
    with OpenAIServer(script) as llama:
        code = cli.main(
            ["run", "--engine", "openai", "--base-url", llama.base_url, "--model", "m-q4_0",
             "--prompt", "hi", "--requests", "2", "--warmup", "0", "--max-tokens", "6",
             "--db", str(db), "--output-json", str(out)]
        )  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["lanes"][0]["levels"][0]["requests"][0]["token_source"] == "server-tokenizer"
    at = _open(doc["run_id"])
    assert not at.exception
    assert any("server's tokenizer" in t for t in _texts(at.caption))


# --- failures read as failures ------------------------------------------------------------


def _fail_level(db, run_id: str, lane: int, c: int, error: str, stored: str | None) -> None:
    """Turn a lane's level into one whose every request failed (as a dead engine does);
    `stored` is the level status the runner wrote (None: leave the old 'completed')."""
    with store.opened(db) as conn:
        conn.execute(
            "UPDATE requests SET error = ?, ttft_ms = NULL, e2el_ms = NULL, tpot_ms = NULL,"
            " tokens_per_s = NULL, output_tokens = NULL, prompt_tokens = NULL,"
            " token_source = 'none', output_text = '', quality_json = NULL"
            " WHERE run_id = ? AND lane_idx = ? AND concurrency = ?",
            (error, run_id, lane, c),
        )
        if stored:
            store.set_level(conn, run_id, lane, c, stored, error=f"5 of 5 failed: {error}")


def test_a_level_that_failed_reads_as_failed_with_its_reason_and_log(db):
    run_id = make_seed_run(db)
    _fail_level(db, run_id, 0, 5, "timed out after 60 s", "failed")
    logs = {"0": {"name": "llama", "ready": False, "log": "/x/llama.log", "tail": ["oom!"]}}
    with store.opened(db) as conn:
        store.update_run(
            conn,
            run_id,
            status="completed with failures",
            error="ollama c=5 failed: 5 of 5 failed: timed out after 60 s",
            env={"engine_logs": logs},
        )
    at = _open(run_id)
    assert not at.exception
    markdown = " ".join(_texts(at.markdown))
    assert ":orange-badge[completed with failures]" in markdown
    warning = " ".join(_texts(at.warning))
    assert f"{LANE_NAMES[0]} c=5 failed: 5 of 5 failed: timed out after 60 s" in warning
    # The lane's tile: figures of the level that answered (c=1), the failed one listed.
    metrics = [(m.label, m.value) for m in at.metric]
    assert ("TTFT p50", "100 ms") in metrics and ("Failed", "0/5") in metrics, metrics
    assert "c=5: 5/5 requests, 5 failed · failed" in markdown
    assert ":red-badge[failed]" not in markdown  # the lane itself half worked
    assert ":orange-badge[completed with failures]" in markdown
    # The sandbox engine's log, kept with the run.
    assert any("llama no longer answers" in e.label for e in at.expander)
    assert any("oom!" in str(c.value) for c in at.code)
    # Ollama's good requests carry its counts: no caption says it has none.
    assert not any("No token counts from" in t for t in _texts(at.caption))


def test_an_older_run_whose_level_failed_is_not_shown_as_completed(db):
    """Runs stored before levels had outcomes said "completed" whatever happened."""
    run_id = make_seed_run(db)
    _fail_level(db, run_id, 1, 1, "cannot connect to http://127.0.0.1:8000: [Errno 111]", None)
    at = _open(run_id)
    assert not at.exception
    (header,) = [t for t in _texts(at.markdown) if f"run {run_id}" in t]
    assert header.startswith(":orange-badge[completed with failures]"), header
    assert "[Errno 111]" in " ".join(_texts(at.warning))


def test_warm_up_is_a_state_with_its_own_timer(db):
    run_id = make_seed_run(db, status="running", with_requests=False)
    with store.opened(db) as conn:
        conn.execute("DELETE FROM levels WHERE run_id = ?", (run_id,))
        store.set_level(conn, run_id, 0, 0, "warming up", time.time() - 34)
    at = _open(run_id)
    assert not at.exception
    info = " ".join(_texts(at.info))
    assert re.search(r"Warming up: 3[4-9] s so far", info), info
    assert ":violet-badge[warming up]" in " ".join(_texts(at.markdown))

    with store.opened(db) as conn:
        store.set_level(conn, run_id, 0, 0, "completed", None, time.time())
    at.run()
    assert not any("Warming up" in t for t in _texts(at.info))
    assert any(re.match(r"Warm-up took 3\d s", t) for t in _texts(at.caption))


# --- the checks of the numbers ------------------------------------------------------------


def _set_chunks(db, run_id: str, chunks: int) -> None:
    """Give every seed request `chunks` output chunks that add up to its E2E (the seed
    stores none): each takes 900 ms from its first token to its last."""
    import json

    gaps = json.dumps([900.0 / (chunks - 1)] * (chunks - 1))
    with store.opened(db) as conn:
        conn.execute("UPDATE requests SET itl_json = ? WHERE run_id = ?", (gaps, run_id))


def test_a_clean_run_says_its_numbers_passed(db):
    run_id = make_seed_run(db)
    _set_chunks(db, run_id, 50)  # a chunk per token: every check that can be made passes
    at = _open(run_id)
    assert not at.exception
    assert _texts(at.success) == ["numbers checked: 14 of 14 passed (4 not measurable)"]
    assert not at.error and not any("numbers checked" in t for t in _texts(at.warning))
    (table,) = at.table
    frame = table.value
    assert list(frame.columns) == ["Lane", "Concurrency", "Check", "Status", "Detail"]
    assert len(frame) == 18  # 2 levels × (5 checks on Ollama + 4 on vLLM)
    assert set(frame["Status"]) == {"✓ pass", "– not measurable"}
    assert any(e.label == "All checks" for e in at.expander)


def test_a_warning_check_is_an_amber_verdict_with_its_line(db):
    run_id = make_seed_run(db)
    _set_chunks(db, run_id, 25)  # two tokens a chunk: ITL is per chunk, TPOT per token
    at = _open(run_id)
    assert not at.exception and not at.success
    (warning,) = [t for t in _texts(at.warning) if t.startswith("numbers checked")]
    lines = warning.split("  \n")
    assert lines[0] == "numbers checked: 10 of 14 passed (4 not measurable)"
    assert (
        f"⚠ {LANE_NAMES[1]} c=5 tokens: Server counted 250 output tokens in 125 chunks "
        "(2.00 a chunk); ITL is per chunk here, TPOT per token." in lines
    )
    assert len(lines) == 5  # the verdict, then one line per level that warned
    statuses = at.table[0].value["Status"].tolist()
    assert statuses.count("⚠ warn") == 4 and "✗ fail" not in statuses


def test_a_bursty_level_is_a_red_verdict_naming_the_lane_escaped(db):
    """A server that sends each answer in one burst (as a proxy that buffers does): the
    level's TTFT is the whole answer's time, and the page says so above the figures."""
    import asyncio

    from lib.analysis import results
    from lib.app.formatting import esc_md
    from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
    from lib.load.runner import execute_run, prepare_lanes
    from tests.scripted import OpenAIScript, OpenAIServer

    name = "bursty *m* [x](http://evil)"
    with OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=0, models=["m"])) as bursty:
        config = RunConfig(
            lanes=[LaneSpec(engine="openai", base_url=bursty.base_url, model="m", name=name)],
            prompts=[Prompt.from_text("one")],
            concurrency=[4],
            requests=8,
            warmup=0,
            sampling=Sampling(max_tokens=12),
        )

        async def go() -> str:
            return await execute_run(config, await prepare_lanes(config), db=db)

        run_id = asyncio.run(go())
    assert results.run_document(db, run_id)["validation"]["problems"]
    at = _open(run_id)
    assert not at.exception and not at.success
    (error,) = [e for e in at.error if "numbers checked" in str(e.value)]
    raw = str(error.value)
    assert "bursty \\*m\\* \\[x\\]\\(http" in raw  # the lane name stays text
    text = _texts([error])[0]
    assert text.startswith("numbers checked: ")
    assert (
        f"✗ {name} c=4 streaming: 8 of 8 streams arrived in one burst (first to last chunk "
        "within 5 ms): TTFT and ITL here are not per-token timings; read E2E latency and "
        "throughput." in text.split("  \n")
    )
    frame = at.table[0].value
    streaming = frame[frame["Check"] == "streaming"]
    assert streaming["Status"].tolist() == ["✗ fail"]
    assert streaming["Lane"].tolist() == [esc_md(name)]  # st.table renders markdown too
