"""The engine code against a real Ollama 0.24.0, replayed byte for byte.

tests/scripted/ollama_recorded.py answers from tests/data/ollama-0.24.0/ (its README says
what was recorded and what it shows). Every expected value below is read off those files:
the streams' text, the final chunks' counts and nanosecond durations, /api/ps, /api/tags,
/api/show, the offline pull's error line and the recorded 404s. The silent cut-off
(`tiny-qwen2-q8` at num_predict 32: no `done: true`, no timings) must come out as a failed
request on both APIs, never as a short success.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from lib.core.records import Prompt, RequestResult, Sampling
from lib.endpoints import model_option, model_rows, probe_async
from lib.endpoints.registry import Endpoint
from lib.endpoints.variants import PullProgress, pull_model
from lib.engines.base import EngineError, ModelNotFound
from lib.engines.ollama import OllamaEngine
from lib.engines.openai_compat import OpenAICompatEngine
from lib.telemetry.parsers import parse_ollama_ps
from tests.scripted.ollama_recorded import DATA, RecordedOllama

PROMPT = Prompt.from_text("Write one sentence about the sea.")
QWEN_TEXT = "The sea is a vast, unforgiving place where life and death are found."
SMOL_TEXT = (
    "The ocean is a vast and mysterious realm, teeming with life that has captivated"
    " humanity for centuries."
)
TOKYO = "。東京は大きな都市です"  # what the random-weights model repeats
CUT_OFF = "stream ended without done (Ollama cut the answer off)"
V1_CUT_OFF = "stream ended without finish_reason or usage (the server cut the answer off)"
LOCAL = [
    # name, quantization, parameter size, family, size in bytes (/api/tags)
    ("qwen-coder-0.5b:latest", "Q4_K_M", "630.17M", "qwen2", 491_400_641),
    ("smollm2-135m:latest", "Q4_1", "134.52M", "llama", 98_363_007),
    ("tiny-qwen2-f16:latest", "F16", "12.78M", "qwen2", 25_590_920),
    ("tiny-qwen2-q4:latest", "Q4_0", "12.78M", "qwen2", 7_269_161),
    ("tiny-qwen2-q8:latest", "Q8_0", "12.78M", "qwen2", 13_609_769),
]


@pytest.fixture(scope="module")
def recorded() -> Iterator[RecordedOllama]:
    """The replayed Ollama 0.24.0, shared by the module (listings of qwen-coder-0.5b's run)."""
    with RecordedOllama() as server:
        yield server


@pytest.fixture
def srv(recorded: RecordedOllama) -> Iterator[RecordedOllama]:
    recorded.listing, recorded.finals = "qwen-coder-0.5b", []
    recorded.requests.clear()
    recorded.served.clear()
    yield recorded
    recorded.finals = []


@pytest.fixture
async def engine(srv: RecordedOllama) -> AsyncIterator[OllamaEngine]:
    eng = OllamaEngine(srv.url)
    yield eng
    await eng.aclose()


async def chat(eng: OllamaEngine | OpenAICompatEngine, model: str, n: int = 32) -> RequestResult:
    """A chat as the recordings were made: temperature 0, seed 0, num_predict n."""
    sampling = Sampling(max_tokens=n, temperature=0.0, seed=0)
    return await eng.chat(model, PROMPT, sampling, timeout_s=10)


# -- the replay itself ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        ("/api/chat", {"model": "qwen-coder-0.5b"}, "qwen-coder-0.5b__api_chat_stream"),
        ("/api/chat", {"model": "tiny-qwen2-q8"}, "tiny-qwen2-q8__api_chat_stream"),
        ("/api/show", {"model": "smollm2-135m"}, "smollm2-135m__api_show"),
        ("/api/pull", {"model": "qwen2.5:0.5b"}, "qwen-coder-0.5b__api_pull_offline"),
        ("/api/chat", {"model": "no-such-model"}, "unknown__api_chat_404"),
        (
            "/v1/chat/completions",
            {"model": "tiny-qwen2-q8", "stream": True, "max_tokens": 16},
            "tiny-qwen2-q8_np16__v1_chat_completions_stream",
        ),
    ],
)
async def test_replay_is_byte_exact(srv: RecordedOllama, path: str, body: dict, name: str):
    head = (DATA / f"{name}.headers.txt").read_bytes().decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    want = dict(line.split(": ", 1) for line in head[1:] if line)
    async with (
        httpx.AsyncClient(base_url=srv.url) as client,
        client.stream("POST", path, json=body) as response,
    ):
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert srv.served == [name]
    assert response.status_code == status
    assert {k.lower(): v for k, v in want.items()} == dict(response.headers)
    assert b"".join(chunks) == (DATA / f"{name}.txt").read_bytes()
    if want.get("Transfer-Encoding") == "chunked" and path != "/api/show":
        assert len(chunks) > 1  # a stream, line by line


