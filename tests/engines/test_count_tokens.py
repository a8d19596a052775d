"""Engine.count_tokens against the scripted servers: vLLM, llama-server and
llama-cpp-python tokenize routes (tests/scripted/openai_server.py) and Ollama's raw
/api/generate (tests/scripted/ollama_server.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from lib.engines.base import Engine, EngineError, EngineUnreachable, ModelNotFound
from lib.engines.ollama import OllamaEngine
from lib.engines.openai_compat import OpenAICompatEngine
from tests.scripted import OpenAIScript, OpenAIServer
from tests.scripted.core import count_tokens
from tests.scripted.ollama_server import OllamaServer, raw_tokens

MODEL = "scripted-model"
OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
TEXT = "안녕 tok en 하세요 x and more"
GENERATE = "/api/generate"


def free_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def openai_count(server: OpenAIServer, script: OpenAIScript, *texts: str) -> list:
    server.script = script
    server.requests.clear()
    eng = OpenAICompatEngine(server.base_url)
    try:
        return [await eng.count_tokens(MODEL, t) for t in texts]
    finally:
        await eng.aclose()


def tokenize_bodies(server: OpenAIServer, path: str) -> list:
    return [rec.body for rec in server.recorded(path)]


async def test_every_adapter_has_count_tokens(openai_server, ollama_server):
    for eng in (OpenAICompatEngine(openai_server.base_url), OllamaEngine(ollama_server.url)):
        try:
            assert isinstance(eng, Engine)
        finally:
            await eng.aclose()


async def test_vllm_counts_without_special_tokens_at_the_root(openai_server: OpenAIServer):
    (n,) = await openai_count(openai_server, OpenAIScript(flavor="vllm"), TEXT)
    assert n == count_tokens(TEXT)  # the scripted BOS is not added: add_special_tokens false
    # /tokenize lives at the server root, not under /v1.
    assert tokenize_bodies(openai_server, "/tokenize") == [
        {"model": MODEL, "prompt": TEXT, "add_special_tokens": False}
    ]
    assert not openai_server.recorded("/v1/tokenize")


async def test_llama_server_counts_content_tokens(openai_server: OpenAIServer):
    (n,) = await openai_count(openai_server, OpenAIScript(flavor="llamacpp"), TEXT)
    assert n == count_tokens(TEXT)
    assert tokenize_bodies(openai_server, "/tokenize") == [{"content": TEXT}]


async def test_llama_cpp_python_bos_is_subtracted(openai_server: OpenAIServer):
    script = OpenAIScript(flavor="llama-cpp-python")
    counts = await openai_count(openai_server, script, TEXT, "a b c")
    assert counts == [count_tokens(TEXT), count_tokens("a b c")]
    # Its BOS measured once (the count of ""), then one call per text.
    inputs = [b["input"] for b in tokenize_bodies(openai_server, "/extras/tokenize/count")]
    assert inputs == [TEXT, "", "a b c"]


async def test_words_rule(openai_server: OpenAIServer):
    script = OpenAIScript(flavor="vllm", tokenize_rule="words")
    assert await openai_count(openai_server, script, "one two  three\nfour") == [4]


async def test_empty_text_is_zero_without_asking(openai_server: OpenAIServer):
    assert await openai_count(openai_server, OpenAIScript(), "") == [0]
    assert not openai_server.recorded("/tokenize")


@pytest.mark.parametrize("flavor", ["vllm", "generic"])
async def test_no_tokenizer_is_none_and_asked_once(openai_server: OpenAIServer, flavor: str):
    script = OpenAIScript(flavor=flavor, tokenizer=False)
    assert await openai_count(openai_server, script, TEXT, "more", "text") == [None] * 3
    # Each route answered 404 once; after that nothing more is asked.
    paths = [r.path for r in openai_server.requests if r.method == "POST"]
    assert sorted(paths) == sorted(["/tokenize", "/tokenize", "/extras/tokenize/count"])


async def test_server_error_raises_engine_error(openai_server: OpenAIServer):
    script = OpenAIScript(flavor="vllm", tokenize_fault="http500")
    with pytest.raises(EngineError, match="HTTP 500: tokenizer crashed") as info:
        await openai_count(openai_server, script, TEXT)
    assert not isinstance(info.value, EngineUnreachable | ModelNotFound)


async def test_unknown_model_raises_model_not_found(openai_server: OpenAIServer):
    script = OpenAIScript(flavor="vllm", tokenize_model_check=True, models=["other"])
    with pytest.raises(ModelNotFound, match="scripted-model"):
        await openai_count(openai_server, script, TEXT)


async def test_unreachable_openai_raises():
    eng = OpenAICompatEngine(f"http://127.0.0.1:{free_port()}/v1", meta_timeout_s=2)
    try:
        with pytest.raises(EngineUnreachable):
            await eng.count_tokens(MODEL, TEXT)
    finally:
        await eng.aclose()


# -- Ollama ---------------------------------------------------------------------------


@pytest.fixture
async def ollama(ollama_server: OllamaServer) -> AsyncIterator[OllamaEngine]:
    ollama_server.requests.clear()
    eng = OllamaEngine(ollama_server.url)
    yield eng
    await eng.aclose()
    ollama_server.script.raw_bos = 0
    ollama_server.script.generate = True
    ollama_server.script.omit_prompt_count = False


async def test_ollama_counts_with_a_raw_generate(ollama: OllamaEngine, ollama_server):
    text = "some raw words\n\nand a line"
    assert (
        await ollama.count_tokens(OLLAMA_MODEL, text) == raw_tokens(text) == 8
    )  # 6 words, 2 line breaks
    bodies = [r.body for r in ollama_server.recorded(GENERATE)]
    # Two probes measure what the server adds to any raw prompt, then the text itself.
    assert [b["prompt"] for b in bodies] == ["hello", "hello hello", text]
    assert all(
        b["raw"] is True
        and b["stream"] is False
        and b["options"] == {"num_predict": 1, "temperature": 0}
        and b["model"] == OLLAMA_MODEL
        for b in bodies
    )
    # The probes are made once per model.
    assert await ollama.count_tokens(OLLAMA_MODEL, "two words") == 2
    assert len(ollama_server.recorded(GENERATE)) == 4


async def test_ollama_bos_is_subtracted(ollama: OllamaEngine, ollama_server):
    ollama_server.script.raw_bos = 1
    assert await ollama.count_tokens(OLLAMA_MODEL, "a b c d") == 4


async def test_ollama_without_generate_or_count_is_none(ollama: OllamaEngine, ollama_server):
    ollama_server.script.generate = False
    assert await ollama.count_tokens(OLLAMA_MODEL, "a b") is None
    ollama_server.script.generate = True
    ollama_server.script.omit_prompt_count = True
    assert await ollama.count_tokens(OLLAMA_MODEL, "a b") is None
    assert await ollama.count_tokens(OLLAMA_MODEL, "") == 0


async def test_ollama_errors(ollama: OllamaEngine):
    with pytest.raises(ModelNotFound, match="no-such-model"):
        await ollama.count_tokens("no-such-model", "a b")
    with pytest.raises(EngineError, match="HTTP 503"):
        await ollama.count_tokens("fault-http503", "a b")
    eng = OllamaEngine(f"http://127.0.0.1:{free_port()}", meta_timeout_s=2)
    try:
        with pytest.raises(EngineUnreachable):
            await eng.count_tokens(OLLAMA_MODEL, "a b")
    finally:
        await eng.aclose()


# -- the real sandbox engines (marked: run with -m engines) --------------------------


@pytest.fixture(scope="module")
def sandbox():
    """The sandbox's vLLM and llama.cpp, as the integration tests start them."""
    from tests.integration.conftest import running_engines

    with running_engines("tiny") as found:
        yield found


