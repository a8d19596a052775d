"""detect(): what answers at a URL, and make_engine()'s choices."""

from __future__ import annotations

import pytest

from lib.engines import make_engine
from lib.engines.base import Engine, EngineError, EngineUnreachable
from lib.engines.detect import detect
from lib.engines.ollama import OllamaEngine
from lib.engines.openai_compat import OpenAICompatEngine
from tests.scripted import OllamaServer, OpenAIScript, OpenAIServer
from tests.scripted.core import Recorded, Reply, ScriptedServer


class NotAnEngine(ScriptedServer):
    """A web server that is neither Ollama nor OpenAI-compatible."""

    def handle(self, rec: Recorded, reply: Reply) -> bool:
        reply.send(404, b"<h1>Not Found</h1>", "text/html")
        return True


@pytest.mark.parametrize("suffix", ["", "/", "/v1"])
async def test_ollama(ollama_server: OllamaServer, suffix: str):
    info = await detect(ollama_server.url + suffix)
    assert (info.kind, info.api, info.version) == ("ollama", "ollama", "0.33.0")
    assert info.base_url == ollama_server.url  # native API at the root
    assert info.extra["openai_base_url"] == ollama_server.url + "/v1"


@pytest.mark.parametrize(
    ("flavor", "kind", "version"),
    [
        ("vllm", "vllm", "0.33.0"),
        ("llamacpp", "llama.cpp", "b6097-1a2b3c4"),
        ("llama-cpp-python", "llama.cpp", "0.3.36"),
        ("generic", "openai", None),
    ],
)
@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
async def test_openai_flavours(
    openai_server: OpenAIServer, flavor: str, kind: str, version: str | None, suffix: str
):
    openai_server.script = OpenAIScript(flavor=flavor)
    info = await detect(openai_server.url + suffix)
    assert (info.kind, info.api, info.version) == (kind, "openai", version)
    assert info.base_url == openai_server.url + "/v1"  # normalised
    assert info.extra["models"] == ["scripted-model"]


async def test_api_key_is_sent(openai_server: OpenAIServer):
    openai_server.script = OpenAIScript(api_key="k1")
    with pytest.raises(EngineError, match="HTTP 401"):
        await detect(openai_server.url)
    info = await detect(openai_server.url, api_key="k1")
    assert info.kind == "vllm"


async def test_unreachable():
    with pytest.raises(EngineUnreachable, match=r"^nothing answers at http://127.0.0.1:9: "):
        await detect("http://127.0.0.1:9/v1", timeout=1.0)


async def test_something_else_answers():
    match = "answers but not as Ollama or an OpenAI"
    with NotAnEngine() as srv, pytest.raises(EngineError, match=match) as caught:
        await detect(srv.url)
    assert not isinstance(caught.value, EngineUnreachable)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com", "scheme must be http or https"),
        ("localhost:8000", "scheme must be http or https"),
        ("http://", "no host"),
        ("http://host:99999", "Port out of range"),
        ("", "scheme must be http or https"),
    ],
)
async def test_invalid_urls(url: str, why: str):
    with pytest.raises(EngineError, match=f"^invalid URL {url!r}: {why}"):
        await detect(url)


def test_make_engine_kinds():
    ollama = make_engine("ollama", "http://h:11434/")
    assert isinstance(ollama, OllamaEngine) and isinstance(ollama, Engine)
    eng = make_engine("openai", "http://h:8000")
    assert isinstance(eng, OpenAICompatEngine) and isinstance(eng, Engine)
    assert (eng.base_url, eng.root, eng.flavor) == ("http://h:8000/v1", "http://h:8000", None)
    custom = make_engine("openai", "https://gw.example.com/openai/v1/")
    assert custom.base_url == "https://gw.example.com/openai/v1"
    assert make_engine("vllm", "http://h:8000/v1").flavor == "vllm"
    assert make_engine("llama.cpp", "http://h:8080").flavor == "llama.cpp"
    with pytest.raises(EngineError, match="unknown engine kind 'tgi'"):
        make_engine("tgi", "http://h:8000")
    with pytest.raises(EngineError, match="invalid URL"):
        make_engine("ollama", "h:11434")
