"""OpenAICompatEngine against the scripted OpenAI-compatible server.

Timing assertions compare the client's chunk times with the times the server
recorded writing each chunk (one monotonic clock): exact lower bounds, and an upper
bound of TOL_S plus the time the test's own event loop could not run in between
(LoopStalls, measured during the test). A fixed bound alone failed on a loaded machine:
with two CPU hogs beside it, chunks came up to 49 ms late (300 requests per client),
and all but at most 2.1 ms of every such delay was time the loop was held up, so the
measured stall explains the wait and TOL_S only has to cover the loop's own work.
TOL_S still catches a chunk dated by a later read or at the stream's end (the loop ran
meanwhile); gaps under TOL_S are not what it detects — exact chunk counts and lower
bounds do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from lib.core.records import Prompt, RequestResult, Sampling
from lib.engines import make_engine
from lib.engines.base import EngineError, EngineUnreachable, ModelNotFound
from lib.engines.common import guess_quantization
from lib.engines.openai_compat import OpenAICompatEngine
from lib.engines.sse import StreamState, scan_chunk
from tests.engines.reasoning_checks import assert_no_reasoning, assert_reasoning_timed_apart
from tests.scripted import OpenAIScript, OpenAIServer

TOL_S = 0.010
MODEL = "scripted-model"
CHAT = "/v1/chat/completions"
PROMPT = Prompt.from_text("안녕하세요, tell me about the sea")


@pytest.fixture
def srv(openai_server: OpenAIServer) -> OpenAIServer:
    openai_server.script = OpenAIScript(ttft_ms=30, gap_ms=8)
    return openai_server


# (parser, transport): the default aiohttp reader, the httpx2 reader kept for
# comparison, and openai-python's own stream objects.
CLIENTS = [("raw", "aiohttp"), ("raw", "httpx"), ("sdk", "httpx")]


@pytest.fixture(params=CLIENTS, ids=["aiohttp", "httpx", "sdk"])
async def engine(request: pytest.FixtureRequest, srv: OpenAIServer) -> AsyncIterator:
    parser, transport = request.param
    eng = OpenAICompatEngine(srv.url, parser=parser, transport=transport)
    yield eng
    await eng.aclose()


async def chat(eng: OpenAICompatEngine, model: str = MODEL, **kw: object) -> RequestResult:
    sampling = Sampling(**{"max_tokens": 9, "temperature": 0.3, "top_p": 0.9, "seed": 7, **kw})
    return await eng.chat(model, PROMPT, sampling, timeout_s=5)


class LoopStalls:
    """When the test's event loop could not run. A probe task wakes every PROBE_S; a wake
    later than asyncio's timer rounding means the loop was held up (the process off the
    CPU, the GIL in another thread, a GC pass, a slow callback) from when the wake was
    due until it ran. Under load such stalls delay a chunk's read by however long they
    last, so an upper bound on a chunk's lateness adds the stalls between its write and
    its time instead of guessing how loaded the machine will be."""

    PROBE_S = 0.001
    ROUNDING_S = 0.001  # asyncio rounds a select timeout up to whole ms: an idle wake's lag

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # (due, woke) of each late wake
        self._due = time.perf_counter()

    async def run(self) -> None:
        while True:
            self._due = time.perf_counter() + self.PROBE_S + self.ROUNDING_S
            await asyncio.sleep(self.PROBE_S)
            woke = time.perf_counter()
            if woke > self._due:
                self.spans.append((self._due, woke))

    def within(self, start: float, end: float) -> float:
        """Seconds of [start, end] the loop was held up. Called from the loop after the
        chat returned: a wake still pending past its due time was held up until now
        (without it, a stall over a stream's last chunks would go unseen)."""
        pending = (self._due, time.perf_counter())
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in [*self.spans, pending])


