"""The sandbox command's own contract: bad input, failures, ensure, down.

Each test runs ``python -m sandbox`` with its own ``SERVESCOPE_SANDBOX_HOME`` (a temporary
directory whose venvs and models link to the real, installed ones), so it never touches
the engines the other integration tests use.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.integration.conftest import run_sandbox, sandbox_home, sandbox_status

pytestmark = [pytest.mark.engines, pytest.mark.timeout(1800)]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SERVESCOPE_SANDBOX_HOME"] = str(home)
    env.pop("SERVESCOPE_SANDBOX", None)
    env.pop("SERVESCOPE_SANDBOX_ENGINES", None)
    env["SERVESCOPE_SANDBOX_MODEL"] = "tiny"  # seconds to start; the real model is tested apart
    env.update(extra)
    return env


@pytest.fixture
def home(tmp_path: Path, engines) -> Path:
    """A sandbox home sharing the real venvs and models (installed by ``engines``)."""
    path = tmp_path / "home"
    (path / "venvs").mkdir(parents=True)
    real = sandbox_home()
    for name in ("vllm", "llama"):
        (path / "venvs" / name).symlink_to(real / "venvs" / name)
    (path / "models").symlink_to(real / "models")
    return path


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in raw:
            found.append(int(entry))
    return found


def _assert_one_error_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sandbox: error:"), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _assert_nothing_left(home: Path) -> None:
    assert sandbox_status(_env(home)) == {"engines": []}
    assert _processes_mentioning(str(home)) == []


def test_missing_model_path_fails_before_anything_starts(tmp_path):
    home = tmp_path / "home"
    result = run_sandbox("up", "--model-path", str(tmp_path / "nope"), env=_env(home))
    assert result.returncode == 2
    _assert_one_error_line(result.stderr, "does not exist", str(tmp_path / "nope"))
    assert not (home / "venvs").exists() or not any((home / "venvs").iterdir())
    _assert_nothing_left(home)


def test_port_in_use_is_refused(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_sandbox("up", "--engines", "llama", "--llama-port", str(port), env=_env(home))
    assert result.returncode == 2
    _assert_one_error_line(result.stderr, f"port {port}", "in use")
    _assert_nothing_left(home)


def test_engine_that_exits_during_start_up_is_reported_with_its_log(home, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken-q4_0.gguf").write_bytes(b"this is not a GGUF file")
    result = run_sandbox(
        "up", "--engines", "llama", "--model-path", str(broken), env=_env(home), timeout=120
    )
    assert result.returncode == 2
    log = home / "logs" / "llama.log"
    _assert_one_error_line(result.stderr, "exited during start-up", str(log))
    assert "broken-q4_0.gguf" in log.read_text(encoding="utf-8")
    _assert_nothing_left(home)
    progress = json.loads((home / "progress.json").read_text(encoding="utf-8"))
    assert progress["phase"] == "failed" and progress["log"] == str(log)


def test_failed_install_names_its_log(tmp_path, engines):
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(sandbox_home() / "models")  # only the venv is missing
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    env = _env(home, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    result = run_sandbox("up", "--engines", "llama", env=env, timeout=300)
    assert result.returncode == 2
    log = home / "logs" / "install-llama.log"
    _assert_one_error_line(result.stderr, "llama-cpp-python", str(log))
    assert "No matching distribution" in log.read_text(encoding="utf-8")
    assert not (home / "venvs" / "llama" / ".servescope-stamp.json").exists()
    _assert_nothing_left(home)


def test_ensure_does_nothing_when_switched_off(tmp_path):
    home = tmp_path / "home"
    result = run_sandbox("ensure", "--background", env=_env(home, SERVESCOPE_SANDBOX="off"))
    assert result.returncode == 0
    assert "SERVESCOPE_SANDBOX=off" in result.stdout
    assert not (home / "progress.json").exists()


def test_ensure_does_nothing_when_an_engine_answers(tmp_path, engines):
    home = tmp_path / "home"
    env = _env(home, SERVESCOPE_VLLM_URL=engines["vllm"]["base_url"])
    result = run_sandbox("ensure", "--background", env=env)
    assert result.returncode == 0
    assert "answers at" in result.stdout
    assert not (home / "progress.json").exists()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_ensure_starts_up_in_the_background_and_down_stops_it(home):
    # `make run PORT=...` exports PORT (and a user's shell may hold HOST or MODEL):
    # llama-cpp-python reads such names from the environment, the sandbox must not.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    env = _env(
        home,
        SERVESCOPE_OLLAMA_URL=_dead_url(),
        SERVESCOPE_VLLM_URL=_dead_url() + "/v1",
        SERVESCOPE_SANDBOX_ENGINES="llama",  # llama.cpp starts in seconds; vLLM is tested above
        PORT=str(taken.getsockname()[1]),
        HOST="0.0.0.0",
        MODEL="/nonexistent.gguf",
    )
    result = run_sandbox("ensure", "--background", env=env)
    assert result.returncode == 0, result.stderr
    assert "background" in result.stdout

    # The background `up` reports through progress.json until it is ready.
    progress: dict = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            progress = json.loads((home / "progress.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            progress = {}
        if progress.get("phase") in ("ready", "failed"):
            break
        time.sleep(0.5)
    log = home / "logs" / "up.log"
    assert progress.get("phase") == "ready", (progress, log.read_text(encoding="utf-8"))
    assert "[ready]" in log.read_text(encoding="utf-8")

    status = sandbox_status(env)["engines"]
    assert [e["name"] for e in status] == ["llama.cpp"]
    assert status[0]["ready"] is True
    pid = status[0]["pid"]

    again = run_sandbox("ensure", "--background", env=env)
    assert "already running" in again.stdout

    assert status[0]["base_url"].startswith("http://127.0.0.1:")

    down = run_sandbox("down", env=env, timeout=120)
    taken.close()
    assert down.returncode == 0, down.stderr
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    _assert_nothing_left(home)


def test_down_with_nothing_running_is_fine(tmp_path):
    result = run_sandbox("down", env=_env(tmp_path / "home"))
    assert result.returncode == 0
    assert "nothing was running" in result.stdout


def test_up_registers_the_gguf_variants_into_a_local_ollama(home, tmp_path):
    """With an `ollama` executable on the PATH and an Ollama server answering, `up` also
    registers every GGUF variant there (blobs, then /api/create with the ChatML template),
    so an Ollama lane serves the same files. The server is the scripted Ollama, the
    executable a stand-in: no real Ollama can be installed here."""
    import subprocess
    import sys

    import httpx

    from tests.integration.conftest import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    fake.chmod(0o755)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted.ollama_server", "--port", "0", "--no-record"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line.startswith("READY "), line
        url = f"http://127.0.0.1:{line.split()[1]}"
        env = _env(
            home,
            PATH=f"{bin_dir}:{os.environ['PATH']}",
            SERVESCOPE_OLLAMA_URL=url,
            SERVESCOPE_VLLM_URL="",
        )
        result = run_sandbox("up", "--engines", "llama", env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        status = sandbox_status(env)
        aliases = status["engines"][0]["models"]
        registered = status["model"]["ollama"]
        assert registered["error"] is None and registered["url"] == url
        assert registered["tags"] == [f"{alias}:sandbox" for alias in aliases]
        listed = {m["name"] for m in httpx.get(f"{url}/api/tags", timeout=10).json()["models"]}
        assert set(registered["tags"]) <= listed
        show = httpx.post(f"{url}/api/show", json={"model": registered["tags"][0]}, timeout=10)
        assert "<|im_start|>" in show.json()["template"]
        assert "ollama: registered" in result.stdout
    finally:
        run_sandbox("down", env=_env(home), timeout=120)
        server.terminate()
        server.wait(10)
    _assert_nothing_left(home)
