"""The dashboard in a real browser: headless Debian Chromium at 1600×900 via Playwright.

Starts the scripted engine pair (tests/browser/engines.py: Ollama queueing in one slot,
vLLM batching and drifting to Chinese) and `streamlit run app.py` on free ports with a
store in a temporary folder, sets up two lanes on the Run page, starts a run, watches
the live view advance, opens the results, and saves screenshots to artifacts/ (look at
them: they are what a team pastes into a retro). Waits are on conditions, never sleeps.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.engines import OLLAMA_MODEL, VLLM_MODEL

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 900}
# Sum of "c=N: done/total requests" over every progress bar on the page.
PROGRESS_JS = """() => {
  let done = 0;
  for (const m of document.body.innerText.matchAll(/c=\\d+: (\\d+)\\/(\\d+) requests/g)) {
    done += Number(m[1]);
  }
  return done;
}"""


# Metric labels and values whose text does not fit their box (drawn with an ellipsis).
# Counts, every 20 ms until the page is left, the run headers on screen (the line with
# the outcome badge and "run <id>"); the most seen at once is window.__mostHeaders.
# (Charts are not counted: Streamlit 1.67 keeps a fragment's charts, faded, beside their
# redrawn copies for the 0.1-0.3 s of each fragment rerun; that is its own rendering.)
WATCH_HEADERS_JS = """() => {
  window.__mostHeaders = 0;
  setInterval(() => {
    let n = 0;
    for (const badge of document.querySelectorAll('[data-testid="stMain"] .stMarkdownBadge')) {
      const line = badge.closest('p');
      if (line && / · run \\S+ · /.test(line.textContent)) n += 1;
    }
    window.__mostHeaders = Math.max(window.__mostHeaders, n);
  }, 20);
}"""

CUT_OFF_JS = """() => {
  const els = [...document.querySelectorAll(
    '[data-testid="stMetricValue"] div, [data-testid="stMetricLabel"] p')];
  return {checked: els.length,
          cut: els.filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.innerText)};
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its own handle."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def engines() -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.engines", "--ttft-ms", "120", "--gap-ms", "25"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""  # blocks until READY or exit
        found = re.match(r"READY ollama=(\d+) vllm=(\d+)", line)
        assert found, f"scripted engines did not start: {line!r}"
        yield {
            "ollama": f"http://127.0.0.1:{found.group(1)}",
            "vllm": f"http://127.0.0.1:{found.group(2)}/v1",
            "pid": str(proc.pid),  # a test may kill the engines mid-run
        }
    finally:
        _stop(proc)  # type: ignore[arg-type]


@pytest.fixture
def dashboard(tmp_path, engines) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "SERVESCOPE_DB": str(tmp_path / "store.db"),
        "SERVESCOPE_OLLAMA_URL": engines["ollama"],
        "SERVESCOPE_VLLM_URL": engines["vllm"],
        "SERVESCOPE_SANDBOX": "off",
    }
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # poll the health endpoint: the condition is "the server answers"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
        assert time.monotonic() < deadline, "streamlit did not come up in 60 s"
        time.sleep(0.25)
    try:
        yield url
    finally:
        _stop(proc)
        log.close()
        from lib.load import jobs  # cancel a run the test may have left behind

        for run in jobs.active_runs(env["SERVESCOPE_DB"]):
            jobs.cancel(run["run_id"], env["SERVESCOPE_DB"])


# The page between two reruns: no element marked stale (faded), the six run charts drawn
# (telemetry charts follow them when the engines report any).
SETTLED_JS = """() => document.querySelectorAll('[data-stale="true"]').length === 0
  && document.querySelectorAll('.js-plotly-plot').length >= 6"""
FRESH_JS = """() => document.querySelectorAll('[data-stale="true"]').length === 0"""
SIX_CHARTS_JS = "() => document.querySelectorAll('.js-plotly-plot').length >= 6"


def _start_run(page, label: str) -> None:
    """Five requests per level of 48 tokens, the label, Start run; waits for the header."""
    from playwright.sync_api import expect

    _set_number(page, "Requests per level", "5")
    _set_number(page, "Max tokens", "48")
    field = page.get_by_label("Label")
    field.fill(label)
    field.press("Enter")
    expect(page.get_by_label("Max tokens", exact=True)).to_have_value("48")
    expect(page.get_by_label("Requests per level", exact=True)).to_have_value("5")
    page.get_by_role("button", name="Start run").click()
    expect(page.get_by_text("running", exact=True).first).to_be_visible()