@pytest.fixture
async def stalls() -> AsyncIterator[LoopStalls]:
    """LoopStalls probing the test's event loop (the one the engine runs on)."""
    probe = LoopStalls()
    task = asyncio.create_task(probe.run())
    yield probe
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def assert_matches_truth(
    r: RequestResult, srv: OpenAIServer, ttft_s: float, stalls: LoopStalls
) -> None:
    rec = srv.recorded(CHAT)[-1]
    assert r.error is None
    # Exactly the output chunks: no role chunk, comment or usage chunk counted.
    assert len(r.chunk_times) == len(rec.sent) > 0
    assert rec.t_recv >= r.t_send
    assert r.chunk_times[0] - r.t_send >= ttft_s  # the server waited ttft after receipt
    for i, (client_t, server_t) in enumerate(zip(r.chunk_times, rec.sent, strict=True)):
        # Dated when it was read: never before the write, and late by at most TOL_S of
        # time the loop was free to read it.
        late, held = client_t - server_t, stalls.within(server_t, client_t)
        why = f"chunk {i}: {late * 1e3:.1f} ms late, the loop held up {held * 1e3:.1f} ms"
        assert 0 <= late <= TOL_S + held, why
    # Each gap between chunks then matches the server's to within the larger of its two
    # chunks' bounds (both ends lie in [0, bound]): no separate check needed.


async def test_timing_matches_server_truth(
    engine: OpenAICompatEngine, srv: OpenAIServer, stalls: LoopStalls
):
    r = await chat(engine)
    assert_matches_truth(r, srv, 0.030, stalls)
    assert r.t_done >= r.chunk_times[-1]


async def test_multi_token_chunks_counted_by_usage(engine: OpenAICompatEngine, srv: OpenAIServer):
    r = await chat(engine, max_tokens=9)
    # pattern 1,2 → 6 chunks for 9 tokens; the count comes from usage, not chunks
    assert len(r.chunk_times) == 6
    assert (r.output_tokens, r.token_source) == (9, "server")
    assert r.prompt_tokens is not None and r.prompt_tokens > 0
    assert r.finish_reason == "length"
    assert r.output_text.startswith("안녕 token 하세요")
    assert srv.recorded(CHAT)[-1].tokens == [1, 2, 1, 2, 1, 2]


async def test_sampling_sent_explicitly(engine: OpenAICompatEngine, srv: OpenAIServer):
    await chat(engine, max_tokens=5)
    body = srv.recorded(CHAT)[-1].body
    assert body["model"] == MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (
        0.3,
        0.9,
        7,
        5,
    )
    assert body["messages"] == PROMPT.messages
    assert "ignore_eos" not in body and "min_tokens" not in body


@pytest.mark.parametrize(
    ("flavor", "expected"),
    [
        ("vllm", {"ignore_eos": True, "min_tokens": 6}),
        ("llamacpp", {"ignore_eos": True, "min_tokens": 6}),
        ("generic", {}),
    ],
)
async def test_ignore_eos_per_engine(openai_server: OpenAIServer, flavor: str, expected: dict):
    openai_server.script = OpenAIScript(flavor=flavor, ttft_ms=1, gap_ms=1)
    eng = OpenAICompatEngine(openai_server.url)  # flavour detected before the first send
    try:
        r = await chat(eng, max_tokens=6, ignore_eos=True)
    finally:
        await eng.aclose()
    assert r.error is None
    body = openai_server.recorded(CHAT)[-1].body
    sent = {k: body[k] for k in ("ignore_eos", "min_tokens") if k in body}
    assert sent == expected


async def test_llamacpp_stream_shape(openai_server: OpenAIServer, stalls: LoopStalls):
    # role chunk with content null, usage + timings on the finish chunk (no choices: [])
    openai_server.script = OpenAIScript(flavor="llamacpp", ttft_ms=20, gap_ms=5)
    eng = make_engine("llama.cpp", openai_server.url)
    try:
        r = await chat(eng, max_tokens=4)
    finally:
        await eng.aclose()
    assert_matches_truth(r, openai_server, 0.020, stalls)
    assert (r.output_tokens, r.token_source, r.finish_reason) == (4, "server", "length")
    assert r.server is not None and r.server["predicted_n"] == 4
    assert r.server["prompt_ms"] == 20


async def test_llamacpp_predicted_n_when_usage_missing(openai_server: OpenAIServer):
    openai_server.script = OpenAIScript(flavor="llamacpp", usage="none", ttft_ms=1, gap_ms=1)
    eng = make_engine("llama.cpp", openai_server.url)
    try:
        r = await chat(eng, max_tokens=5)
    finally:
        await eng.aclose()
    assert (r.output_tokens, r.token_source) == (5, "server")
    assert r.prompt_tokens == r.server["prompt_n"]


