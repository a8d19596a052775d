"""OllamaEngine against the scripted Ollama server, through the official ollama client.

Timing assertions compare the client's chunk times with the times the server wrote
each chunk (one monotonic clock); see tests/test_engine_openai.py for how TOL_S was
chosen (measured here: lag p50 0.3 ms, max 0.6 ms).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from lib.core.metrics import request_metrics
from lib.core.records import Prompt, RequestResult, Sampling
from lib.engines import make_engine
from lib.engines.base import EngineError, EngineUnreachable, ModelNotFound
from lib.engines.ollama import OllamaEngine
from tests.engines.reasoning_checks import assert_no_reasoning, assert_reasoning_timed_apart
from tests.scripted import OllamaScript, OllamaServer

TOL_S = 0.025
MODEL = "qwen2.5:7b-instruct-q4_K_M"
CHAT = "/api/chat"
PROMPT = Prompt.from_text("한국어로 바다에 대해 알려 주세요")


@pytest.fixture
def srv(ollama_server: OllamaServer) -> OllamaServer:
    ollama_server.script = OllamaScript(ttft_ms=30, gap_ms=8)
    return ollama_server


@pytest.fixture
async def engine(srv: OllamaServer) -> AsyncIterator[OllamaEngine]:
    eng = OllamaEngine(srv.url)
    yield eng
    await eng.aclose()


async def chat(
    eng: OllamaEngine, model: str = MODEL, num_ctx: int | None = None, **kw: object
) -> RequestResult:
    sampling = Sampling(**{"max_tokens": 9, "temperature": 0.3, "top_p": 0.9, "seed": 7, **kw})
    return await eng.chat(model, PROMPT, sampling, timeout_s=5, num_ctx=num_ctx)


def assert_matches_truth(r: RequestResult, srv: OllamaServer, ttft_s: float) -> None:
    rec = srv.recorded(CHAT)[-1]
    assert r.error is None
    assert len(r.chunk_times) == len(rec.sent) > 0  # the final (done) chunk is not output
    assert rec.t_recv >= r.t_send  # the clock started before the request went out
    assert r.chunk_times[0] - r.t_send >= ttft_s
    for client_t, server_t in zip(r.chunk_times, rec.sent, strict=True):
        assert 0 <= client_t - server_t <= TOL_S


async def test_timing_matches_server_truth(engine: OllamaEngine, srv: OllamaServer):
    r = await chat(engine)
    assert_matches_truth(r, srv, 0.030)
    assert r.t_done >= r.chunk_times[-1]


async def test_final_chunk_counts_and_server_timings(engine: OllamaEngine, srv: OllamaServer):
    srv.script.load_ms = 12
    srv.script.queue_ms = 5
    r = await chat(engine, max_tokens=9)
    assert len(r.chunk_times) == 6  # 9 tokens in chunks of 1 and 2
    assert (r.output_tokens, r.token_source, r.finish_reason) == (9, "server", "length")
    assert r.prompt_tokens is not None and r.prompt_tokens > 0
    assert r.output_text.startswith("안녕 token 하세요")
    # script: load 12, prompt eval 30 − 12 − 5 = 13, eval 5 gaps × 8 = 40, total 70
    assert r.server == {
        "load_ms": 12.0,
        "prompt_eval_ms": 13.0,
        "eval_ms": 40.0,
        "total_ms": 70.0,
        "queue_ms": 5.0,
        "eval_tokens_per_s": 9 / 0.040,
        "prompt_eval_count": r.prompt_tokens,
        "eval_count": 9,
    }


async def test_omitted_zero_fields(engine: OllamaEngine, srv: OllamaServer):
    # load_duration 0 and a prompt-cache hit's missing prompt_eval_count are omitted
    srv.script.omit_prompt_count = True
    r = await chat(engine, max_tokens=4)
    assert r.error is None
    assert r.server is not None
    assert r.server["load_ms"] == 0.0 and r.server["queue_ms"] == 0.0
    assert r.prompt_tokens is None and r.server["prompt_eval_count"] is None
    assert r.output_tokens == 4


async def test_zero_output_tokens_omitted(engine: OllamaEngine, srv: OllamaServer):
    srv.script.tokens = 0  # eval_count and eval_duration omitted
    r = await chat(engine)
    assert r.error is None and r.chunk_times == []
    assert (r.output_tokens, r.token_source, r.finish_reason) == (0, "server", "stop")
    assert r.server is not None
    assert r.server["eval_ms"] == 0.0 and r.server["eval_tokens_per_s"] is None


async def test_options_sent_explicitly(engine: OllamaEngine, srv: OllamaServer):
    await chat(engine, max_tokens=5, num_ctx=8192, ignore_eos=True)
    body = srv.recorded(CHAT)[-1].body
    assert body["options"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "num_predict": 5,
        "num_ctx": 8192,
    }
    assert body["stream"] is True and body["messages"] == PROMPT.messages
    assert "ignore_eos" not in str(body)
    await chat(engine, max_tokens=5)
    assert "num_ctx" not in srv.recorded(CHAT)[-1].body["options"]


async def test_thinking_and_tool_calls_are_output(engine: OllamaEngine, srv: OllamaServer):
    srv.script.thinking_chunks = 2
    srv.script.tool_call = True
    r = await chat(engine, max_tokens=9)
    assert_matches_truth(r, srv, 0.030)
    assert len(r.chunk_times) == 6
    # content only: chunks 0-1 were thinking and chunk 5 a tool call
    assert r.output_text == " 하세요 x안녕 tok"
    assert (r.t_first_reasoning, r.t_first_answer) == (r.chunk_times[0], r.chunk_times[2])


async def test_thinking_then_answer_are_timed_apart(engine: OllamaEngine, srv: OllamaServer):
    srv.script.thinking_chunks = 3
    r = await chat(engine, max_tokens=9)
    assert_matches_truth(r, srv, 0.030)
    assert_reasoning_timed_apart(r, srv.recorded(CHAT)[-1].sent, TOL_S)


async def test_without_thinking_ttfat_is_ttft(engine: OllamaEngine, srv: OllamaServer):
    assert_no_reasoning(await chat(engine))


async def test_thinking_cut_off_before_any_answer(engine: OllamaEngine, srv: OllamaServer):
    srv.script.thinking_chunks = 99  # max_tokens runs out while the model still thinks
    r = await chat(engine, max_tokens=4)
    assert r.error is None and r.output_text == "" and len(r.chunk_times) == 3
    assert (r.t_first_reasoning, r.t_first_answer) == (r.chunk_times[0], None)
    m = request_metrics(r)
    assert m["ttft_ms"] is not None
    assert m["ttfat_ms"] is None and m["reasoning_ms"] is None


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("http503", "HTTP 503: server busy, please try again. maximum pending requests"),
        ("error", "server error mid-stream: an error was encountered while running the model"),
        ("malformed", "malformed NDJSON line from server"),
        ("reset", "connection lost mid-stream: "),
        ("close", "connection lost mid-stream: "),
        ("drop", "connection lost before any output: "),
    ],
)
async def test_faults_become_one_line_errors(
    engine: OllamaEngine, srv: OllamaServer, fault: str, expected: str
):
    r = await chat(engine, model=f"fault-{fault}")
    assert r.error is not None and r.error.startswith(expected), r.error
    assert "\n" not in r.error
    mid_stream = fault not in ("http503", "drop")
    assert len(r.chunk_times) == (srv.script.fault_after if mid_stream else 0)
    assert r.output_tokens is None and r.server is None
    assert (await chat(engine)).error is None  # the client is still usable


@pytest.mark.parametrize("fault", ["hang", "hang_headers"])
async def test_hang_times_out(engine: OllamaEngine, srv: OllamaServer, fault: str):
    r = await engine.chat(f"fault-{fault}", PROMPT, Sampling(max_tokens=5), timeout_s=0.2)
    assert r.error == "timed out after 0.2 s"
    assert (await chat(engine)).error is None


async def test_unknown_model(engine: OllamaEngine):
    r = await chat(engine, model="nope:1b")
    assert r.error == "model 'nope:1b' not found (HTTP 404): model 'nope:1b' not found"
    with pytest.raises(ModelNotFound) as caught:
        await engine.check_model("nope:1b")
    msg = str(caught.value)
    assert msg.startswith("model 'nope:1b' not found at http://127.0.0.1:")
    assert "available: qwen2.5:7b-instruct-q4_K_M, llama3.2:latest" in msg


async def test_model_list_is_truncated_in_errors(engine: OllamaEngine, srv: OllamaServer):
    from tests.scripted.ollama_server import model_entry

    srv.script.models = [model_entry(f"m{i}:latest") for i in range(20)]
    with pytest.raises(ModelNotFound, match=r"m7:latest \(\+12 more\)"):
        await engine.check_model("zzz")


async def test_list_and_check_models(engine: OllamaEngine):
    models = {m.name: m for m in await engine.list_models()}
    qwen = models[MODEL]
    assert (qwen.quantization, qwen.parameter_size, qwen.family) == ("Q4_K_M", "7.6B", "qwen2")
    assert qwen.size_bytes == 4_683_087_332 and qwen.digest and len(qwen.digest) == 64
    checked = await engine.check_model("llama3.2")  # ":latest" is implied, as in Ollama
    assert checked.name == "llama3.2:latest" and checked.quantization == "Q8_0"
    assert checked.context_length == 32768  # from /api/show model_info
    assert checked.extra["capabilities"] == ["completion", "tools"]


async def test_info_ps_and_pull(engine: OllamaEngine):
    info = await engine.info()
    assert (info.kind, info.api, info.version) == ("ollama", "ollama", "0.33.0")
    (loaded,) = await engine.ps()
    assert loaded["size_vram"] == loaded["size"] and loaded["context_length"] == 32768
    events = [e async for e in engine.pull("gemma3:1b")]
    assert events[0] == {"status": "pulling manifest"}
    assert events[-1] == {"status": "success"}
    progress = [e for e in events if "completed" in e]
    assert [e["completed"] for e in progress] == [1_000_000, 2_500_000, 4_000_000]
    assert "completed" not in events[1] and events[1]["total"] == 4_000_000
    assert (await engine.check_model("gemma3:1b")).name == "gemma3:1b"
    with pytest.raises(EngineError, match="pull missing:1b: pull model manifest"):
        _ = [e async for e in engine.pull("missing:1b")]


async def test_unreachable():
    eng = make_engine("ollama", "http://127.0.0.1:9/v1")
    assert isinstance(eng, OllamaEngine) and eng.base_url == "http://127.0.0.1:9"
    try:
        r = await chat(eng)
        assert r.error is not None
        assert r.error.startswith("cannot connect to Ollama at http://127.0.0.1:9")
        with pytest.raises(EngineUnreachable, match="cannot connect to Ollama"):
            await eng.info()
        with pytest.raises(EngineUnreachable):
            await eng.list_models()
    finally:
        await eng.aclose()


async def test_clock_starts_when_the_request_is_written(srv: OllamaServer):
    # Client-side work before the request goes out (a 50 ms request hook standing in
    # for a busy event loop) is not TTFT.
    async def slow_hook(request: object) -> None:
        await asyncio.sleep(0.05)

    eng = OllamaEngine(srv.url)
    eng._client._client.event_hooks["request"].insert(0, slow_hook)  # the httpx client
    try:
        t_call = time.perf_counter()
        r = await chat(eng)
    finally:
        await eng.aclose()
    assert_matches_truth(r, srv, 0.030)
    assert r.t_send >= t_call + 0.05