def _set_number(page, label: str, value: str) -> None:
    """Type into a number input and commit it with Enter, typing again if a rerun of the
    page (a previous input's commit) redrew the field and dropped the typing: seen once
    on a loaded machine, Max tokens kept 128 after "48" was typed."""
    box = page.get_by_label(label, exact=True)
    for _ in range(3):
        box.fill(value)
        box.press("Enter")
        page.wait_for_function(FRESH_JS)  # the rerun the commit started is drawn
        if box.input_value() == value:
            return
    assert box.input_value() == value, f"{label}: {box.input_value()} after typing {value}"


def _settled_shot(page, path: Path) -> None:
    """A screenshot of a settled page: a live view redraws every second."""
    page.wait_for_function(SETTLED_JS)
    page.screenshot(path=str(path))


def _full_height_shot(page, path: Path, height: int) -> None:
    """Streamlit scrolls inside its own container: a taller viewport shows it all."""
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    _settled_shot(page, path)
    page.set_viewport_size(VIEWPORT)


def test_run_live_and_results_in_chromium(dashboard):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    # Two shared cores: a rerun can take seconds under load; every wait is a condition.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(30_000)
            page.goto(dashboard)

            # Two lanes, one per engine, each with its model and what is known of it.
            expect(page.get_by_text("Lane 2: endpoint")).to_be_visible()
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_text("Ollama 0.9.0 · 2 models")).to_be_visible()
            expect(sidebar.get_by_text("vLLM 0.9.1 · 1 model")).to_be_visible()
            models = page.get_by_role("combobox", name="Model")
            # Each option names the model, then its quantization and size.
            expect(models.nth(0)).to_have_value(f"{OLLAMA_MODEL} · Q4_K_M · 4.68 GB")
            expect(models.nth(1)).to_have_value(re.compile("^" + re.escape(VLLM_MODEL)))
            expect(page.get_by_text("Q4_K_M · 7.6B params · 4.68 GB")).to_be_visible()
            _start_run(page, "Ollama Q4_K_M vs vLLM AWQ, 5 at once")

            # Live: the run's header, then progress that grows between two reads.
            page.wait_for_function(f"({PROGRESS_JS})() >= 3")
            first = page.evaluate(PROGRESS_JS)
            page.wait_for_function(f"({PROGRESS_JS})() > {first}")
            assert "?run=" in page.url  # the run id is in the URL: a reload re-attaches
            # Both lanes under way (Ollama done, vLLM going) for the live screenshot.
            page.wait_for_function(f"({PROGRESS_JS})() >= 13")
            page.wait_for_function(SIX_CHARTS_JS)
            expect(page.get_by_text("E2E latency of each request over time").first).to_be_visible()
            _settled_shot(page, ARTIFACTS / "run_live.png")

            # The end: one rerun drops the timers; the bars give way to a summary line, in
            # place: never the old and the new header at once, not even for a frame.
            page.evaluate(WATCH_HEADERS_JS)
            header = page.locator("p", has_text=re.compile(r" · run \S+ · "))
            expect(header.get_by_text("completed", exact=True)).to_be_visible(timeout=90_000)
            # .first: both lanes' tiles list their c=5 level.
            expect(page.get_by_text("c=5: 5/5 requests · completed").first).to_be_visible()
            page.wait_for_function(SIX_CHARTS_JS)
            assert page.evaluate("() => window.__mostHeaders") == 1
            _settled_shot(page, ARTIFACTS / "run_done.png")

            # Results: charts, the table with units, quality, answers as text.
            # The run's end reruns the page once: click the link of the settled page.
            results_link = page.get_by_text("Full results")
            expect(results_link).to_have_count(1)
            results_link.click()
            page.wait_for_url(re.compile(r"/results\?run="))
            expect(page.get_by_text("Summary per lane and concurrency")).to_be_visible()
            assert "/results?run=" in page.url
            expect(sidebar.get_by_text("Ollama 0.9.0 · 2 models")).to_be_visible()  # kept
            expect(page.get_by_text("Output throughput (tok/s)").first).to_be_visible()
            expect(page.get_by_text(re.compile(r"^\d+/\d+ drifted to Chinese$"))).to_be_visible()
            expect(page.get_by_text("Answers side by side")).to_be_visible()
            page.wait_for_function(SIX_CHARTS_JS)
            _settled_shot(page, ARTIFACTS / "results.png")
            _full_height_shot(page, ARTIFACTS / "results_full.png", 4200)

            # Downloads are built on click: the offline report and the retro card.
            with page.expect_download() as got:
                page.get_by_role("button", name="HTML report").click()
            html = Path(got.value.path()).read_text(encoding="utf-8")
            assert html.lstrip().lower().startswith("<!doctype html") and "<script src=" not in html
            with page.expect_download(timeout=90_000) as got:  # render: 2 tries of 30 s at most
                page.get_by_role("button", name="Retro card (PNG)").click()
            card = Path(got.value.path()).read_bytes()
            assert card[:8] == b"\x89PNG\r\n\x1a\n"
            (ARTIFACTS / "card.png").write_bytes(card)

            # A reload of the results URL opens the same run.
            page.reload()
            expect(page.get_by_text("Summary per lane and concurrency")).to_be_visible()
        finally:
            browser.close()
    for name in ("run_live.png", "run_done.png", "results.png", "results_full.png"):
        assert (ARTIFACTS / name).stat().st_size > 20_000, name