async def test_no_count_at_all_is_said(engine: OpenAICompatEngine, srv: OpenAIServer):
    srv.script.usage = "none"
    srv.script.tokenizer = False  # and no tokenize route to fall back on
    r = await chat(engine, max_tokens=5)
    assert r.error is None and len(r.chunk_times) == 4
    assert (r.output_tokens, r.token_source) == (None, "none")


async def test_reasoning_empty_token_and_tool_call_chunks_count(
    engine: OpenAICompatEngine, srv: OpenAIServer, stalls: LoopStalls
):
    srv.script.reasoning_chunks = 2
    srv.script.empty_chunks = (3,)
    srv.script.tool_call = True
    r = await chat(engine, max_tokens=9)
    assert_matches_truth(r, srv, 0.030, stalls)
    assert len(r.chunk_times) == 6  # 2 reasoning, 1 content, 1 "", 1 content, 1 tool call
    assert r.output_text == " 하세요 tok"  # reasoning and tool calls are not answer text
    assert (r.t_first_reasoning, r.t_first_answer) == (r.chunk_times[0], r.chunk_times[2])


@pytest.mark.parametrize("flavor", ["vllm", "llamacpp"])  # `reasoning`, `reasoning_content`
async def test_reasoning_then_answer_are_timed_apart(
    engine: OpenAICompatEngine, srv: OpenAIServer, stalls: LoopStalls, flavor: str
):
    srv.script.flavor = flavor
    srv.script.reasoning_chunks = 3
    r = await chat(engine, max_tokens=9)
    assert_matches_truth(r, srv, 0.030, stalls)
    sent = srv.recorded(CHAT)[-1].sent
    # TOL_S plus the stalls from the first chunk's write to the answer's read bounds both
    # the answer's lateness and the reasoning time's error (two latenesses' difference).
    assert_reasoning_timed_apart(r, sent, TOL_S + stalls.within(sent[0], r.chunk_times[3]))


async def test_without_reasoning_ttfat_is_ttft(engine: OpenAICompatEngine, srv: OpenAIServer):
    assert_no_reasoning(await chat(engine))


def test_chunk_kinds():
    def delta(**d: object) -> dict:
        return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}

    st = StreamState()
    scan_chunk(delta(role="assistant", content=""), 1.0, st)  # the role chunk: no output
    scan_chunk(delta(content="", reasoning_content="hm"), 2.0, st)  # "" beside reasoning
    scan_chunk(delta(content="", reasoning="hm"), 3.0, st)
    assert (st.times, st.first_reasoning, st.first_answer) == ([2.0, 3.0], 2.0, None)
    scan_chunk(delta(content=""), 4.0, st)  # a token that decoded to "": answer
    assert (st.times, st.first_answer) == ([2.0, 3.0, 4.0], 4.0)
    both = StreamState()
    scan_chunk(delta(reasoning="so", content="Yes"), 5.0, both)  # </think> mid-delta
    assert (both.first_reasoning, both.first_answer) == (5.0, 5.0)
    calls = StreamState()
    call = {"index": 0, "function": {"name": "f", "arguments": "{}"}}
    scan_chunk(delta(tool_calls=[call]), 6.0, calls)
    assert (calls.first_reasoning, calls.first_answer) == (None, 6.0)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_llama_cpp_python_role_chunk_without_content(
    openai_server: OpenAIServer, stalls: LoopStalls, transport: str
):
    # role chunk without content, CRLF line ends (sse-starlette), no usage, no timings
    openai_server.script = OpenAIScript(
        flavor="llama-cpp-python", usage="none", ttft_ms=15, gap_ms=3
    )
    eng = OpenAICompatEngine(openai_server.url, transport=transport)
    try:
        r = await chat(eng, max_tokens=3)
    finally:
        await eng.aclose()
    assert_matches_truth(r, openai_server, 0.015, stalls)
    assert r.output_text == "안녕 token"
    assert (r.output_tokens, r.token_source) == (3, "server-tokenizer")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("http503", "HTTP 503: Service Unavailable"),
        ("error", "server error mid-stream: scripted failure: engine died"),
        ("malformed", "malformed SSE data from server"),
        ("reset", "connection lost mid-stream: "),
        ("close", "connection lost mid-stream: "),
        ("drop", "no response from http://127.0.0.1:"),
    ],
)
async def test_faults_become_one_line_errors(
    engine: OpenAICompatEngine, srv: OpenAIServer, fault: str, expected: str
):
    r = await chat(engine, model=f"fault-{fault}")
    assert r.error is not None and r.error.startswith(expected), r.error
    assert "\n" not in r.error
    if fault == "close":
        assert "closed" in r.error  # a FIN, not a reset
    mid_stream = fault not in ("http503", "drop")
    assert len(r.chunk_times) == (srv.script.fault_after if mid_stream else 0)
    # The connection pool is still usable after the fault.
    assert (await chat(engine)).error is None