async def exact_prompts(base_url: str, model: str, tokens: int = 64, count: int = 4) -> list:
    """Synthetic prompts built on a real engine, each re-counted by it: (recorded, recount)."""
    from lib.load.synthetic import SyntheticSpec, build_prompts

    eng = OpenAICompatEngine(base_url)
    try:
        prompts = await build_prompts(eng, model, SyntheticSpec(tokens, 8), count, seed=64)
        return [(p.input_tokens, await eng.count_tokens(model, p.text)) for p in prompts]
    finally:
        await eng.aclose()


@pytest.mark.engines
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", ["vllm", "llama"])
async def test_real_engines_give_exact_64_token_prompts(sandbox, kind: str):
    engine = sandbox[kind]
    got = await exact_prompts(engine["base_url"], engine["models"][0])
    # Each prompt records the engine's own count of it, whatever it is.
    assert [recorded for recorded, _ in got] == [recount for _, recount in got]
    # The tests' tiny random Qwen2 tokenizer merges words more freely than the real
    # model's (exact on 32 of 32 there, BENCHMARKS.md): within 8 counts a prompt lands on
    # 64 or one off, never further.
    assert all(abs(recorded - 64) <= 1 for recorded, _ in got), got
    assert sum(recorded == 64 for recorded, _ in got) >= 2, got
