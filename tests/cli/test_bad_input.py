"""Bad input everywhere: CLI flags, the store path, prompt files, the Run and Engines pages.

Issue item 3: invalid URLs, unknown or malformed model names, empty, huge or non-UTF-8
prompt files, absurd concurrency or token counts (bounded, the bound stated), a store
that cannot be opened: a clear one-line message, exit 2 for the CLI, never a traceback,
and nothing sent to the engine or half-written to the store. Complements test_cli.py
(flag bounds, unknown model, unreachable engine), test_workloads.py (file parsing) and
test_app_run.py / test_app_engines.py (the pages' common mistakes).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import cli, store
from lib import endpoints as ep
from lib.analysis import results
from lib.core import records
from lib.load import workloads
from tests.app.test_app_engines import fill_add_form, saved_rows, unescape
from tests.conftest import Scripted
from tests.scripted import OpenAIServer
from tests.scripted.ollama_server import model_entry

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
ENGINES_PAGE = str(ROOT / "app_pages" / "engines.py")
CHAT = "/v1/chat/completions"


@pytest.fixture
def vllm(scripted: Scripted) -> OpenAIServer:
    return scripted.openai(ttft_ms=2, gap_ms=1, models=["m"])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    """A user-facing refusal: one line on stderr, naming what is wrong, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("servescope: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def run_count(db: Path) -> int:
    if not db.is_file():
        return 0
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def single_lane(server: OpenAIServer, *extra: str) -> list[str]:
    argv = ["run", "--engine", "openai", "--base-url", server.base_url, "--model", "m"]
    argv += ["--requests", "1", "--warmup", "0", "--max-tokens", "2", "--quiet"]
    return argv + list(extra)


# --- the store ---------------------------------------------------------------------------


def store_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """--db values that cannot be opened, each with a fragment of its reason."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a folder")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database, just bytes" * 100)
    newer = tmp_path / "newer.db"
    raw = sqlite3.connect(newer)
    raw.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 7}")
    raw.close()
    return {
        "folder": (folder, "it is a folder"),
        "under a file": (a_file / "s.db", "cannot open the store"),
        "unmakeable parent": (Path("/proc/servescope-nope/s.db"), "cannot open the store"),
        "not a database": (garbage, "not a database"),
        "newer schema": (newer, "newer than this servescope"),
    }


@pytest.mark.parametrize(
    "case", ["folder", "under a file", "unmakeable parent", "not a database", "newer schema"]
)
def test_a_store_that_cannot_be_opened_is_one_line_exit_2(tmp_path, capsys, vllm, case):
    db, reason = store_paths(tmp_path)[case]
    code, _, err = run_cli(capsys, *single_lane(vllm, "--prompt", "hi", "--db", str(db)))
    assert code == 2
    assert_one_line_error(err, "cannot open the store", reason)
    assert vllm.recorded(CHAT) == []  # refused before a single request was sent
    for command in (["list"], ["show", "some-run"]):
        code, _, err = run_cli(capsys, *command, "--db", str(db))
        assert code == 2
        assert_one_line_error(err, "cannot open the store")


def test_the_real_entry_point_gives_one_line_for_a_folder_as_db(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lib.cli", "list", "--db", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "cannot open the store", "it is a folder")


@pytest.mark.parametrize(
    ("module", "argv", "name", "reason"),
    [
        ("lib.cli", ["run", "--bogus"], "servescope", "unrecognized arguments: --bogus"),
        ("lib.cli", [], "servescope", "the following arguments are required: command"),
        ("sandbox", ["up", "--bogus"], "sandbox", "unrecognized arguments: --bogus"),
        ("sandbox", [], "sandbox", "the following arguments are required: command"),
        ("sandbox", ["up", "--engines", "foo"], "sandbox", "argument --engines: choose from"),
    ],
)
def test_both_command_lines_give_bad_arguments_the_same_one_line(module, argv, name, reason):
    """`python -m lib.cli` and `python -m sandbox` share one shape for bad arguments:
    `<name>: error: <reason> (see python -m <module> ... --help)`, exit 2, no usage dump."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{name}: error: {reason}")
    assert lines[0].endswith("--help)") and f"(see python -m {module}" in lines[0]