@pytest.mark.parametrize("fault", ["hang", "hang_headers"])
async def test_hang_times_out(engine: OpenAICompatEngine, srv: OpenAIServer, fault: str):
    sampling = Sampling(max_tokens=5)
    # 0.5 s: the two chunks before the hang (30 and 38 ms) arrive even on a loaded machine.
    r = await engine.chat(f"fault-{fault}", PROMPT, sampling, timeout_s=0.5)
    assert r.error == "timed out after 0.5 s"
    assert len(r.chunk_times) == (2 if fault == "hang" else 0)
    assert (await chat(engine)).error is None


async def test_unknown_model(engine: OpenAICompatEngine, srv: OpenAIServer):
    r = await chat(engine, model="nope")
    assert r.error is not None
    assert r.error.startswith("model 'nope' not found (HTTP 404): The model `nope` does not")
    with pytest.raises(ModelNotFound, match=r"model 'nope' not served .*available: scripted-model"):
        await engine.check_model("nope")
    assert (await engine.check_model(MODEL)).name == MODEL


async def test_api_key(openai_server: OpenAIServer):
    openai_server.script = OpenAIScript(api_key="sekrit", ttft_ms=1, gap_ms=1)
    bad = OpenAICompatEngine(openai_server.url, api_key="wrong")
    good = OpenAICompatEngine(openai_server.url, api_key="sekrit")
    try:
        assert (await chat(bad)).error == "HTTP 401: Unauthorized"
        with pytest.raises(EngineError, match="HTTP 401"):
            await bad.list_models()
        assert (await chat(good)).error is None
    finally:
        await bad.aclose()
        await good.aclose()


async def test_unreachable():
    eng = OpenAICompatEngine("http://127.0.0.1:9")
    try:
        r = await chat(eng)
        assert r.error is not None
        assert r.error.startswith("cannot connect to http://127.0.0.1:9/v1")
        assert r.chunk_times == [] and r.output_tokens is None
        with pytest.raises(EngineUnreachable, match="cannot connect"):
            await eng.info()
    finally:
        await eng.aclose()


async def test_list_models_and_info(engine: OpenAICompatEngine, srv: OpenAIServer):
    (model,) = await engine.list_models()
    assert model.name == MODEL and model.context_length == 4096
    assert model.digest == "/models/Qwen2.5-0.5B-Instruct-AWQ"
    assert model.quantization == "AWQ"
    assert model.extra["quantization_source"] == "name Qwen2.5-0.5B-Instruct-AWQ"
    info = await engine.info()
    assert (info.kind, info.api, info.version) == ("vllm", "openai", "0.33.0")
    assert info.base_url == srv.base_url


