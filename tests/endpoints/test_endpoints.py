"""The endpoint registry (lib/endpoints/): validation, defaults, de-duplication, keys,
probes against the scripted Ollama and OpenAI-compatible servers, pulls, vLLM variants."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest

from lib import endpoints as ep
from lib.core.records import ModelInfo
from lib.endpoints import Endpoint, keys, variants
from lib.engines.base import EngineError
from tests.conftest import VLLM_MODEL
from tests.scripted.ollama_server import OllamaScript, OllamaServer
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

SECRET = "sk-test-7f3a9c1e5b2d4f60"


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    monkeypatch.setenv("SERVESCOPE_DB", str(path))
    return path


@pytest.fixture
def no_sandbox(monkeypatch):
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")


@pytest.fixture
def ollama(scripted):
    return scripted.ollama(pull_gap_ms=1.0)


@pytest.fixture
def vllm(scripted):
    return scripted.openai(models=[VLLM_MODEL], root=VLLM_MODEL, max_model_len=8192)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url", "env", "fragment"),
    [
        ("a", "ftp://host", None, "http:// or https://"),
        ("a", "localhost:8000", None, "http:// or https://"),
        ("a", "http://", None, "no host"),
        ("a", "http://h:99999", None, "port"),
        ("a", "http://h:0", None, "port"),
        ("a", "http://user:pw@h:8000", None, "user:password@"),
        ("a", "http://h:8000/v1?key=x", None, "query"),
        ("a", "http://h :8000", None, "spaces"),
        ("a", "", None, "URL is empty"),
        ("", "http://h", None, "name is empty"),
        ("  ", "http://h", None, "name is empty"),
        ("x" * 65, "http://h", None, "longer than 64"),
        ("bad\nname", "http://h", None, "control characters"),
        (" padded", "http://h", None, "spaces"),
        ("ollama (default)", "http://h", None, "reserved"),
        ("sandbox: vllm", "http://h", None, "reserved"),
        ("a", "http://h", "sk-abc 123", "NAME"),
        ("a", "http://h", "1KEY", "NAME"),
        ("a", "http://h", "MY-KEY", "NAME"),
    ],
)
def test_validate_endpoint_rejects_with_one_line(name, url, env, fragment):
    with pytest.raises(ValueError) as info:
        ep.validate_endpoint(name, url, env)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "url", "env"),
    [
        ("gpu box vLLM", "https://gpu.example.com/v1", "GPU_BOX_KEY"),
        ("로컬 올라마", "http://127.0.0.1:11434", None),
        ("x" * 64, "http://[::1]:8000/v1", ""),
        ("llama", "http://10.0.0.5:8080", "_K"),
    ],
)
def test_validate_endpoint_accepts(name, url, env):
    assert ep.validate_endpoint(name, url, env) is None


def test_passwords_in_urls_are_never_repeated():
    url = "ftp://admin:hunter2@gpu:8000/v1"
    with pytest.raises(ValueError) as info:
        ep.validate_endpoint("a", url, None)
    assert "hunter2" not in str(info.value) and "***@gpu:8000" in str(info.value)
    with pytest.raises(ValueError, match="user:password@") as info:
        ep.validate_endpoint("a", "http://admin:hunter2@gpu:8000/v1", None)
    status = ep.probe(Endpoint("x", "http://admin:hunter2@127.0.0.1:1/v1", None))
    assert status.reachable is False and "hunter2" not in repr(status.error)
    [row] = ep.status_rows([status])
    assert row["url"] == "http://***@127.0.0.1:1/v1"
    assert ep.redact_url("http://h:1/a@b") == "http://h:1/a@b"  # an @ in the path stays


def test_url_key_folds_loopback_default_port_and_v1():
    assert ep.url_key("http://localhost:8000/v1/") == ep.url_key("http://127.0.0.1:8000")
    assert ep.url_key("HTTP://EXAMPLE.com/v1") == ep.url_key("http://example.com:80")
    assert ep.url_key("http://h:8000") != ep.url_key("http://h:8001")
    assert ep.normalize_url("HTTP://Host:8000/v1/") == "http://host:8000/v1"


# --- the registry -------------------------------------------------------------------


def test_defaults_and_env_overrides(monkeypatch, db, no_sandbox):
    monkeypatch.delenv(ep.OLLAMA_URL_ENV, raising=False)
    monkeypatch.delenv(ep.VLLM_URL_ENV, raising=False)
    got = ep.configured_endpoints()
    assert [(e.name, e.url, e.api, e.source) for e in got] == [
        (ep.DEFAULT_OLLAMA_NAME, "http://127.0.0.1:11434", "ollama", "default"),
        (ep.DEFAULT_VLLM_NAME, "http://127.0.0.1:8000/v1", "openai", "default"),
    ]
    monkeypatch.setenv(ep.OLLAMA_URL_ENV, "http://gpu:11434")
    monkeypatch.setenv(ep.VLLM_URL_ENV, "")  # empty disables
    got = ep.configured_endpoints()
    assert [(e.name, e.url) for e in got] == [(ep.DEFAULT_OLLAMA_NAME, "http://gpu:11434")]


def test_saved_endpoint_replaces_default_with_same_server(monkeypatch, db, no_sandbox):
    monkeypatch.delenv(ep.OLLAMA_URL_ENV, raising=False)
    monkeypatch.delenv(ep.VLLM_URL_ENV, raising=False)
    ep.save_endpoint(Endpoint("my vllm", "http://localhost:8000/", "openai", "VLLM_KEY"))
    ep.save_endpoint(Endpoint("remote", "http://10.1.2.3:8000/v1", None))
    got = ep.configured_endpoints()
    assert [(e.name, e.source) for e in got] == [
        (ep.DEFAULT_OLLAMA_NAME, "default"),
        ("my vllm", "saved"),
        ("remote", "saved"),
    ]
    mine = got[1]
    assert mine.api_key_env == "VLLM_KEY"
    assert mine.url == "http://localhost:8000"  # stored normalised
    assert got[2].api is None  # auto-detect


def test_sandbox_engines_listed_and_tolerated(monkeypatch, db):
    monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
    monkeypatch.setenv(ep.OLLAMA_URL_ENV, "")
    monkeypatch.setenv(ep.VLLM_URL_ENV, "http://127.0.0.1:8000/v1")
    fake = types.ModuleType("sandbox")
    fake.status = lambda: {  # type: ignore[attr-defined]
        "engines": [
            {"name": "vllm", "kind": "vllm", "base_url": "http://127.0.0.1:8000/v1"},
            {"name": "llama.cpp", "kind": "llama.cpp", "base_url": "http://127.0.0.1:8090/v1"},
            {"name": "broken"},  # no URL: skipped
        ]
    }
    monkeypatch.setitem(sys.modules, "sandbox", fake)
    got = ep.configured_endpoints()
    # The sandbox's vLLM is the default URL's server: listed once, as the sandbox's.
    assert [(e.name, e.url, e.api, e.source) for e in got] == [
        ("sandbox: vllm", "http://127.0.0.1:8000/v1", "openai", "sandbox"),
        ("sandbox: llama.cpp", "http://127.0.0.1:8090/v1", "openai", "sandbox"),
    ]

    def broken() -> dict:
        raise OSError("state.json unreadable")

    fake.status = broken  # type: ignore[attr-defined]
    assert [e.source for e in ep.configured_endpoints()] == ["default"]
    monkeypatch.setitem(sys.modules, "sandbox", types.ModuleType("sandbox"))  # no status()
    assert [e.source for e in ep.configured_endpoints()] == ["default"]
    fake.status = lambda: {"engines": [{"name": "x", "base_url": "http://h:1"}]}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sandbox", fake)
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    assert [e.source for e in ep.configured_endpoints()] == ["default"]


def test_save_rename_duplicate_and_remove(db, no_sandbox):
    ep.save_endpoint(Endpoint("a", "http://h1:8000/v1", "openai"))
    ep.save_endpoint(Endpoint("b", "http://h2:8000/v1", "openai"))
    with pytest.raises(ValueError, match="already exists"):
        ep.save_endpoint(Endpoint("b", "http://h3:8000/v1", None), replaces="a")
    with pytest.raises(ValueError, match="already exists"):
        ep.save_endpoint(Endpoint("b", "http://h3:8000/v1", None))  # adding, not editing
    ep.save_endpoint(Endpoint("b", "http://h2:8001/v1", "openai"), replaces="b")
    ep.save_endpoint(Endpoint("b", "http://h2:8000/v1", "openai"), replaces="b")
    ep.save_endpoint(Endpoint("a2", "http://h1:9000/v1", None, "K"), replaces="a")
    saved = {e.name: e for e in ep.saved_endpoints()}
    assert set(saved) == {"a2", "b"}
    assert saved["a2"].url == "http://h1:9000/v1" and saved["a2"].api_key_env == "K"
    with pytest.raises(ValueError, match="http:// or https://"):
        ep.save_endpoint(Endpoint("c", "ftp://h", None))
    with pytest.raises(ValueError, match="API must be"):
        ep.save_endpoint(Endpoint("c", "http://h", "grpc"))
    assert ep.remove_endpoint("a2") is True
    assert ep.remove_endpoint("a2") is False
    assert [e.name for e in ep.saved_endpoints()] == ["b"]
    assert ep.find_endpoint("b").url == "http://h2:8000/v1"
    assert ep.find_endpoint("nope") is None


def test_store_holds_only_the_key_variable_name(db, monkeypatch, no_sandbox):
    monkeypatch.setenv("MY_KEY", SECRET)
    ep.save_endpoint(Endpoint("k", "http://h:8000/v1", "openai", "MY_KEY"))
    assert SECRET.encode() not in db.read_bytes()
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or SECRET.encode() not in wal.read_bytes()


# --- keys -----------------------------------------------------------------------------


def test_resolve_api_key_env_then_secrets(monkeypatch):
    endpoint = Endpoint("e", "http://h", "openai", "SS_TEST_KEY")
    monkeypatch.delenv("SS_TEST_KEY", raising=False)
    assert ep.resolve_api_key(endpoint, None) is None
    assert ep.resolve_api_key(endpoint, {"SS_TEST_KEY": "from-top"}) == "from-top"
    assert ep.resolve_api_key(endpoint, {"api_keys": {"SS_TEST_KEY": "nested"}}) == "nested"
    monkeypatch.setenv("SS_TEST_KEY", "from-env")
    assert ep.resolve_api_key(endpoint, {"SS_TEST_KEY": "from-top"}) == "from-env"
    assert ep.resolve_api_key(Endpoint("n", "http://h", None), {"x": "y"}) is None

    class Raising(dict):
        def get(self, *a, **k):
            raise FileNotFoundError("no secrets.toml")

    monkeypatch.delenv("SS_TEST_KEY")
    assert ep.resolve_api_key(endpoint, Raising()) is None


# --- probes ---------------------------------------------------------------------------


def test_probe_ollama(ollama):
    status = ep.probe(Endpoint("o", ollama.url + "/", None), timeout=3.0)
    assert status.reachable and status.error is None
    assert (status.engine, status.api, status.version) == ("ollama", "ollama", "0.33.0")
    assert status.base_url == ollama.url
    by_name = {m.name: m for m in status.models}
    assert by_name["qwen2.5:7b-instruct-q4_K_M"].quantization == "Q4_K_M"
    assert by_name["llama3.2:latest"].parameter_size == "3.2B"
    assert by_name["qwen2.5:7b-instruct-q4_K_M"].digest


def test_probe_vllm_auto_and_named(vllm):
    for api in (None, "openai"):
        status = ep.probe(Endpoint("v", vllm.url, api), timeout=3.0)
        assert status.reachable, status.error
        assert (status.engine, status.api, status.version) == ("vllm", "openai", "0.33.0")
        assert status.base_url == vllm.url + "/v1"
        [model] = status.models
        assert model.name == "Qwen/Qwen2.5-7B-Instruct-AWQ"
        assert model.context_length == 8192
        assert model.quantization == "AWQ"


def test_probe_llamacpp():
    with OpenAIServer(OpenAIScript(flavor="llamacpp", models=["tiny"])) as server:
        status = ep.probe(Endpoint("l", server.base_url, None))
    assert status.reachable and status.engine == "llama.cpp"
    assert [m.name for m in status.models] == ["tiny"]


def test_probe_unreachable_port_is_one_line():
    port = free_port()
    status = ep.probe(Endpoint("dead", f"http://127.0.0.1:{port}", None), timeout=2.0)
    assert status.reachable is False
    assert status.engine is None and status.models == []
    assert status.error and "\n" not in status.error
    assert str(port) in status.error


def test_probe_invalid_url_never_raises():
    status = ep.probe(Endpoint("bad", "ftp://nowhere", None))
    assert status.reachable is False
    assert "http://" in status.error


def test_probe_engine_with_no_models():
    with OllamaServer(OllamaScript(models=[])) as server:
        status = ep.probe(Endpoint("empty", server.url, "ollama"))
    assert status.reachable is True
    assert status.models == []
    assert "no models" in status.error


def test_api_key_used_and_never_shown(monkeypatch):
    script = OpenAIScript(models=["m"], api_key=SECRET)
    endpoint = Endpoint("keyed", "", "openai", "SS_PROBE_KEY")
    with OpenAIServer(script) as server:
        endpoint.url = server.base_url
        monkeypatch.setenv("SS_PROBE_KEY", SECRET)
        good = ep.probe(endpoint)
        assert good.reachable and [m.name for m in good.models] == ["m"]
        # A wrong key from secrets.toml: refused, and neither key appears anywhere.
        monkeypatch.delenv("SS_PROBE_KEY")
        wrong = SECRET[::-1]
        bad = ep.probe(endpoint, secrets={"SS_PROBE_KEY": wrong})
        missing = ep.probe(endpoint)
    assert bad.reachable is False and "401" in bad.error
    assert missing.reachable is False and "401" in missing.error
    for status in (good, bad, missing):
        text = repr(status) + str(status.error) + repr(status.endpoint)
        assert SECRET not in text and wrong not in text


def test_scrub_removes_key_from_messages():
    assert keys.scrub(f"boom Bearer {SECRET}\nsecond line", SECRET) == "boom Bearer ***"


def test_probe_all_in_order_concurrently(ollama, vllm):
    dead = Endpoint("dead", f"http://127.0.0.1:{free_port()}", None)
    got = ep.probe_all([Endpoint("o", ollama.url, None), dead, Endpoint("v", vllm.url, None)])
    assert [s.endpoint.name for s in got] == ["o", "dead", "v"]
    assert [s.reachable for s in got] == [True, False, True]
    assert [s.engine for s in got] == ["ollama", None, "vllm"]
    assert ep.probe_all([]) == []


async def test_probe_from_inside_an_event_loop(ollama):
    # Pages call probe() from Streamlit's thread; tests and tools may hold a loop.
    status = ep.probe(Endpoint("o", ollama.url, "ollama"))
    assert status.reachable and status.engine == "ollama"


def test_model_rows():
    rows = ep.model_rows(
        [
            ModelInfo("qwen2.5:7b", "Q4_K_M", "7.6B", "qwen2", None, "abc", 4_683_087_332),
            ModelInfo("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", context_length=32768),
        ]
    )
    assert rows[0]["quantization"] == "Q4_K_M" and rows[0]["size_gb"] == 4.68
    assert rows[1]["quantization"] == "GPTQ-Int4"  # from the name when the engine gave none
    assert rows[1]["context_length"] == 32768 and rows[1]["size_gb"] is None


# --- Ollama pull ------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["qwen2.5:7b-instruct-q8_0", "hf.co/org/Model-GGUF:Q4_K_M"])
def test_validate_ollama_model_accepts(tag):
    assert variants.validate_ollama_model(f" {tag} ") == tag


@pytest.mark.parametrize("tag", ["", "bad name", "qwen;rm -rf /", "-x", ":tag", "a:b:c", "a/"])
def test_validate_ollama_model_rejects(tag):
    with pytest.raises(ValueError) as info:
        variants.validate_ollama_model(tag)
    assert "\n" not in str(info.value)


def test_pull_reports_progress_and_adds_the_model(ollama):
    seen: list[variants.PullProgress] = []
    final = variants.pull_model(ollama.url, "qwen2.5:7b-instruct-q8_0", on_progress=seen.append)
    assert final.status == "success" and final.fraction == 1.0
    assert seen[0].status == "pulling manifest" and seen[0].fraction is None
    fractions = [p.fraction for p in seen if p.fraction is not None]
    assert fractions == sorted(fractions) and 0.0 < fractions[1] < 1.0
    assert [r.body["model"] for r in ollama.recorded("/api/pull")] == ["qwen2.5:7b-instruct-q8_0"]
    names = [m.name for m in ep.probe(Endpoint("o", ollama.url, "ollama")).models]
    assert "qwen2.5:7b-instruct-q8_0" in names


def test_pull_errors_are_one_line(ollama):
    with pytest.raises(EngineError) as info:
        variants.pull_model(ollama.url, "missing-model:latest")
    assert "file does not exist" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError):
        variants.pull_model(ollama.url, "not a tag")
    assert ollama.recorded("/api/pull")[-1].body["model"] == "missing-model:latest"
    with pytest.raises(EngineError):
        variants.pull_model(f"http://127.0.0.1:{free_port()}", "qwen2.5:7b")


def test_pull_progress_folds_layers():
    layers: dict[str, tuple[int, int]] = {}
    assert variants.pull_progress(layers, {"status": "pulling manifest"}).fraction is None
    variants.pull_progress(layers, {"status": "pulling a", "digest": "a", "total": 100})
    p = variants.pull_progress(layers, {"status": "pulling b", "digest": "b", "total": 300})
    assert (p.completed, p.total) == (0, 400)
    variants.pull_progress(
        layers, {"status": "pulling a", "digest": "a", "total": 100, "completed": 100}
    )
    p = variants.pull_progress(layers, {"digest": "b", "total": 300, "completed": 100})
    assert p.fraction == 0.5
    assert variants.pull_progress(layers, {"status": "success"}).fraction == 1.0


# --- quantization names and vLLM variants -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", "AWQ"),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "GPTQ-Int4"),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8", "GPTQ-Int8"),
        ("Qwen/Qwen3-8B-FP8", "FP8"),
        ("qwen2.5:7b-instruct-q4_K_M", "Q4_K_M"),
        ("qwen2.5:7b-instruct-q8_0", "Q8_0"),
        ("tiny-f16.gguf", "F16"),
        ("Qwen/Qwen2.5-7B-Instruct", None),
        ("llama3.2:latest", None),
        ("awqward-model", None),
    ],
)
def test_guess_quantization(name, quant):
    assert ep.guess_quantization(name) == quant


def test_vllm_variants_for_awq():
    served = ModelInfo(
        "Qwen/Qwen2.5-7B-Instruct-AWQ",
        quantization="AWQ",
        context_length=8192,
        digest="Qwen/Qwen2.5-7B-Instruct-AWQ",
    )
    found = variants.vllm_variants(served, "http://127.0.0.1:8000/v1")
    assert [(v.label, v.model, v.quantization) for v in found] == [
        ("GPTQ-Int4", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "GPTQ-Int4"),
        ("GPTQ-Int8", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8", "GPTQ-Int8"),
        ("FP8", "Qwen/Qwen2.5-7B-Instruct-FP8", "FP8"),
        ("unquantized (BF16)", "Qwen/Qwen2.5-7B-Instruct", None),
    ]
    assert found[0].command == (
        "vllm serve Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"
        " --served-model-name Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"
        " --max-model-len 8192 --gpu-memory-utilization 0.9 --port 8000 --host 127.0.0.1"
    )


def test_vllm_variants_unquantized_remote_and_local_paths():
    served = ModelInfo("qwen", digest="Qwen/Qwen2.5-7B-Instruct", context_length=32768)
    found = variants.vllm_variants(served, "https://gpu.example.com:9000/v1")
    assert [v.quantization for v in found] == ["AWQ", "GPTQ-Int4", "GPTQ-Int8", "FP8"]
    assert found[0].argv == [
        "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "--served-model-name", "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "--max-model-len", "32768", "--gpu-memory-utilization", "0.9", "--port", "9000",
    ]  # fmt: skip
    local = ModelInfo("tiny", digest="/srv/models/My Model-FP8")
    [awq, *_] = variants.vllm_variants(local, "http://localhost:8000/v1")
    assert awq.model == "/srv/models/My Model-AWQ"
    assert awq.argv[4] == "My Model-AWQ"  # a folder is served under its folder name
    assert "'/srv/models/My Model-AWQ'" in awq.command  # quoted for copying
    assert "--max-model-len" not in awq.argv  # unknown: left to vLLM
    assert (
        variants.base_model_name("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4") == "Qwen/Qwen2.5-7B-Instruct"
    )
    # A local folder that does not name its quantization (the sandbox's): nothing to guess.
    sandbox_model = ModelInfo("tiny-qwen2", digest="/work/.sandbox/models/tiny-qwen2/hf")
    assert variants.vllm_variants(sandbox_model, "http://127.0.0.1:8000/v1") == []
    # A custom served name over a repo id: the repo id names the siblings.
    custom = ModelInfo("qwen", extra={"root": "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8"})
    got = [v.model for v in variants.vllm_variants(custom, "http://127.0.0.1:8000/v1")]
    assert got[0] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8" not in got
    # The quantization a local config.json gave (lower case) still hides the served one.
    served = ModelInfo("Org/Model", quantization="awq", digest="Org/Model")
    models = [v.model for v in variants.vllm_variants(served, "http://h:8000/v1")]
    assert models == ["Org/Model-GPTQ-Int4", "Org/Model-GPTQ-Int8", "Org/Model-FP8"]


# --- model labels for pickers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "label"),
    [
        (397_821_319, "398 MB"),  # qwen2.5-coder:0.5b as `ollama list` shows it
        (4_683_087_332, "4.68 GB"),
        (7_269_161, "7.27 MB"),
        (25_590_920, "25.6 MB"),
        (999_600_000, "1 GB"),  # rounds up into the next unit, not "1e+03 MB"
        (512, "512 B"),
    ],
)
def test_size_label(size, label):
    assert ep.size_label(size) == label


def test_model_option_names_quantization_and_size():
    """The Run page's model picker showed bare names: variants looked alike."""
    coder = ModelInfo("qwen2.5-coder:0.5b", "Q4_K_M", size_bytes=397_821_319)
    assert ep.model_option(coder) == "qwen2.5-coder:0.5b · Q4_K_M · 398 MB"
    # vLLM reports no size; the quantization is read from the name, as in model_rows.
    assert ep.model_option(ModelInfo("Org/M-AWQ")) == "Org/M-AWQ · AWQ"
    assert ep.model_option(ModelInfo("plain")) == "plain"  # nothing known: the name only


