"""The retro card: one 1600×900 PNG that says what a run found, for a slide.

The card is an HTML page with fixed pixel sizes and an inline SVG chart (no
JavaScript, and a Content-Security-Policy that allows none), screenshotted by headless
Chromium through its command line: no Python browser driver needed at run time.
This module renders it to PNG; the page itself is card_body (what it says),
card_chart (its SVG chart) and card_template (size, CSS, skeleton). Where no Chromium
or Chrome exists, `RenderError` says so in one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

from lib.report.card_body import card_html
from lib.report.card_template import HEIGHT, WIDTH
from lib.report.facts import ConcurrencyError, load_view

__all__ = ["ConcurrencyError", "RenderError", "card_html", "png_bytes", "render_png", "write_png"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_ENV = "SERVESCOPE_CHROMIUM"
RENDER_TIMEOUT_S = 30.0  # one attempt; a render takes 1-3 s
RENDER_ATTEMPTS = 2


class RenderError(RuntimeError):
    """The PNG could not be made (no browser, or the browser failed); one-line message."""


def find_browser() -> str:
    """Path of a Chromium or Chrome: $SERVESCOPE_CHROMIUM, else the first on PATH."""
    chosen = os.environ.get(BROWSER_ENV)
    if chosen:
        if os.access(chosen, os.X_OK):
            return chosen
        raise RenderError(f"${BROWSER_ENV}={chosen} is not an executable browser")
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise RenderError(
        "cannot render the PNG: no Chromium or Chrome found (install one, e.g. "
        f"`apt-get install chromium`, or set ${BROWSER_ENV} to its path)"
    )


def render_png(page: str, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Screenshot an HTML page at exactly width×height with headless Chromium."""
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="servescope-card-") as tmp:
        src, out = Path(tmp) / "card.html", Path(tmp) / "card.png"
        src.write_text(page, encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # containers run as root, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={tmp}/profile",  # never share or lock the user's profile
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            src.as_uri(),
        ]
        for attempt in range(1, RENDER_ATTEMPTS + 1):
            # A profile per attempt: a killed browser leaves its profile locked.
            argv = [
                f"--user-data-dir={tmp}/profile-{attempt}"
                if a.startswith("--user-data-dir=")
                else a
                for a in cmd
            ]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its renderer and GPU children go with it on timeout
            )
            try:
                _, err = proc.communicate(timeout=RENDER_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                # Headless --screenshot now and then never exits (seen once in a few
                # hundred renders on a loaded 2-core machine): a fresh browser does.
                if attempt == RENDER_ATTEMPTS:
                    raise RenderError(
                        f"{browser} took over {RENDER_TIMEOUT_S:.0f} s to render, "
                        f"{RENDER_ATTEMPTS} times"
                    ) from None
        if not out.exists():
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else "no message"
            raise RenderError(f"{browser} made no PNG (exit {proc.returncode}): {why[:300]}")
        data = out.read_bytes()
    size = png_size(data)
    if size != (width, height):
        raise RenderError(f"{browser} made a {size[0]}×{size[1]} PNG, not {width}×{height}")
    return data


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; ValueError if it is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_bytes(
    db: str | os.PathLike[str] | None, run_id: str, concurrency: int | None = None
) -> bytes:
    """The run's 1600×900 card as PNG bytes, for `st.download_button(data=...)`.

    Raises results.RunNotFound, ConcurrencyError (level not in the run) or RenderError.
    """
    return render_png(card_html(load_view(db, run_id), concurrency))


def write_png(
    db: str | os.PathLike[str] | None,
    run_id: str,
    path: str | os.PathLike[str],
    concurrency: int | None = None,
) -> Path:
    """Write the card to `path`; returns the path."""
    out = Path(path)
    out.write_bytes(png_bytes(db, run_id, concurrency))
    return out