async def test_llamacpp_models_and_info(openai_server: OpenAIServer):
    openai_server.script = OpenAIScript(
        flavor="llamacpp", models=["/m/qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    )
    eng = OpenAICompatEngine(openai_server.base_url)
    try:
        (model,) = await eng.list_models()
        info = await eng.info()
    finally:
        await eng.aclose()
    assert model.quantization == "Q4_K_M" and model.context_length == 32768
    assert (info.kind, info.version, info.extra["total_slots"]) == ("llama.cpp", "b6097-1a2b3c4", 4)


def test_quantization_from_local_config(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    config = {"quantization_config": {"quant_method": "gptq", "bits": 4}}
    (model_dir / "config.json").write_text(json.dumps(config))
    quant, source = guess_quantization(str(model_dir), "served-name-AWQ")
    assert quant == "gptq"  # the config wins over the name, as in vLLM
    assert source == f"{model_dir / 'config.json'} quantization_config.quant_method"


def test_local_model_without_quantization_config_is_unquantized(tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert guess_quantization(str(model_dir), "tiny")[0] == "unquantized (float32)"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("Qwen/Qwen2.5-7B-Instruct-AWQ",), "AWQ"),
        (("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4",), "GPTQ-Int4"),
        (("neuralmagic/Meta-Llama-3-8B-Instruct-FP8",), "FP8"),
        (("/models/qwen2.5-7b-instruct-q4_k_m.gguf",), "Q4_K_M"),
        (("ggml-model-Q8_0.gguf",), "Q8_0"),
        (("tiny-f16.gguf",), "F16"),
        (("tiny-qwen2-q4_0",), "Q4_0"),  # a llama.cpp alias: the type ends the name
        (("qwen2.5:7b-instruct-q4_K_M",), "Q4_K_M"),
        (("Qwen/Qwen2.5-7B-Instruct",), None),
        ((None, "qwen2.5-coder"), None),
    ],
)
def test_quantization_from_names(names: tuple, expected: str | None):
    assert guess_quantization(*names)[0] == expected


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_clock_starts_when_the_request_is_written(
    srv: OpenAIServer, stalls: LoopStalls, transport: str
):
    # Client-side work before the request goes out (here a 50 ms request hook, as a
    # burst of concurrent requests queueing on the event loop would be) is not TTFT.
    async def slow_hook(*args: object) -> None:
        await asyncio.sleep(0.05)

    eng = OpenAICompatEngine(srv.url, transport=transport)
    if transport == "aiohttp":
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(slow_hook)
        eng._aio.trace_configs.append(trace)  # before the session is made
    else:
        eng._client._client.event_hooks["request"].insert(0, slow_hook)  # the httpx2 client
    try:
        t_call = time.perf_counter()
        r = await chat(eng)
    finally:
        await eng.aclose()
    assert_matches_truth(r, srv, 0.030, stalls)
    assert r.t_send >= t_call + 0.05


async def test_fault_chosen_per_server_or_by_header(engine: OpenAICompatEngine, srv: OpenAIServer):
    srv.script.fault = "error"  # every request of this server
    r = await chat(engine)
    assert r.error is not None and r.error.startswith("server error mid-stream")
    srv.script.fault = None
    body = {"model": MODEL, "messages": PROMPT.messages, "stream": True}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            srv.base_url + "/chat/completions", json=body, headers={"x-scripted-fault": "http503"}
        )
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "ServiceUnavailableError"
    assert srv.recorded(CHAT)[-1].fault == "http503"


def test_unknown_transport_is_refused():
    with pytest.raises(EngineError, match="unknown transport 'curl'"):
        OpenAICompatEngine("http://127.0.0.1:9", transport="curl")


async def test_a_connection_the_server_closed_is_not_a_failed_request(
    engine: OpenAICompatEngine, srv: OpenAIServer
):
    """A server that closes its connection after each streamed answer without saying so
    (llama-server does): the next request, sent at once, may take that connection back
    before the close is seen. It is sent again on a new one (nothing had come back), so
    no request fails and none is counted twice; every transport ends the same."""
    srv.script = OpenAIScript(ttft_ms=5, gap_ms=1)
    srv.close_after_response = True
    before = len([r for r in srv.requests if r.path == CHAT])
    results = [await chat(engine) for _ in range(12)]  # one after another, at once
    assert [r.error for r in results] == [None] * 12
    assert all(r.output_tokens == 9 for r in results)
    # The server never read the requests sent on a closed connection: it saw 12.
    assert len([r for r in srv.requests if r.path == CHAT]) - before == 12
    if engine._aio is not None:
        # aiohttp takes a released connection back before it sees the close: the race
        # this guards against is met here every time (httpx checks a pooled connection
        # first, and meets it only now and then).
        assert engine.resent >= 1