# --- Ollama pull: registry out of reach ---------------------------------------------------

# Ollama 0.24.0's /api/pull error on a machine whose registry cannot be reached
# (reference recording qwen-coder-0.5b__api_pull_offline.txt).
OFFLINE_REASON = (
    'pull model manifest: Get "https://registry.ollama.ai/v2/library/qwen2.5/manifests/0.5b":'
    " dial tcp: lookup registry.ollama.ai on 127.0.0.53:53: no such host"
)
REGISTRY_HINT = (
    "the Ollama server cannot reach its registry (registry.ollama.ai) from this machine:"
    " pull on a machine with internet access, or copy the model in"
)


@pytest.mark.parametrize(
    "reason",
    [
        OFFLINE_REASON,
        OFFLINE_REASON.replace("no such host", "server misbehaving"),
        'pull model manifest: Get "https://registry.ollama.ai/v2/library/x/manifests/latest":'
        " dial tcp 104.21.75.227:443: i/o timeout",
        'pull model manifest: Get "https://registry.ollama.ai/v2/library/x/manifests/latest":'
        " dial tcp 127.0.0.1:443: connect: connection refused",
    ],
)
def test_pull_failure_names_the_unreachable_registry(reason):
    """The raw DNS error came with no hint of what to do."""
    message = variants.pull_failure(f"pull qwen2.5:0.5b: {reason}")
    assert message.startswith(f"Pull failed: {REGISTRY_HINT}")
    assert message.endswith(f"pull qwen2.5:0.5b: {reason}")  # the raw reason kept after it
    assert "\n" not in message