async def test_non_streamed_cut_off_says_done_false(srv: RecordedOllama):
    async with httpx.AsyncClient(base_url=srv.url) as client:
        body = {"model": "tiny-qwen2-q8", "stream": False, "options": {"num_predict": 32}}
        answer = (await client.post("/api/chat", json=body)).json()
    assert answer["done"] is False and "done_reason" not in answer
    assert answer["message"]["content"] == TOKYO * 31
    assert "eval_count" not in answer and "total_duration" not in answer


# -- /api/chat through OllamaEngine -----------------------------------------------


async def test_stream_text_counts_and_server_timings(engine: OllamaEngine, srv: RecordedOllama):
    r = await chat(engine, "qwen-coder-0.5b")
    assert r.error is None
    assert srv.served == ["qwen-coder-0.5b__api_chat_stream"]
    assert r.output_text == QWEN_TEXT
    assert len(r.chunk_times) == len(srv.recorded("/api/chat")[-1].sent) == 17
    assert (r.output_tokens, r.prompt_tokens) == (18, 15)  # eval_count, prompt_eval_count
    assert (r.token_source, r.finish_reason) == ("server", "stop")
    assert r.server == pytest.approx(
        {
            "total_ms": 9342.613441,
            "load_ms": 80.637035,
            "prompt_eval_ms": 2969.410578,
            "eval_ms": 6246.912199,
            "queue_ms": 45.653629,  # 9342.613441 − 80.637035 − 2969.410578 − 6246.912199
            "eval_tokens_per_s": 18 / 6.246912199,
            "prompt_eval_count": 15,
            "eval_count": 18,
        }
    )


async def test_second_model_stream(engine: OllamaEngine):
    r = await chat(engine, "smollm2-135m")
    assert r.error is None and r.output_text == SMOL_TEXT
    assert (r.output_tokens, r.prompt_tokens, r.finish_reason) == (20, 16, "stop")
    assert r.server is not None
    assert r.server["total_ms"] == pytest.approx(6543.741654)
    assert r.server["queue_ms"] == pytest.approx(10.689857)


async def test_num_predict_16_ends_normally(engine: OllamaEngine, srv: RecordedOllama):
    r = await chat(engine, "tiny-qwen2-q8", n=16)
    assert srv.served == ["tiny-qwen2-q8_np16__api_chat_stream"]
    assert r.error is None and r.output_text == TOKYO * 16
    assert (r.output_tokens, r.prompt_tokens, r.finish_reason) == (16, 12, "length")
    assert r.server is not None
    assert r.server["eval_ms"] == pytest.approx(106.237028)
    assert r.server["queue_ms"] == pytest.approx(2.286689)


async def test_silent_cut_off_is_a_failed_request(engine: OllamaEngine, srv: RecordedOllama):
    r = await chat(engine, "tiny-qwen2-q8", n=32)
    assert srv.served == ["tiny-qwen2-q8__api_chat_stream"]
    assert r.error == CUT_OFF
    # What arrived is kept for inspection, but nothing counts it as a finished answer.
    assert r.output_text == TOKYO * 31 and len(r.chunk_times) == 31
    assert (r.output_tokens, r.token_source, r.finish_reason, r.server) == (
        None,
        "none",
        None,
        None,
    )


async def test_concurrent_four_final_chunks_give_queue_time(
    engine: OllamaEngine, srv: RecordedOllama
):
    names = [f"qwen-coder-0.5b__api_chat_stream_concurrent4_final_{i}" for i in (1, 2, 3, 4)]
    srv.finals = list(names)
    results = await asyncio.gather(*(chat(engine, "qwen-coder-0.5b", 24) for _ in range(4)))
    assert sorted(srv.served) == sorted(names) and srv.finals == []
    assert all(r.error is None for r in results)
    got = sorted(
        (r.server["total_ms"], r.server["queue_ms"], r.output_tokens, r.finish_reason)
        for r in results
        if r.server is not None
    )
    # (total, total − load − prompt eval − eval, eval_count, done_reason) per final chunk:
    # one slot, so the three that waited queued for 21.9 s to 53.4 s.
    want = [
        (24884.7457, 26.116086, 11, "stop"),  # final_3: served first
        (50591.506737, 21887.256249, 11, "stop"),  # final_2
        (56479.775017, 47609.396108, 11, "stop"),  # final_1
        (57879.942874, 53406.157871, 24, "length"),  # final_4
    ]
    assert len(got) == 4
    for (total, queue, n, reason), expected in zip(got, want, strict=True):
        assert (total, queue) == pytest.approx(expected[:2])
        assert (n, reason) == expected[2:]
    assert all(r.prompt_tokens == 25 for r in results)


