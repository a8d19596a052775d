"""The matrix from the Run page, in headless Chromium, on the real model: pick two of the
sandbox's llama.cpp variants, start, watch each cell's engine start and stop, then the
Results page's "Variants side by side" with its table, memory rows and charts; and no
engine process left afterwards. Saves /tmp/matrix_run.png and /tmp/matrix_results.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.pypi_models import DEFAULT
from tests.browser.test_dashboard_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    dashboard,
    engines,
)
from tests.integration.conftest import home_env, home_for
from tests.integration_real.test_matrix_real import engine_processes_left

pytestmark = [pytest.mark.engines, pytest.mark.browser, pytest.mark.timeout(900)]

RUN_SHOT = Path("/tmp/matrix_run.png")
RESULTS_SHOT = Path("/tmp/matrix_results.png")


@pytest.fixture(autouse=True)
def real_sandbox_home(
    real_engines: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The dashboard (started after this) reads the real model's variants from the test
    home the real engines run in."""
    for key, value in home_env(home_for(DEFAULT), DEFAULT).items():
        if key.startswith("SERVESCOPE_SANDBOX_"):
            monkeypatch.setenv(key, value)
    yield


def test_a_matrix_started_from_the_run_page(dashboard: str) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(dashboard)
            page.get_by_text("Engines servescope starts (matrix)").click()
            # The first llama.cpp variant is picked; add a second one.
            variants = page.get_by_role("combobox", name="Engine variants")
            variants.click()
            page.get_by_role("option", name="llama.cpp · Q4_0").click()
            page.keyboard.press("Escape")
            expect(page.get_by_text(re.compile(r"^2 cells"))).to_be_visible()
            page.get_by_label("Requests per level", exact=True).fill("4")
            page.get_by_label("Max tokens", exact=True).fill("24")
            field = page.get_by_label("Label")
            field.fill("matrix from the page")
            field.press("Enter")
            expect(page.get_by_label("Max tokens", exact=True)).to_have_value("24")
            page.get_by_role("button", name="Start run").click()
            # Each cell's engine in its tile: started by servescope, then stopped.
            expect(page.get_by_text(re.compile(r"engine ready in [\d.]+ s")).first).to_be_visible()
            page.screenshot(path=str(RUN_SHOT))
            header = page.locator("p", has_text=re.compile(r" · run \S+ · "))
            expect(header.get_by_text("completed", exact=True)).to_be_visible(timeout=300_000)
            expect(page.get_by_text(re.compile(r"· stopped")).nth(1)).to_be_visible()
            page.get_by_text("Full results").click()
            page.wait_for_url(re.compile(r"/results\?run="))
            expect(page.get_by_text("Variants side by side")).to_be_visible()
            expect(page.get_by_text(re.compile(r"\(weights loaded\)")).first).to_be_visible()
            expect(
                page.get_by_text("Engine memory from its first second (MiB)").first
            ).to_be_visible()
            page.get_by_text("Variants side by side").scroll_into_view_if_needed()
            page.screenshot(path=str(RESULTS_SHOT))
        finally:
            browser.close()
    assert RESULTS_SHOT.stat().st_size > 20_000
    assert engine_processes_left() == []