def test_pull_failure_other_reasons_and_hosts():
    assert variants.pull_failure("pull m: pull model manifest: file does not exist") == (
        "Pull failed: pull m: pull model manifest: file does not exist"
    )
    # A model from another registry: that one is named.
    hf = 'pull model manifest: Get "https://hf.co/v2/org/m/manifests/Q4_K_M": dial tcp: i/o timeout'
    assert "cannot reach its registry (hf.co)" in variants.pull_failure(hf)
    # Multi-line text from a server stays one line.
    assert "\n" not in variants.pull_failure("first line\nsecond line")


class OfflineOllama(OllamaServer):
    """Replays Ollama 0.24.0's /api/pull stream on a machine without the registry."""

    def _pull(self, rec, reply, body):
        reply.start("application/x-ndjson")
        lines = [{"status": "pulling manifest"}, {"error": OFFLINE_REASON}]
        items = [json.dumps(x).encode() + b"\n" for x in lines]
        return self.stream(reply, rec, items, [0.0, 0.0], [0, 0], reply.end)


def test_pull_without_the_registry_gives_the_hint():
    with OfflineOllama(OllamaScript()) as server, pytest.raises(EngineError) as info:
        variants.pull_model(server.url, "qwen2.5:0.5b")
    message = str(info.value)
    assert REGISTRY_HINT in message and "no such host" in message and "\n" not in message