async def test_unknown_model_chat_is_the_recorded_404(engine: OllamaEngine, srv: RecordedOllama):
    r = await chat(engine, "no-such-model")
    assert srv.served == ["unknown__api_chat_404"]
    assert r.error == (
        "model 'no-such-model' not found (HTTP 404): model 'no-such-model' not found"
    )
    assert r.output_tokens is None and r.chunk_times == []


# -- metadata: /api/version, /api/tags, /api/show, /api/ps, /api/pull --------------


async def test_version_and_model_list(engine: OllamaEngine):
    info = await engine.info()
    assert (info.kind, info.api, info.version) == ("ollama", "ollama", "0.24.0")
    models = await engine.list_models()
    got = [(m.name, m.quantization, m.parameter_size, m.family, m.size_bytes) for m in models]
    assert got == LOCAL
    assert all(m.context_length is None for m in models)  # /api/tags has none
    assert models[0].digest == "ee7cc2774b586bb470b191b11a093217738ab8a126d984c33628bbd50033a32c"
    assert models[0].extra["format"] == "gguf"
    rows = model_rows(models)
    assert rows[0]["size"] == "491 MB" and rows[3]["size"] == "7.27 MB"
    assert model_option(models[1]) == "smollm2-135m:latest · Q4_1 · 98.4 MB"


@pytest.mark.parametrize(
    ("model", "name", "quant", "params", "context"),
    [
        ("qwen-coder-0.5b", "qwen-coder-0.5b:latest", "Q4_K_M", "630.17M", 32768),
        ("smollm2-135m:latest", "smollm2-135m:latest", "Q4_1", "134.52M", 8192),
        ("tiny-qwen2-q8", "tiny-qwen2-q8:latest", "Q8_0", "12.78M", 2048),
    ],
)
async def test_check_model_reads_show(
    engine: OllamaEngine, model: str, name: str, quant: str, params: str, context: int
):
    info = await engine.check_model(model)
    assert (info.name, info.quantization, info.parameter_size) == (name, quant, params)
    # The trained context (`<arch>.context_length` in model_info), not the loaded one.
    assert info.context_length == context
    assert info.extra["capabilities"] == ["completion"]


async def test_check_unknown_model(engine: OllamaEngine):
    with pytest.raises(ModelNotFound) as caught:
        await engine.check_model("no-such-model")
    assert str(caught.value).endswith(
        "available: qwen-coder-0.5b:latest, smollm2-135m:latest, tiny-qwen2-f16:latest,"
        " tiny-qwen2-q4:latest, tiny-qwen2-q8:latest (ollama pull it first)"
    )


def epoch(rfc3339: str) -> float:
    seconds, frac = rfc3339.removesuffix("Z").split(".")
    start = datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp()
    return start + float("0." + frac)


async def test_ps_on_cpu(engine: OllamaEngine, srv: RecordedOllama):
    loaded = await engine.ps()
    samples = parse_ollama_ps({"models": loaded}, t=5.0)
    got = {(s.labels["model"], s.name): s.value for s in samples}
    assert got == pytest.approx(
        {
            ("qwen-coder-0.5b:latest", "size"): 442_191_360,
            ("qwen-coder-0.5b:latest", "size_vram"): 0,  # CPU only
            ("qwen-coder-0.5b:latest", "context_length"): 4096,  # loaded, not trained
            ("qwen-coder-0.5b:latest", "expires_at"): epoch("2026-12-02T02:45:55.531235521Z"),
            ("qwen-coder-0.5b:latest", "gpu_share"): 0.0,
            ("tiny-qwen2-q8:latest", "size"): 14_631_832,
            ("tiny-qwen2-q8:latest", "size_vram"): 0,
            ("tiny-qwen2-q8:latest", "context_length"): 2048,
            ("tiny-qwen2-q8:latest", "expires_at"): epoch("2026-12-02T02:45:46.10731847Z"),
            ("tiny-qwen2-q8:latest", "gpu_share"): 0.0,
        },
        abs=1e-3,
    )
    assert {s.source for s in samples} == {"ollama"} and {s.t for s in samples} == {5.0}
    # The raw bytes parse the same (the telemetry recorder reads them raw).
    raw = (DATA / "smollm2-135m__api_ps.txt").read_bytes()
    sizes = {s.labels["model"]: s.value for s in parse_ollama_ps(raw) if s.name == "size"}
    assert sizes == {
        "smollm2-135m:latest": 190_948_608,
        "tiny-qwen2-q8:latest": 14_631_832,
        "qwen-coder-0.5b:latest": 442_191_360,
    }


