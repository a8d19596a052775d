"""Engines page through AppTest, against the scripted Ollama and vLLM servers."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import endpoints as ep
from lib import store
from tests.conftest import VLLM_MODEL
from tests.scripted.ollama_server import OllamaScript, OllamaServer
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "engines.py")
SECRET = "sk-page-0c1d2e3f4a5b6c7d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh store, no sandbox, and both defaults pointing nowhere until set."""
    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv(ep.OLLAMA_URL_ENV, "")
    monkeypatch.setenv(ep.VLLM_URL_ENV, "")
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml of the repo's
    st.cache_data.clear()
    yield monkeypatch
    st.cache_data.clear()


@pytest.fixture
def ollama(env, scripted):
    server = scripted.ollama(pull_gap_ms=1.0)
    env.setenv(ep.OLLAMA_URL_ENV, server.url)
    return server


@pytest.fixture
def vllm(env, scripted):
    server = scripted.openai(models=[VLLM_MODEL], root=VLLM_MODEL, max_model_len=8192)
    env.setenv(ep.VLLM_URL_ENV, server.base_url)
    return server


def unescape(markdown: str) -> str:
    """The text a reader sees of markdown escaped by formatting.esc_md."""
    return markdown.replace("\\", "")


def run_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=30).run()


def page_text(at: AppTest) -> str:
    """Every bit of text the page shows, to check what is (and is not) on it."""
    parts = []
    for kind in ("markdown", "caption", "text", "code", "success", "info", "warning", "error"):
        parts += [str(el.value) for el in getattr(at, kind)]
    parts += [el.label for el in at.expander]
    parts += [el.value.to_csv() for el in at.dataframe]
    return unescape("\n".join(parts))  # an escaped key must not slip past the check


def model_tables(at: AppTest) -> list:
    """The model tables, in endpoint order (st.dataframe keys are not visible to AppTest)."""
    return [d.value for d in at.dataframe if "quantization" in d.value.columns]


def status_table(at: AppTest):
    return at.dataframe[0].value.set_index("name")


def test_both_defaults_up_with_models(ollama, vllm):
    at = run_page()
    assert not at.exception
    table = status_table(at)
    assert list(table.index) == [ep.DEFAULT_OLLAMA_NAME, ep.DEFAULT_VLLM_NAME]
    assert table.loc[ep.DEFAULT_OLLAMA_NAME, "engine"] == "ollama"
    assert bool(table.loc[ep.DEFAULT_OLLAMA_NAME, "reachable"]) is True
    assert table.loc[ep.DEFAULT_OLLAMA_NAME, "models"] == 2
    assert table.loc[ep.DEFAULT_VLLM_NAME, "engine"] == "vllm"
    assert table.loc[ep.DEFAULT_VLLM_NAME, "version"] == "0.33.0"
    labels = [unescape(x.label) for x in at.expander]
    assert labels == [
        f"{ep.DEFAULT_OLLAMA_NAME} — ollama 0.33.0 — 2 models",
        f"{ep.DEFAULT_VLLM_NAME} — vllm 0.33.0 — 1 model",
    ]
    ollama_models, vllm_models = model_tables(at)
    assert dict(zip(ollama_models["model"], ollama_models["quantization"], strict=True)) == {
        "qwen2.5:7b-instruct-q4_K_M": "Q4_K_M",
        "llama3.2:latest": "Q8_0",
    }
    assert vllm_models.iloc[0]["context_length"] == 8192


def test_vllm_variant_command(vllm):
    at = run_page()
    assert not at.exception
    assert any("Serves Qwen/Qwen2.5-7B-Instruct-AWQ · quantization AWQ" in t.value for t in at.text)
    pick = at.selectbox(key=f"variant:{ep.DEFAULT_VLLM_NAME}")
    assert pick.options == [
        "GPTQ-Int4", "GPTQ-Int8", "FP8", "unquantized (BF16)",
    ]  # fmt: skip
    assert at.code[0].value == (
        "vllm serve Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4 --served-model-name "
        "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4 --max-model-len 8192 "
        f"--gpu-memory-utilization 0.9 --port {vllm.port} --host 127.0.0.1"
    )
    pick.set_value("unquantized (BF16)").run()
    assert not at.exception
    assert at.code[0].value.startswith("vllm serve Qwen/Qwen2.5-7B-Instruct --served-model-name")