# --- one server, one entry ------------------------------------------------------------------


@pytest.fixture
def sandbox_vllm(monkeypatch):
    """The sandbox's vLLM running on the default vLLM port."""
    monkeypatch.delenv("SERVESCOPE_SANDBOX", raising=False)
    monkeypatch.setenv(ep.OLLAMA_URL_ENV, "")
    monkeypatch.setenv(ep.VLLM_URL_ENV, "")
    fake = types.ModuleType("sandbox")
    fake.status = lambda: {  # type: ignore[attr-defined]
        "engines": [{"name": "vllm", "kind": "vllm", "base_url": "http://127.0.0.1:8000/v1"}]
    }
    monkeypatch.setitem(sys.modules, "sandbox", fake)


def test_save_refuses_a_url_already_listed(db, sandbox_vllm):
    """A saved endpoint at the sandbox's URL silently hid the sandbox's entry."""
    with pytest.raises(ValueError) as info:
        ep.save_endpoint(Endpoint("mine", "http://localhost:8000/", "openai"))
    assert str(info.value) == (
        "http://localhost:8000 is already listed as 'sandbox: vllm' (http://127.0.0.1:8000/v1);"
        " use that entry, or give another URL."
    )
    assert ep.saved_endpoints() == []
    # Two saved entries for one server: the second would hide too.
    ep.save_endpoint(Endpoint("a", "http://h1:8000/v1", "openai"))
    with pytest.raises(ValueError) as info:
        ep.save_endpoint(Endpoint("b", "http://H1:8000", None))
    assert str(info.value).startswith("http://h1:8000 is already listed as 'a' ")
    ep.save_endpoint(Endpoint("a", "http://h1:8000/v1", None, "K"), replaces="a")  # itself
    assert [(e.name, e.api_key_env) for e in ep.saved_endpoints()] == [("a", "K")]


def test_hidden_endpoints_say_which_hides_which(db, sandbox_vllm):
    """A store saved before the refusal existed: the page must say who hides whom."""
    from lib import store

    with store.opened() as conn:
        store.save_endpoint(conn, "old vllm", "http://localhost:8000", "openai", None)
    assert [e.name for e in ep.configured_endpoints()] == ["old vllm"]
    [(hidden, by)] = ep.hidden_endpoints()
    assert (hidden.name, by.name) == ("sandbox: vllm", "old vllm")
    assert ep.hidden_line(hidden, by) == (
        "'old vllm' (http://localhost:8000) hides 'sandbox: vllm' (http://127.0.0.1:8000/v1):"
        " both are the same server. Remove 'old vllm' or change its URL to list both."
    )


def test_a_default_replaced_by_design_is_not_reported(db, monkeypatch, no_sandbox):
    monkeypatch.setenv(ep.VLLM_URL_ENV, "http://127.0.0.1:8000/v1")
    ep.save_endpoint(Endpoint("my vllm", "http://localhost:8000", "openai", "KEY"))
    assert [e.name for e in ep.configured_endpoints()][-1] == "my vllm"
    assert ep.hidden_endpoints() == []