def test_deep_link_is_the_first_visit(dashboard):
    """A shared `/results?run=...` link opened on a fresh server gets the whole app.

    Streamlit treats a `pages/` folder as a legacy multipage app on a first visit to
    a sub-path, before app.py's st.navigation has run (streamlit#9624, #10276): no
    sidebar, raw file names. The pages live in app_pages/ for that reason.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{dashboard}/results?run=no-such-run")
            sidebar = page.get_by_test_id("stSidebar")
            # app.py's frame: its navigation labels and the endpoint status block.
            expect(sidebar.get_by_text("Engines", exact=True).first).to_be_visible()
            expect(sidebar.get_by_text("Ollama 0.9.0 · 2 models")).to_be_visible()
            expect(page.get_by_text("no-such-run")).to_be_visible()
            assert not page.get_by_text("Page not found").is_visible()
        finally:
            browser.close()


def test_a_run_whose_engines_die_reads_as_failed_with_its_reason(dashboard, engines):
    """The engines are killed mid-run: the run goes on to its end, every later request
    fails at once ("cannot connect"), and the page says so in red/orange with the
    reason, in the header, in the lane tiles and on the History page; no green badge."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(30_000)
            page.goto(dashboard)
            expect(page.get_by_text("Lane 2: endpoint")).to_be_visible()
            # Three lanes: the third on Ollama's next model, the widest tile layout.
            page.get_by_role("button", name="Add lane").click()
            expect(page.get_by_text("Lane 3: endpoint")).to_be_visible()
            _start_run(page, "engines killed mid-run")
            page.wait_for_function(f"({PROGRESS_JS})() >= 2")
            _stop_pid(int(engines["pid"]))

            # The end: the header's badge and the reason, never "completed" alone.
            troubled = re.compile(r"^(completed with failures|failed)$")
            expect(page.get_by_text(troubled).first).to_be_visible(timeout=90_000)
            expect(
                page.get_by_text(re.compile("Some requests failed|The run failed")).first
            ).to_be_visible()
            expect(
                page.get_by_text(
                    re.compile(r"failed: .*(cannot connect|Errno 111|connection lost)")
                ).first
            ).to_be_visible()
            assert not page.get_by_text("completed", exact=True).count()
            page.wait_for_function(SETTLED_JS)
            expect(page.get_by_test_id("stMetricValue")).to_have_count(12)  # 4 per lane
            fit = page.evaluate(CUT_OFF_JS)
            assert fit["checked"] >= 24 and fit["cut"] == [], fit  # labels and values fit
            _settled_shot(page, ARTIFACTS / "run_dead_engine.png")

            page.goto(f"{dashboard}/history")
            expect(page.get_by_text("Runs", exact=True).first).to_be_visible()
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid).to_be_visible()
            picker = page.get_by_text(
                re.compile(r"engines killed mid-run · (completed with failures|failed)")
            )
            page.get_by_role("combobox", name="Runs").click()
            expect(picker.first).to_be_visible()
        finally:
            browser.close()


def _stop_pid(pid: int) -> None:
    import signal

    os.kill(pid, signal.SIGTERM)
