"""sandbox.ollama_register against the scripted Ollama server: blobs, create, errors.

The scripted server keeps what it was sent (the blob bytes, each request's JSON), so the
tests compare that with the files on disk rather than trusting the client's view.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from sandbox.errors import SandboxError
from sandbox.ollama_register import CHATML_TEMPLATE, ollama_on_path, register
from tests.scripted import OllamaScript, OllamaServer

CODER = "qwen2.5-coder-0.5b-q4_k_m-to-q8_0"
TINY = "tiny-qwen2-q4_0"
STOP = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def server() -> Iterator[OllamaServer]:
    with OllamaServer() as srv:
        yield srv


@pytest.fixture
def srv(server: OllamaServer) -> OllamaServer:
    server.script = OllamaScript(ttft_ms=0, gap_ms=0)
    server.requests.clear()
    return server


def fake_gguf(path: Path, seed: str) -> Path:
    """GGUF magic, version 3, then bytes that are not valid UTF-8 (0x80-0xff included),
    so a server that kept a text copy of the body would get the digest wrong."""
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64 + seed.encode())
    return path


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ggufs(tmp_path: Path) -> dict[str, Path]:
    return {
        CODER: fake_gguf(tmp_path / f"{CODER}.gguf", CODER),
        TINY: fake_gguf(tmp_path / f"{TINY}.gguf", TINY),
    }


class Lines:
    """Collects report(phase, line) calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, phase: str, line: str) -> None:
        self.seen.append((phase, line))


def blob_requests(srv: OllamaServer, method: str) -> list[str]:
    return [r.path for r in srv.requests if r.method == method and r.path.startswith("/api/blobs/")]


def test_register_uploads_blobs_and_creates_models(srv: OllamaServer, ggufs: dict[str, Path]):
    report = Lines()
    tags = register(ggufs, srv.url, report)

    assert tags == [f"{CODER}:sandbox", f"{TINY}:sandbox"]
    # The server holds exactly the bytes of each file, under its true digest.
    digests = {alias: digest_of(path) for alias, path in ggufs.items()}
    assert srv.script.blobs == {digests[a]: p.read_bytes() for a, p in ggufs.items()}
    wanted = [f"/api/blobs/{digests[CODER]}", f"/api/blobs/{digests[TINY]}"]
    assert blob_requests(srv, "HEAD") == wanted  # asked first, both absent
    assert blob_requests(srv, "POST") == wanted
    sizes = {f"/api/blobs/{digests[a]}": str(p.stat().st_size) for a, p in ggufs.items()}
    uploads = [r for r in srv.requests if r.method == "POST" and r.path in sizes]
    assert [r.headers["content-length"] for r in uploads] == [sizes[p] for p in wanted]

    creates = [r.body for r in srv.recorded("/api/create")]
    assert creates == [
        {
            "model": f"{alias}:sandbox",
            "files": {f"{alias}.gguf": digests[alias]},
            "template": CHATML_TEMPLATE,
            "parameters": {"stop": STOP},
            "stream": False,
        }
        for alias in (CODER, TINY)
    ]
    assert ("models", f"ollama: registered {CODER}:sandbox") in report.seen
    assert ("models", f"ollama: registered {TINY}:sandbox") in report.seen
    assert sum("uploading" in line for _, line in report.seen) == 2

    # The new models are listed and shown with the template and stop words.
    listed = httpx.get(f"{srv.url}/api/tags").json()["models"]
    assert {f"{CODER}:sandbox", f"{TINY}:sandbox"} <= {m["name"] for m in listed}
    shown = httpx.post(f"{srv.url}/api/show", json={"model": f"{TINY}:sandbox"}).json()
    assert shown["template"] == CHATML_TEMPLATE
    assert shown["parameters"].splitlines() == [
        f'{"stop":<30} "<|im_start|>"',
        f'{"stop":<30} "<|im_end|>"',
    ]


def test_a_registered_model_answers_a_chat(srv: OllamaServer, ggufs: dict[str, Path]):
    register(ggufs, srv.url, Lines())
    client = ollama.Client(host=srv.url, timeout=5)
    chunks = list(
        client.chat(
            model=f"{CODER}:sandbox",
            messages=[{"role": "user", "content": "hi"}],
            options={"num_predict": 3},
            stream=True,
        )
    )
    assert chunks[-1].done
    assert chunks[-1].eval_count == 3
    assert "".join(c.message.content or "" for c in chunks) == "안녕 token"


def test_chatml_template_renders_every_turn_once():
    # Go's text/template is not available here; check the shape instead: one range over
    # .Messages (Ollama keeps system messages in it, so printing .System would repeat
    # the system turn), each turn wrapped in ChatML markers, then the generation prompt.
    assert CHATML_TEMPLATE.count("{{- range .Messages }}") == 1
    assert ".System" not in CHATML_TEMPLATE
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in CHATML_TEMPLATE
    assert CHATML_TEMPLATE.endswith("{{ end }}<|im_start|>assistant\n")


