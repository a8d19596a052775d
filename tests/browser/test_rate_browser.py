"""The Results page of a finished rate run in headless Chromium: its levels read by their
rate ("2 req/s", "8 req/s") in the lane tiles, the level lines and the level bands of the
charts, and no "c=1"/"c=2" anywhere (a rate level's key only numbers it). The run is made
by the CLI against the scripted engine pair; saves the page's top to /tmp/rate_results.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser.runs import rate_run
from tests.browser.test_dashboard_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    SETTLED_JS,
    dashboard,
    engines,
)

pytestmark = pytest.mark.browser

SHOT = Path("/tmp/rate_results.png")
KEY_LABEL = re.compile(r"\bc=[12]\b")
# Everything the page shows as text, the charts' SVG text (band labels, ticks) included.
PAGE_TEXT_JS = """() => document.body.innerText + "\\n" + Array.from(
  document.querySelectorAll('.js-plotly-plot svg text')).map(t => t.textContent).join("\\n")"""
BANDS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot .annotation-text'))
  .map(t => t.textContent)"""


def test_rate_results_read_by_rate_in_chromium(dashboard, engines, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    run_id = rate_run(engines, tmp_path / "store.db", tmp_path / "run.json", "rates by label")
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(30_000)
            page.goto(f"{dashboard}/results?run={run_id}")
            expect(page.get_by_text("2 req/s: 6/6 requests · completed").first).to_be_visible()
            expect(page.get_by_text("8 req/s: 6/6 requests · completed").first).to_be_visible()
            page.wait_for_function(SETTLED_JS)
            # The timeline's level bands, by rate.
            page.wait_for_function(f"() => ({BANDS_JS})().includes('2 req/s')")
            bands = page.evaluate(BANDS_JS)
            assert "8 req/s" in bands and not [b for b in bands if KEY_LABEL.search(b)], bands
            text = page.evaluate(PAGE_TEXT_JS)
            assert "2 req/s" in text
            found = KEY_LABEL.search(text)
            assert found is None, text[max(found.start() - 80, 0) : found.end() + 80]
            # Each lane's tile shows its latest level's figures: the one at 8 req/s.
            assert len(re.findall(r"· 8 req/s", text)) >= 2, text[:2000]
            page.screenshot(path=str(SHOT))
        finally:
            browser.close()