def test_an_unexpected_error_is_one_line_exit_1_unless_debugging(
    tmp_path, capsys, monkeypatch, vllm
):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line of the message")

    monkeypatch.setattr(results, "run_document", broken)
    argv = single_lane(vllm, "--prompt", "hi", "--db", str(tmp_path / "s.db"))
    monkeypatch.delenv("SERVESCOPE_DEBUG", raising=False)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert (
        err.strip() == "servescope: failed: RuntimeError: disk on fire second line of the message"
    )
    # The run itself finished and is kept: the failure was only in reporting it.
    with store.opened(tmp_path / "s.db") as conn:
        (run,) = store.list_runs(conn)
        assert run["status"] == "completed"
    monkeypatch.setenv("SERVESCOPE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(argv)


def test_output_json_that_is_a_folder_is_refused_before_the_run(tmp_path, capsys, vllm):
    db = tmp_path / "s.db"
    argv = single_lane(vllm, "--prompt", "hi", "--db", str(db), "--output-json", str(tmp_path))
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "--output-json", "is a folder")
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


# --- URLs and model names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "spaces"),
        ("localhost:8000", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999/v1", "port"),
        ("http://127.0.0.1:8000/v1?key=x", "query"),
        ("http://127.0.0.1:8000/v1\n--model evil", "spaces or control characters"),
        ("http://127.0.0.1:" + "9" * 3000, "spaces or control characters"),  # over 2048
    ],
)
def test_invalid_urls_exit_2_before_connecting(tmp_path, capsys, url, fragment):
    db = tmp_path / "s.db"
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", url, "--model", "m", "--prompt", "hi",
        "--db", str(db),
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, fragment)
    assert run_count(db) == 0


def test_a_url_with_a_password_is_refused_without_repeating_it(tmp_path, capsys, vllm):
    db = tmp_path / "s.db"
    url = vllm.base_url.replace("http://", "http://user:s3cret-pw@")
    code, _, err = run_cli(
        capsys, "run", "--lane", "openai", url, "m", "--prompt", "hi", "--db", str(db)
    )
    assert code == 2
    assert_one_line_error(err, "user:password@")
    assert "s3cret-pw" not in err
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("m\nrm -rf /", "is not a model name"),
        ("m\x1b[31m", "is not a model name"),
        ("x" * 600, "at most 512 characters"),
        ("   ", "no model name"),
    ],
)
def test_malformed_model_names_exit_2_before_connecting(tmp_path, capsys, vllm, model, fragment):
    db = tmp_path / "s.db"
    argv = ["run", "--lane", "openai", vllm.base_url, model, "--prompt", "hi", "--db", str(db)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, fragment)
    assert vllm.requests == [] and run_count(db) == 0  # not even the model list was asked


def test_an_unknown_model_with_shell_characters_is_just_unknown(tmp_path, capsys, vllm):
    db = tmp_path / "s.db"
    model = "qwen; rm -rf / $(reboot) `id`"
    argv = ["run", "--lane", "openai", vllm.base_url, model, "--prompt", "hi", "--db", str(db)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "not served", "available: m")
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


# --- absurd numbers: bounded, the bound stated -----------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--requests", str(10**9)], f"1..{records.MAX_REQUESTS_PER_LEVEL}"),
        (["--warmup", str(10**6)], f"0..{records.MAX_WARMUP}"),
        (["--warmup", "-1"], f"0..{records.MAX_WARMUP}"),
        (["--max-tokens", str(10**12)], f"1..{records.MAX_OUTPUT_TOKENS}"),
        (["--concurrency", f"1,{10**7}"], f"out of range 1..{records.MAX_CONCURRENCY}"),
        (["--timeout", "1e9"], f"between 0 and {records.MAX_TIMEOUT_S:.0f} seconds"),
        (["--timeout", "nan"], "timeout must be between"),
        (["--timeout", "inf"], "timeout must be between"),
        (["--temperature", "nan"], "temperature must be between 0 and 2"),
        (["--temperature", "50"], "temperature must be between 0 and 2"),
        (["--num-ctx", "0"], "num_ctx must be 1..1048576"),
        (["--num-ctx", str(10**9)], "num_ctx must be 1..1048576"),
        (["--requests", "ten"], "invalid int value"),
    ],
)
def test_absurd_numbers_are_refused_with_the_bound(tmp_path, capsys, vllm, flags, fragment):
    db = tmp_path / "s.db"
    code, _, err = run_cli(capsys, *single_lane(vllm, "--prompt", "hi", "--db", str(db)), *flags)
    assert code == 2
    assert_one_line_error(err, fragment)
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


# --- prompt files --------------------------------------------------------------------------


