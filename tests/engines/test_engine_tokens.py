"""Token counts from the server's tokenizer when a stream carries none (lib/engines/tokens.py),
against the scripted servers' tokenize routes (tests/scripted/openai_server.py)."""

from __future__ import annotations

import pytest

from lib.core.records import Prompt, RequestResult, Sampling
from lib.engines.openai_compat import OpenAICompatEngine
from lib.engines.tokens import route_order
from tests.scripted import OpenAIScript, OpenAIServer
from tests.scripted.core import count_tokens

MODEL = "scripted-model"
CHAT = "/v1/chat/completions"
LCP_COUNT = "/extras/tokenize/count"
PROMPT = Prompt.from_text("안녕하세요")


async def run(server: OpenAIServer, script: OpenAIScript, *max_tokens: int) -> list[RequestResult]:
    """One engine, one request per max_tokens value (the flavour is detected)."""
    server.script = script
    server.requests.clear()
    eng = OpenAICompatEngine(server.url)
    try:
        return [
            await eng.chat(MODEL, PROMPT, Sampling(max_tokens=n), timeout_s=5) for n in max_tokens
        ]
    finally:
        await eng.aclose()


def lcp(**kw: object) -> OpenAIScript:
    return OpenAIScript(flavor="llama-cpp-python", usage="none", ttft_ms=5, gap_ms=1, **kw)


async def test_llama_cpp_python_count_comes_after_the_timing(openai_server: OpenAIServer):
    (r,) = await run(openai_server, lcp(), 7)
    assert r.error is None
    assert (r.output_tokens, r.token_source) == (7, "server-tokenizer")
    chat_rec = openai_server.recorded(CHAT)[-1]
    assert len(r.chunk_times) == len(chat_rec.sent) == 5
    asked = [rec for rec in openai_server.recorded(LCP_COUNT) if rec.body["input"]]
    assert [rec.body for rec in asked] == [{"input": r.output_text, "model": MODEL}]
    # The count was asked for only once the request's timing was complete.
    assert asked[0].t_recv >= r.t_done >= r.chunk_times[-1]


async def test_llama_cpp_python_bos_is_measured_once_and_subtracted(openai_server: OpenAIServer):
    results = await run(openai_server, lcp(), 4, 9)
    assert [(r.output_tokens, r.token_source) for r in results] == [
        (4, "server-tokenizer"),
        (9, "server-tokenizer"),
    ]
    # One probe of "" (BOS = 1 token) for the model, then one count per request.
    assert [rec.body["input"] for rec in openai_server.recorded(LCP_COUNT)] == [
        results[0].output_text,
        "",
        results[1].output_text,
    ]


async def test_llama_cpp_python_without_bos(openai_server: OpenAIServer):
    (r,) = await run(openai_server, lcp(bos=False), 5)
    assert (r.output_tokens, r.token_source) == (5, "server-tokenizer")


async def test_a_count_above_max_tokens_is_capped(openai_server: OpenAIServer):
    # Re-tokenizing can find more tokens than were generated; no server generates more
    # than max_tokens, so the count is capped there (and left alone below it).
    capped, below = await run(openai_server, lcp(retokenize_extra=3), 5, 9)
    assert (capped.output_tokens, capped.token_source) == (5, "server-tokenizer")
    openai_server.script = lcp(retokenize_extra=1, tokens=4)
    (uncapped,) = await run(openai_server, openai_server.script, 9)
    assert (uncapped.finish_reason, uncapped.output_tokens) == ("stop", 5)
    assert below.output_tokens == 9


async def test_reasoning_text_is_counted_too(openai_server: OpenAIServer):
    (r,) = await run(openai_server, lcp(reasoning_chunks=2), 9)
    assert r.output_text == " 하세요 x안녕 token 하세요"  # chunks 3-6 (tokens 4-9)
    assert (r.output_tokens, r.token_source) == (9, "server-tokenizer")


@pytest.mark.parametrize(
    ("flavor", "body_keys"),
    [
        ("llamacpp", {"content"}),  # llama-server: `add_special` is off by default
        ("vllm", {"model", "prompt", "add_special_tokens"}),
    ],
)
async def test_llama_server_and_vllm_routes(
    openai_server: OpenAIServer, flavor: str, body_keys: set
):
    script = OpenAIScript(flavor=flavor, usage="none", timings=False, ttft_ms=5, gap_ms=1)
    (r,) = await run(openai_server, script, 6)
    assert (r.output_tokens, r.token_source) == (6, "server-tokenizer")
    (rec,) = openai_server.recorded("/tokenize")
    assert set(rec.body) == body_keys
    if flavor == "vllm":
        assert rec.body["add_special_tokens"] is False  # vLLM's default would add BOS


async def test_server_count_wins_and_no_tokenizer_is_asked(openai_server: OpenAIServer):
    (r,) = await run(openai_server, OpenAIScript(ttft_ms=5, gap_ms=1), 5)
    assert (r.output_tokens, r.token_source) == (5, "server")
    assert openai_server.recorded("/tokenize") == []


async def test_no_route_anywhere_is_probed_once(openai_server: OpenAIServer):
    script = OpenAIScript(flavor="generic", usage="none", ttft_ms=5, gap_ms=1)
    results = await run(openai_server, script, 3, 3)
    assert [(r.output_tokens, r.token_source) for r in results] == [(None, "none")] * 2
    probed = [rec.path for rec in openai_server.requests if "tokenize" in rec.path]
    # Each route once (two share the path /tokenize), none for the second request.
    assert sorted(probed) == [LCP_COUNT, "/tokenize", "/tokenize"]


async def test_a_failing_tokenizer_is_tried_again(openai_server: OpenAIServer):
    openai_server.script = lcp(tokenize_fault="http500")
    openai_server.requests.clear()
    eng = OpenAICompatEngine(openai_server.url)
    try:
        first = await eng.chat(MODEL, PROMPT, Sampling(max_tokens=4), timeout_s=5)
        openai_server.script.tokenize_fault = None
        second = await eng.chat(MODEL, PROMPT, Sampling(max_tokens=4), timeout_s=5)
    finally:
        await eng.aclose()
    assert first.error is None and (first.output_tokens, first.token_source) == (None, "none")
    assert (second.output_tokens, second.token_source) == (4, "server-tokenizer")


async def test_failed_request_is_not_counted(openai_server: OpenAIServer):
    openai_server.script = lcp()
    openai_server.requests.clear()
    eng = OpenAICompatEngine(openai_server.url)
    try:
        r = await eng.chat("fault-close", PROMPT, Sampling(max_tokens=6), timeout_s=5)
    finally:
        await eng.aclose()
    assert r.error is not None and r.output_tokens is None and r.token_source == "none"
    assert openai_server.recorded(LCP_COUNT) == []


def test_route_order_puts_the_detected_server_first():
    assert route_order("llama.cpp", "llama-cpp-python")[0] == "llama-cpp-python"
    assert route_order("llama.cpp", None)[0] == "llama.cpp"
    assert route_order("vllm", None)[0] == "vllm"
    assert sorted(route_order("openai", None)) == ["llama-cpp-python", "llama.cpp", "vllm"]


def test_scripted_tokenizer_counts_scripted_words():
    assert count_tokens("안녕 token 하세요 x") == 5
    assert count_tokens("ab") == 2
