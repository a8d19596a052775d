"""A run made with `--workers 2` read in headless Chromium: the Results header names the
load processes and the client check says it read every one of them. The run is made by
the CLI against the scripted engine pair; saves the page's top to /tmp/workers_results.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib.load import worker_count
from tests.browser.engines import OLLAMA_MODEL, VLLM_MODEL
from tests.browser.runs import ROOT
from tests.browser.test_dashboard_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    SETTLED_JS,
    dashboard,
    engines,
)

pytestmark = pytest.mark.browser

SHOT = Path("/tmp/workers_results.png")
PAGE_TEXT_JS = "() => document.body.innerText"


def _workers_run(urls: dict[str, str], db: Path, out: Path, workers: int) -> str:
    command = [sys.executable, "-m", "lib.cli", "run", "--quiet", "--workers", str(workers)]
    command += ["--lane", "ollama", urls["ollama"], OLLAMA_MODEL]
    command += ["--lane", "openai", urls["vllm"], VLLM_MODEL]
    command += ["--prompt", "인공지능 기술에 관한 짧은 뉴스 기사를 써 주세요."]
    command += ["--concurrency", "1,4"]
    command += ["--requests", "8", "--max-tokens", "8", "--label", "two load processes"]
    command += ["--db", str(db), "--output-json", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=180)
    return json.loads(out.read_text())["run_id"]


def test_a_workers_run_says_how_many_load_processes_sent_it(dashboard, engines, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    workers = min(2, worker_count.cores())  # a one-core machine runs one
    run_id = _workers_run(engines, tmp_path / "store.db", tmp_path / "run.json", workers)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(f"{dashboard}/results?run={run_id}")
            expect(page.get_by_text("c=4: 8/8 requests · completed").first).to_be_visible()
            page.wait_for_function(SETTLED_JS)
            text = page.evaluate(PAGE_TEXT_JS)
            assert ("2 load processes" in text) == (workers == 2), text[:1500]
            page.screenshot(path=str(SHOT))
        finally:
            browser.close()