def prompt_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Prompt files that cannot be used, each with a fragment of its message."""
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:  # sparse: over the limit without writing 21 MB
        f.truncate(workloads.MAX_FILE_BYTES + 1024 * 1024)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("first\nun café, s'il vous plaît\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("안녕하세요\n".encode("utf-16"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\t\n")
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"prompt": "a"}\n{"messages": "not a list"}\n', encoding="utf-8")
    pdf = tmp_path / "slides.pdf"
    pdf.write_bytes(b"%PDF-1.7 ...")
    return {
        "huge": (huge, f"over the {workloads.MAX_FILE_BYTES // 2**20} MB limit"),
        "latin-1": (latin, "line 2: not UTF-8 text (byte 0xe9)"),
        "utf-16": (utf16, "not UTF-8 text"),
        "blank": (blank, "empty, no prompts found"),
        "folder": (folder, "not a regular file"),
        "bad jsonl": (jsonl, "line 2"),
        "pdf": (pdf, "unknown extension '.pdf'"),
    }


@pytest.mark.parametrize(
    "case", ["huge", "latin-1", "utf-16", "blank", "folder", "bad jsonl", "pdf"]
)
def test_unusable_prompt_files_exit_2(tmp_path, capsys, vllm, case):
    path, fragment = prompt_files(tmp_path)[case]
    db = tmp_path / "s.db"
    code, _, err = run_cli(capsys, *single_lane(vllm, "--prompt-file", str(path), "--db", str(db)))
    assert code == 2
    assert_one_line_error(err, path.name, fragment)
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


# --- --config files (what the dashboard hands its run process) ------------------------------


def config_files(tmp_path: Path, url: str) -> dict[str, tuple[Path, str]]:
    lane = {"engine": "openai", "base_url": url, "model": "m"}
    prompt = {"messages": [{"role": "user", "content": "hi"}]}
    bodies = {
        "not json": ("{lanes: [", "cannot read config"),
        "a list": ("[1, 2]", "cannot read config"),
        "no lanes key": (json.dumps({"prompts": [prompt]}), "cannot read config"),
        "levels as text": (
            json.dumps({"lanes": [lane], "prompts": [prompt], "concurrency": "ab"}),
            "must be whole numbers",
        ),
        "messages as text": (
            json.dumps({"lanes": [lane], "prompts": [{"messages": "hi"}]}),
            "prompt 1: messages must be a list",
        ),
        "timeout as text": (
            json.dumps({"lanes": [lane], "prompts": [prompt], "timeout_s": "soon"}),
            "must be numbers",
        ),
    }
    out = {}
    for name, (body, fragment) in bodies.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(body, encoding="utf-8")
        out[name] = (path, fragment)
    out["missing"] = (tmp_path / "missing.json", "cannot read config")
    return out


@pytest.mark.parametrize(
    "case",
    [
        "not json", "a list", "no lanes key", "levels as text", "messages as text",
        "timeout as text", "missing",
    ],
)  # fmt: skip
def test_malformed_config_files_exit_2(tmp_path, capsys, vllm, case):
    path, fragment = config_files(tmp_path, vllm.base_url)[case]
    db = tmp_path / "s.db"
    code, _, err = run_cli(capsys, "run", "--config", str(path), "--db", str(db), "--quiet")
    assert code == 2
    assert_one_line_error(err, fragment)
    assert vllm.recorded(CHAT) == [] and run_count(db) == 0


# --- the Run page --------------------------------------------------------------------------


@pytest.fixture
def app_env(tmp_path, monkeypatch, db, scripted: Scripted) -> Iterator[tuple[Path, OpenAIServer]]:
    """The dashboard against a scripted vLLM whose model list includes a hostile name."""
    vllm = scripted.openai(ttft_ms=2, gap_ms=1, models=["ok-model", "evil\x1b[2J\nname"])
    ollama = scripted.ollama(models=[model_entry("qwen2.5:0.5b")])
    monkeypatch.setenv(ep.OLLAMA_URL_ENV, ollama.url)
    monkeypatch.setenv(ep.VLLM_URL_ENV, vllm.base_url)
    monkeypatch.chdir(tmp_path)  # no secrets.toml of the repo's
    yield db, vllm
    st.cache_data.clear()


def texts(elements) -> list[str]:
    return [unescape(str(e.value)) for e in elements]


def test_run_page_bounds_are_the_stated_ones(app_env):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    bounds = {
        "run_requests": (1, records.MAX_REQUESTS_PER_LEVEL),
        "run_max_tokens": (1, records.MAX_OUTPUT_TOKENS),
        "run_warmup": (0, records.MAX_WARMUP),
        "run_timeout": (1.0, records.MAX_TIMEOUT_S),
        "run_temperature": (0.0, 2.0),
    }
    for key, (low, high) in bounds.items():
        widget = at.number_input(key=key)
        assert (widget.min, widget.max) == (low, high), key
    levels = at.multiselect(key="run_concurrency").options
    assert all(1 <= int(c) <= records.MAX_CONCURRENCY for c in levels)


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.txt", b"", "empty, no prompts found"),
        ("blank.txt", b"\n \n\t\n", "empty, no prompts found"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9)"),
        ("utf16.txt", "안녕\n".encode("utf-16"), "not UTF-8 text"),
        ("bad.jsonl", b'{"prompt": "a"}\n{"prompt": \n', "line 2: not valid JSON"),
        ("bad.csv", b"text\nhello\n", "no 'prompt' column"),
    ],
)
def test_run_page_unusable_uploads_are_messages(app_env, name, data, fragment):
    db, vllm = app_env
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.radio(key="prompt_source").set_value("Upload a file").run()
    at.file_uploader(key="prompt_file").set_value((name, data, "text/plain")).run()
    at.button(key="run_start").click().run()
    assert not at.exception
    errors = texts(at.error)
    assert any(f"Cannot read {name}" in e and fragment in e for e in errors), errors
    assert run_count(db) == 0 and vllm.recorded(CHAT) == []


def test_run_page_huge_upload_is_refused_with_the_bound(app_env):
    db, _ = app_env
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.radio(key="prompt_source").set_value("Upload a file").run()
    huge = b"x" * (workloads.MAX_FILE_BYTES + 1)
    at.file_uploader(key="prompt_file").set_value(("big.txt", huge, "text/plain")).run()
    at.button(key="run_start").click().run()
    assert not at.exception
    limit = f"over the {workloads.MAX_FILE_BYTES // 2**20} MB limit"
    assert any("Cannot read big.txt" in e and limit in e for e in texts(at.error))
    assert run_count(db) == 0


def test_run_page_refuses_a_hostile_model_name_from_the_engine(app_env):
    """An engine may list a model named with control characters: the page shows a
    reason instead of starting a run with it."""
    db, vllm = app_env
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.text_area(key="prompt_text").set_value("hi")
    at.selectbox(key="lane_model_1").set_value("evil\x1b[2J\nname").run()
    at.button(key="run_start").click().run()
    assert not at.exception
    errors = texts(at.error)
    assert any("Cannot start" in e and "is not a model name" in e for e in errors), errors
    assert all("\n" not in e for e in errors)
    assert run_count(db) == 0 and vllm.recorded(CHAT) == []


# --- the Engines page ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url", "fragment"),
    [
        ("gpu", "http://10.0.0.5:8000/v1\nHost: evil", "spaces or control characters"),
        ("gpu", "javascript:alert(1)", "http:// or https://"),
        ("gpu", "http://admin:hunter2@10.0.0.5:8000", "user:password@"),
        ("gpu", "http://10.0.0.5:" + "1" * 3000, "spaces or control characters"),
        ("gpu\x07box", "http://10.0.0.5:8000", "control characters"),
        ("g" * 65, "http://10.0.0.5:8000", "longer than 64"),
    ],
)
def test_engines_page_refuses_bad_endpoints(app_env, name, url, fragment):
    db, _ = app_env
    at = AppTest.from_file(ENGINES_PAGE, default_timeout=30).run()
    fill_add_form(at, name, url)
    assert not at.exception
    errors = texts(at.error)
    assert any(fragment in e for e in errors), errors
    assert not any("hunter2" in e for e in errors)  # a typed password is never repeated
    assert saved_rows(str(db)) == []


@pytest.mark.parametrize(
    "tag",
    ["$(reboot)", "`id`", "qwen2.5\nrm -rf /", "--help", "qwen|nc evil 80", "q" * 400, " "],
)
def test_engines_page_pull_refuses_bad_tags_before_sending(app_env, tag):
    at = AppTest.from_file(ENGINES_PAGE, default_timeout=30).run()
    name = ep.DEFAULT_OLLAMA_NAME
    at.text_input(key=f"pull_tag:{name}").input(tag)
    at.button(key=f"pull_go:{name}").click().run()
    assert not at.exception
    errors = texts(at.error)
    assert any("Model tag is empty" in e or "not an Ollama model name" in e for e in errors)