def test_unreachable_endpoint_shows_one_line(env):
    port = free_port()
    env.setenv(ep.OLLAMA_URL_ENV, f"http://127.0.0.1:{port}")
    at = run_page()
    assert not at.exception
    assert bool(status_table(at).loc[ep.DEFAULT_OLLAMA_NAME, "reachable"]) is False
    assert unescape(at.expander[0].label) == f"{ep.DEFAULT_OLLAMA_NAME} — down"
    [error] = at.error
    assert str(port) in error.value and "\n" not in error.value
    assert [t.key for t in at.text_input if t.key.startswith("pull_tag:")] == []  # no pull form
    # What an unreachable engine did not report reads "–", never a literal None.
    table = at.dataframe[0].value
    texts = table[[c for c in table.columns if pd.api.types.is_string_dtype(table[c])]]
    assert not texts.isna().any().any(), texts
    assert table.loc[table["name"] == ep.DEFAULT_OLLAMA_NAME, "version"].iloc[0] == "–"


def test_engine_with_no_models(env):
    with OllamaServer(OllamaScript(models=[])) as server:
        env.setenv(ep.OLLAMA_URL_ENV, server.url)
        at = run_page()
    assert not at.exception
    assert "serves no models" in at.warning[0].value


def test_no_endpoints_at_all(env):
    at = run_page()
    assert not at.exception
    assert "No endpoints" in at.info[0].value


def fill_add_form(at: AppTest, name: str, url: str, key_env: str = "", api="auto") -> AppTest:
    at.text_input(key="add_name").input(name)
    at.text_input(key="add_url").input(url)
    at.text_input(key="add_key_env").input(key_env)
    at.selectbox(key="add_api").select_index(["auto", "ollama", "openai"].index(api))
    return next(b for b in at.button if b.label == "Add endpoint").click().run()


def saved_rows(db: str):
    with store.opened(db) as conn:
        return store.list_endpoints(conn)


def test_add_invalid_endpoint_shows_error(env):
    at = run_page()
    fill_add_form(at, "gpu box", "ftp://10.0.0.5:8000")
    assert not at.exception
    assert "http:// or https://" in unescape(at.error[0].value)
    fill_add_form(at, "gpu box", "http://10.0.0.5:8000", key_env="sk-live-123")
    assert not at.exception
    assert "environment variable NAME" in unescape(at.error[0].value)
    fill_add_form(at, "ollama (default)", "http://10.0.0.5:8000")
    assert "reserved" in at.error[0].value
    assert saved_rows(os.environ["SERVESCOPE_DB"]) == []


def test_add_edit_remove_saved_endpoint_with_key(env, vllm):
    db = os.environ["SERVESCOPE_DB"]
    vllm.script.api_key = SECRET
    env.setenv("GPU_BOX_KEY", SECRET)
    env.setenv(ep.VLLM_URL_ENV, "")  # only the saved one points at the server
    at = run_page()
    fill_add_form(at, "gpu box", vllm.base_url, key_env="GPU_BOX_KEY", api="openai")
    assert not at.exception
    assert unescape(at.success[0].value) == "Added gpu box."
    [row] = saved_rows(db)
    assert (row["name"], row["url"], row["kind"], row["api_key_env"]) == (
        "gpu box", vllm.base_url, "openai", "GPU_BOX_KEY",
    )  # fmt: skip
    table = status_table(at)
    assert bool(table.loc["gpu box", "reachable"]) is True  # the key from the env was sent
    assert table.loc["gpu box", "api_key"] == "GPU_BOX_KEY (set)"
    assert SECRET not in page_text(at)
    # Adding the same name again is refused.
    fill_add_form(at, "gpu box", "http://10.0.0.9:8000/v1")
    assert "already exists" in at.error[0].value

    # Edit: rename and switch to auto-detect; the key variable unset → 401 shown, no key.
    env.delenv("GPU_BOX_KEY")
    at.text_input(key="edit_name:gpu box").input("gpu box 2")
    at.selectbox(key="edit_api:gpu box").select_index(0)  # auto-detect
    next(b for b in at.button if b.key == "edit_go:gpu box").click().run()
    assert not at.exception
    assert unescape(at.success[0].value) == "Saved gpu box 2."
    [row] = saved_rows(db)
    assert (row["name"], row["kind"]) == ("gpu box 2", None)
    assert status_table(at).loc["gpu box 2", "api_key"] == "GPU_BOX_KEY (not set)"
    assert bool(status_table(at).loc["gpu box 2", "reachable"]) is False
    assert "401" in page_text(at)
    assert SECRET not in page_text(at)

    # A bad edit keeps the row as it was.
    at.text_input(key="edit_url:gpu box 2").input("not a url")
    next(b for b in at.button if b.key == "edit_go:gpu box 2").click().run()
    assert not at.exception
    assert "URL" in at.error[-1].value
    assert saved_rows(db)[0]["url"] == vllm.base_url

    # Remove needs the confirmation.
    assert at.button(key="remove:gpu box 2").disabled
    at.checkbox(key="remove_ok:gpu box 2").check().run()
    at.button(key="remove:gpu box 2").click().run()
    assert not at.exception
    assert unescape(at.success[0].value) == "Removed gpu box 2."
    assert saved_rows(db) == []
    assert "gpu box 2" not in [unescape(x.label).split(" — ")[0] for x in at.expander]


