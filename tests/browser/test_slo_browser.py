"""The Results page's "Latency targets and capacity" in headless Chromium: a rate run
with a TTFT target, made by the CLI against the scripted engine pair, shows each lane's
capacity; a new TTFT limit typed in changes it at once. Saves /tmp/slo_section.png
(and the page's top, the run's charts by rate, to /tmp/slo_results_top.png).

Ollama (one slot, ~0.3 s a request) keeps up with 2 req/s and queues at 8 req/s;
vLLM (batching) keeps up with both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.runs import rate_run
from tests.browser.test_dashboard_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    dashboard,
    engines,
)

pytestmark = pytest.mark.browser

SHOT = Path("/tmp/slo_section.png")
TOP_SHOT = Path("/tmp/slo_results_top.png")
WITHIN = "for 90% of requests"
# Settled: no element faded for a rerun; the six run charts and the section's three.
SETTLED_JS = """() => document.querySelectorAll('[data-stale="true"]').length === 0
  && document.querySelectorAll('.js-plotly-plot').length >= 9"""


def test_slo_section_in_chromium(dashboard, engines, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    run_id = rate_run(
        engines,
        tmp_path / "store.db",
        tmp_path / "run.json",
        "rates with a TTFT target",
        "--slo-ttft-ms",
        "500",
    )
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(30_000)
            page.goto(f"{dashboard}/results?run={run_id}")
            heading = page.get_by_text("Latency targets and capacity", exact=True)
            expect(heading).to_be_visible()
            ttft = page.get_by_role("spinbutton", name="TTFT limit (ms)")
            expect(ttft).to_have_value("500")
            expect(page.get_by_text(f"2 req/s within TTFT ≤ 500 ms, {WITHIN}")).to_be_visible()
            expect(
                page.get_by_text(f"at least 8 req/s within TTFT ≤ 500 ms, {WITHIN}")
            ).to_be_visible()
            expect(page.get_by_text("Goodput vs request rate")).to_be_visible()
            expect(page.get_by_text("Throughput vs per-user speed")).to_be_visible()
            expect(page.get_by_text("Summary per lane and request rate")).to_be_visible()
            page.wait_for_function(SETTLED_JS)
            page.screenshot(path=str(TOP_SHOT))  # the run's own charts, by rate

            # A stricter limit: recomputed from the stored requests, no run.
            ttft.fill("100")
            ttft.press("Enter")
            missed = page.get_by_text(f"no load measured met TTFT ≤ 100 ms, {WITHIN}")
            expect(missed).to_have_count(2)
            expect(page.get_by_text("2 req/s within TTFT ≤ 500 ms")).to_have_count(0)

            # Back to the run's own target for the screenshot, the section at the top.
            ttft.fill("500")
            ttft.press("Enter")
            expect(page.get_by_text(f"2 req/s within TTFT ≤ 500 ms, {WITHIN}")).to_be_visible()
            page.wait_for_function(SETTLED_JS)
            heading.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(SHOT))
        finally:
            browser.close()