async def test_probe_lists_the_recorded_models(srv: RecordedOllama):
    status = await probe_async(Endpoint("recorded", srv.url, "ollama"))
    assert status.error is None and status.reachable
    assert (status.engine, status.api, status.version) == ("ollama", "ollama", "0.24.0")
    assert [m.name for m in status.models] == [name for name, *_ in LOCAL]


async def test_pull_offline_error_line(engine: OllamaEngine, srv: RecordedOllama):
    events: list[dict] = []
    with pytest.raises(EngineError) as caught:
        async for event in engine.pull("qwen2.5:0.5b"):
            events.append(event)
    assert events == [{"status": "pulling manifest"}]
    go_error = (
        'pull model manifest: Get "https://registry.ollama.ai/v2/library/qwen2.5/manifests/0.5b":'
        " dial tcp: lookup registry.ollama.ai on 127.0.0.53:53: no such host"
    )
    assert str(caught.value) == f"pull qwen2.5:0.5b: {go_error}"
    line = json.loads((DATA / "qwen-coder-0.5b__api_pull_offline.txt").read_bytes().split(b"\n")[1])
    assert line == {"error": go_error}


def test_pull_model_says_the_registry_is_out_of_reach(srv: RecordedOllama):
    seen: list[PullProgress] = []
    with pytest.raises(EngineError) as caught:
        pull_model(srv.url, "qwen2.5:0.5b", on_progress=seen.append)
    assert seen == [PullProgress("pulling manifest")]
    assert str(caught.value) == (
        "Pull failed: the Ollama server cannot reach its registry (registry.ollama.ai) from"
        " this machine: pull on a machine with internet access, or copy the model in."
        " Ollama said: pull qwen2.5:0.5b: pull model manifest: Get"
        ' "https://registry.ollama.ai/v2/library/qwen2.5/manifests/0.5b": dial tcp: lookup'
        " registry.ollama.ai on 127.0.0.53:53: no such host"
    )


# -- /v1 through the OpenAI-compatible engine -------------------------------------

V1_WAYS = [
    pytest.param({"transport": "aiohttp"}, id="aiohttp"),
    pytest.param({"transport": "httpx"}, id="httpx"),
    pytest.param({"parser": "sdk"}, id="sdk"),
]


@pytest.fixture(params=V1_WAYS)
async def v1(srv: RecordedOllama, request: pytest.FixtureRequest) -> AsyncIterator:
    eng = OpenAICompatEngine(srv.url + "/v1", **request.param)
    yield eng
    await eng.aclose()


async def test_v1_stream_usage_from_the_empty_choices_chunk(v1: OpenAICompatEngine, srv):
    r = await chat(v1, "qwen-coder-0.5b")
    assert srv.served == ["qwen-coder-0.5b__v1_chat_completions_stream"]
    assert r.error is None and r.output_text == QWEN_TEXT
    assert len(r.chunk_times) == 17  # the finish chunk's content is ""; usage has no choices
    assert (r.output_tokens, r.prompt_tokens, r.token_source) == (18, 15, "server")
    assert r.finish_reason == "stop" and r.server is None  # /v1 carries no durations


async def test_v1_num_predict_16_ends_normally(v1: OpenAICompatEngine, srv):
    r = await chat(v1, "tiny-qwen2-q8", n=16)
    assert srv.served == ["tiny-qwen2-q8_np16__v1_chat_completions_stream"]
    assert r.error is None and r.output_text == TOKYO * 16
    assert (r.output_tokens, r.prompt_tokens, r.finish_reason) == (16, 12, "length")


async def test_v1_silent_cut_off_is_a_failed_request(v1: OpenAICompatEngine, srv):
    r = await chat(v1, "tiny-qwen2-q8", n=32)
    # No finish_reason, no usage, no [DONE]: a failure, not a 31-chunk success.
    assert srv.served[0] == "tiny-qwen2-q8__v1_chat_completions_stream"
    assert r.error == V1_CUT_OFF
    assert r.output_text == TOKYO * 31 and len(r.chunk_times) == 31
    assert (r.output_tokens, r.finish_reason) == (None, None)


async def test_v1_unknown_model(v1: OpenAICompatEngine, srv):
    r = await chat(v1, "no-such-model")
    assert srv.served == ["unknown__v1_chat_404"]
    assert r.error == (
        "model 'no-such-model' not found (HTTP 404): model 'no-such-model' not found"
    )


async def test_v1_model_list(v1: OpenAICompatEngine):
    models = await v1.list_models()
    assert [(m.name, m.extra["owned_by"]) for m in models] == [
        (name, "library") for name, *_ in LOCAL
    ]
    # /v1/models carries no quantization, and `:latest` hides the names' tails
    assert all(m.quantization is None and m.context_length is None for m in models)