def test_test_button_probes_now(ollama):
    at = run_page()
    at.button(key=f"test:{ep.DEFAULT_OLLAMA_NAME}").click().run()
    assert not at.exception
    assert unescape(at.success[0].value) == "ollama 0.33.0 — 2 models"


def test_pull_with_progress(ollama):
    at = run_page()
    name = ep.DEFAULT_OLLAMA_NAME
    at.text_input(key=f"pull_tag:{name}").input("qwen2.5:7b-instruct-q8_0")
    at.button(key=f"pull_go:{name}").click().run()
    assert not at.exception
    assert unescape(at.success[0].value) == f"Pulled qwen2.5:7b-instruct-q8_0 into {name}."
    assert [r.body["model"] for r in ollama.recorded("/api/pull")] == ["qwen2.5:7b-instruct-q8_0"]
    [models] = model_tables(at)
    assert "qwen2.5:7b-instruct-q8_0" in list(models["model"])  # the probe cache was cleared


def test_pull_bad_tag_and_failure(ollama):
    at = run_page()
    name = ep.DEFAULT_OLLAMA_NAME
    at.text_input(key=f"pull_tag:{name}").input("qwen 2.5; rm -rf /")
    at.button(key=f"pull_go:{name}").click().run()
    assert not at.exception
    assert "not an Ollama model name" in unescape(at.error[0].value)
    assert ollama.recorded("/api/pull") == []  # refused before anything was sent
    at.text_input(key=f"pull_tag:{name}").input("missing-model:7b")
    at.button(key=f"pull_go:{name}").click().run()
    assert not at.exception
    message = unescape(at.error[0].value)
    assert "file does not exist" in message and "\n" not in message


def test_page_inside_the_app(ollama):
    """Through app.py: the page and the sidebar share one probe of the endpoints."""
    app = str(Path(PAGE).parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=30).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Engines"]
    assert status_table(at).loc[ep.DEFAULT_OLLAMA_NAME, "engine"] == "ollama"
    assert len(ollama.recorded("/api/tags")) == 1  # one probe served page and sidebar


def test_hostile_engine_version_is_text_in_the_expander(env):
    version = "<b>x</b> [click](javascript:alert(1)) **bold**"
    with OllamaServer(OllamaScript(version=version)) as server:
        env.setenv(ep.OLLAMA_URL_ENV, server.url)
        env.setenv(ep.VLLM_URL_ENV, "")
        at = run_page()
    assert not at.exception
    label = at.expander[0].label
    assert version in unescape(label)  # shown, as text
    assert "[click](" not in label and "**bold**" not in label  # no markdown left live


def test_two_openai_endpoints_with_one_model_each_do_not_break_the_page(env, vllm):
    """A second served-model section ran after the first had rebound the page's name
    `variants` (the module) to a list: AttributeError, and the Add/Remove controls were
    gone. Two OpenAI-compatible endpoints, one model each, as the sandbox's vLLM and a
    llama.cpp added by hand."""
    llama = OpenAIServer(OpenAIScript(flavor="llama-cpp-python", models=["tiny-qwen2-q4_0"]))
    with llama:
        ep.save_endpoint(
            ep.Endpoint(name="llama box", url=llama.base_url, api="openai"),
            os.environ["SERVESCOPE_DB"],
        )
        at = run_page()
        assert not at.exception, at.exception
        labels = [unescape(x.label) for x in at.expander]
        assert len(labels) == 2 and labels[1].startswith("llama box")
        assert at.selectbox(key=f"variant:{ep.DEFAULT_VLLM_NAME}").options  # still offered
        assert at.text_input(key="add_name").value == ""  # the Add form is drawn