def test_a_second_register_uploads_nothing(srv: OllamaServer, ggufs: dict[str, Path]):
    register(ggufs, srv.url, Lines())
    srv.requests.clear()
    report = Lines()

    tags = register(ggufs, srv.url, report)

    assert tags == [f"{CODER}:sandbox", f"{TINY}:sandbox"]
    assert len(blob_requests(srv, "HEAD")) == 2
    assert blob_requests(srv, "POST") == []
    assert len(srv.recorded("/api/create")) == 2  # create again: same content, same tag
    assert not any("uploading" in line for _, line in report.seen)
    assert sum("already on the server" in line for _, line in report.seen) == 2
    names = [m["name"] for m in srv.script.models]
    assert names.count(f"{CODER}:sandbox") == names.count(f"{TINY}:sandbox") == 1


def test_an_unreachable_server_is_one_line(ggufs: dict[str, Path]):
    with socket.socket() as s:  # a port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    with pytest.raises(SandboxError) as caught:
        register(ggufs, url, Lines(), timeout_s=5)

    message = caught.value.message
    assert message == (
        f"ollama: could not register {CODER}:sandbox from {CODER}.gguf: "
        f"cannot reach the Ollama server at {url}"
    )
    assert "\n" not in caught.value.line()
    assert "Traceback" not in caught.value.line()


def test_a_create_error_names_the_model(srv: OllamaServer, tmp_path: Path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")

    with pytest.raises(SandboxError) as caught:
        register({TINY: bad}, srv.url, Lines())

    assert caught.value.message == (
        f"ollama: could not register {TINY}:sandbox from broken.gguf: invalid file magic (HTTP 500)"
    )
    assert f"{TINY}:sandbox" not in [m["name"] for m in srv.script.models]


def test_a_missing_file_names_the_model(srv: OllamaServer, tmp_path: Path):
    with pytest.raises(SandboxError) as caught:
        register({TINY: tmp_path / "gone.gguf"}, srv.url, Lines())
    assert caught.value.message.startswith(
        f"ollama: could not register {TINY}:sandbox from gone.gguf: [Errno 2]"
    )
    assert srv.requests == []


def test_a_bad_alias_is_refused_before_any_request(srv: OllamaServer, tmp_path: Path):
    path = fake_gguf(tmp_path / "x.gguf", "x")
    with pytest.raises(SandboxError, match="not a valid Ollama model name"):
        register({"bad alias; rm -rf /": path}, srv.url, Lines())
    assert srv.requests == []


def test_a_url_without_a_scheme_is_refused(tmp_path: Path):
    path = fake_gguf(tmp_path / "x.gguf", "x")
    with pytest.raises(SandboxError, match="must start with http"):
        register({TINY: path}, "127.0.0.1:11434", Lines())


# -- the scripted server's create flow, as Ollama answers it ------------------------


def test_blob_routes_check_the_digest(srv: OllamaServer, tmp_path: Path):
    data = fake_gguf(tmp_path / "a.gguf", "a").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    other = "sha256:" + "0" * 64
    with httpx.Client(base_url=srv.url) as http:  # one connection: HEAD sends no body
        assert http.head(f"/api/blobs/{digest}").status_code == 404
        wrong = http.post(f"/api/blobs/{other}", content=data)
        assert wrong.status_code == 400
        assert wrong.json() == {"error": f'digest mismatch, expected "{other}", got "{digest}"'}
        assert http.post(f"/api/blobs/{digest}", content=data).status_code == 201
        assert http.head(f"/api/blobs/{digest}").status_code == 200
        assert http.post(f"/api/blobs/{digest}", content=data).status_code == 200
        assert http.head("/api/blobs/sha256:xyz").status_code == 400
    assert srv.script.blobs == {digest: data}


def test_create_refuses_a_missing_blob_and_streams_progress(srv: OllamaServer, tmp_path: Path):
    data = fake_gguf(tmp_path / "a.gguf", "a").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    body = {"model": "m:sandbox", "files": {"a.gguf": digest}, "template": CHATML_TEMPLATE}
    with httpx.Client(base_url=srv.url) as http:
        missing = http.post("/api/create", json=body | {"stream": False})
        assert missing.status_code == 400
        assert missing.json()["error"].startswith(f"blob not found for a.gguf (digest {digest})")
        assert "m:sandbox" not in [m["name"] for m in srv.script.models]

        http.post(f"/api/blobs/{digest}", content=data)
        streamed = http.post("/api/create", json=body)  # stream defaults to true
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(x) for x in streamed.text.splitlines()]
        assert lines[0] == {"status": "parsing GGUF"}
        assert {"status": f"using existing layer {digest}"} in lines
        assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]
        assert "m:sandbox" in [m["name"] for m in http.get("/api/tags").json()["models"]]


def test_ollama_on_path_finds_an_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    assert ollama_on_path() is None

    exe = bin_dir / "ollama"
    exe.write_text("#!/bin/sh\nexit 0\n")
    assert ollama_on_path() is None  # present but not executable
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert ollama_on_path() == str(exe)
    assert os.access(exe, os.X_OK)