def test_ollama_models_show_size_in_units_that_fit(env):
    """Sizes were 'Size (GB)' with two decimals: a 7 MB model read 0.01 GB. Models as
    Ollama 0.24.0's /api/tags lists them (reference recording)."""
    from tests.scripted.ollama_server import model_entry

    models = [
        model_entry("qwen-coder-0.5b:latest", quant="Q4_K_M", size=491_400_641),
        model_entry("tiny-qwen2-q4:latest", quant="Q4_0", size=7_269_161),
    ]
    with OllamaServer(OllamaScript(models=models)) as server:
        env.setenv(ep.OLLAMA_URL_ENV, server.url)
        at = run_page()
    assert not at.exception
    [table] = model_tables(at)
    rows = table.set_index("model")
    assert rows.loc["qwen-coder-0.5b:latest", ["quantization", "size"]].tolist() == [
        "Q4_K_M", "491 MB",
    ]  # fmt: skip
    assert rows.loc["tiny-qwen2-q4:latest", ["quantization", "size"]].tolist() == [
        "Q4_0", "7.27 MB",
    ]  # fmt: skip


class OfflineOllama(OllamaServer):
    """Replays Ollama 0.24.0's /api/pull on a machine whose registry cannot be reached
    (reference recording qwen-coder-0.5b__api_pull_offline.txt): a 200 stream whose
    second line is the error."""

    REASON = (
        'pull model manifest: Get "https://registry.ollama.ai/v2/library/qwen2.5/manifests/'
        '0.5b": dial tcp: lookup registry.ollama.ai on 127.0.0.53:53: no such host'
    )

    def _pull(self, rec, reply, body):
        reply.start("application/x-ndjson")
        items = [b'{"status":"pulling manifest"}\n', json.dumps({"error": self.REASON}).encode()]
        return self.stream(reply, rec, items, [0.0, 0.0], [0, 0], reply.end)


def test_pull_without_the_registry_says_what_to_do(env):
    """The pull showed Go's raw DNS error and nothing about what to do."""
    with OfflineOllama(OllamaScript()) as server:
        env.setenv(ep.OLLAMA_URL_ENV, server.url)
        at = run_page()
        name = ep.DEFAULT_OLLAMA_NAME
        at.text_input(key=f"pull_tag:{name}").input("qwen2.5:0.5b")
        at.button(key=f"pull_go:{name}").click().run()
    assert not at.exception
    [error] = at.error
    message = unescape(error.value)
    assert message.startswith(
        "Pull failed: the Ollama server cannot reach its registry (registry.ollama.ai) from "
        "this machine: pull on a machine with internet access, or copy the model in."
    )
    assert message.endswith(OfflineOllama.REASON) and "\n" not in message
    assert not at.success  # nothing claims the model arrived


@pytest.fixture
def sandbox_engine(env):
    """The sandbox's vLLM, at a port where nothing answers (the probe fails fast)."""
    import sandbox

    url = f"http://127.0.0.1:{free_port()}/v1"
    env.delenv("SERVESCOPE_SANDBOX")
    env.setattr(
        sandbox, "status", lambda: {"engines": [{"name": "vllm", "kind": "vllm", "base_url": url}]}
    )
    return url


def test_adding_an_endpoint_at_the_sandbox_url_is_refused(sandbox_engine):
    """The saved entry silently hid the sandbox's, and the page said 'Added'."""
    at = run_page()
    here = sandbox_engine.removesuffix("/v1").replace("127.0.0.1", "localhost")
    fill_add_form(at, "my vllm", here)
    assert not at.exception
    assert not at.success
    [error] = at.error[-1:]
    assert unescape(error.value) == (
        f"{here} is already listed as 'sandbox: vllm' ({sandbox_engine}); use that entry,"
        " or give another URL."
    )
    assert saved_rows(os.environ["SERVESCOPE_DB"]) == []
    assert [unescape(x.label).split(" — ")[0] for x in at.expander] == ["sandbox: vllm"]


def test_an_old_saved_entry_hiding_the_sandbox_is_named(sandbox_engine):
    with store.opened(os.environ["SERVESCOPE_DB"]) as conn:
        store.save_endpoint(conn, "old vllm", sandbox_engine, "openai", None)
    at = run_page()
    assert not at.exception
    assert any(
        unescape(w.value).startswith("'old vllm' (")
        and "hides 'sandbox: vllm'" in unescape(w.value)
        for w in at.warning
    ), [w.value for w in at.warning]
